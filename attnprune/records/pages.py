"""Tables for the book's pages: one look for every chapter.

A chapter shows a table as HTML (pandas' ``Styler``): no index unless asked, right-aligned numbers
with the first column left-aligned, "–" for a missing value, and a fixed id (``set_uuid``) so that
a rerun of the chapter writes the same output.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from pandas.io.formats.style import Styler

TABLE_STYLE = [
    {"selector": "th, td", "props": "padding: 0.2em 0.8em; text-align: right;"},
    {"selector": "th:first-child, td:first-child", "props": "text-align: left;"},
]


def html_table(frame: pd.DataFrame, name: str, *, index: bool = False, **formats: str | Callable) -> Styler:
    """``frame`` as a page table with the id ``name``; ``formats`` maps a column to its format
    string (``"{:.2f}"``) or function; ``index=True`` keeps the index (a table whose rows are named by it)."""
    styled = frame.style.format(formats or None, na_rep="–").set_uuid(name)
    if not index:
        styled = styled.hide(axis="index")
    return styled.set_table_attributes('class="dataframe"').set_table_styles(TABLE_STYLE)
