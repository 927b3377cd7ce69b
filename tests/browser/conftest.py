"""The browser test of the built book runs only when named (``scripts/book.sh`` does, after the
build): ``pytest tests`` and ``scripts/test.sh`` collect the unit tests of its checks
(``test_pagecheck_units.py``) but not the pages, which need a built book and Chromium."""

collect_ignore = ["test_book_pages.py"]
