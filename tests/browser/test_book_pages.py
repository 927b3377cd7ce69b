"""The rendered book, page by page, in a real browser: Debian's Chromium (``/usr/bin/chromium``,
installed by ``scripts/setup.sh``) driven by Playwright, on ``_build/html`` served from 127.0.0.1.

Run by ``scripts/book.sh`` after the build (not by ``scripts/test.sh``: there may be no book yet):

    .venv/bin/python -m pytest tests/browser/test_book_pages.py -q

Each page is one test. It waits for MathJax to finish, then applies the checks of ``pagecheck``
(math typeset, images loaded and captioned, internal links and anchors, citations and
cross-references, no build path, no traceback) and also reports failed same-site requests,
requests to other sites (the book must work offline) and JavaScript errors. A full-page screenshot
of each page goes to ``_build/screenshots/<page>.png``, pass or fail.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pagecheck
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("ATTNPRUNE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 120_000  # one page: load, MathJax, images (the machine may be busy)
NOT_PAGES = {"genindex.html", "search.html", "py-modindex.html"}  # Sphinx's generated pages


def built_pages() -> list[str]:
    """Every page of the built book, as paths inside the site (``book/intro.html``): all .html
    files but Sphinx's generated ones and those under ``_static``, ``_sources``, ``_images``…"""
    if not SITE.is_dir():
        return []
    pages = []
    for path in SITE.rglob("*.html"):
        relative = path.relative_to(SITE)
        if relative.name in NOT_PAGES or any(part.startswith(("_", ".")) for part in relative.parts[:-1]):
            continue
        pages.append(relative.as_posix())
    return sorted(pages)


def toc_pages() -> list[str]:
    """The pages ``_toc.yml`` promises: the root and every chapter and section, as .html paths."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def entries(node: dict) -> None:
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                if "file" in child:
                    files.append(child["file"])
                entries(child)

    entries(toc)
    return [f"{Path(name).with_suffix('').as_posix()}.html" for name in files]


PAGES = built_pages()


def test_the_book_is_built_with_every_page_of_the_table_of_contents():
    assert PAGES, f"no built book in {SITE}: run scripts/book.sh first"
    missing = [page for page in ["index.html", *toc_pages()] if page not in PAGES]
    assert not missing, f"pages of _toc.yml missing from {SITE}: {missing}"


@functools.cache
def ids_for(path: str) -> frozenset[str] | None:
    """The anchor ids of a built file (None if there is no such file); non-HTML files have none."""
    file = (SITE / path).resolve()
    if not file.is_relative_to(SITE.resolve()) or not file.is_file():
        return None
    if file.suffix != ".html":
        return frozenset()
    return frozenset(pagecheck.page_ids(file.read_text(errors="replace")))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def site_url():
    """``_build/html`` served on 127.0.0.1, on a free port, from a thread."""
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Chromium (Debian's, never a downloaded one) with a fresh, empty profile."""
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("Playwright is missing: run scripts/setup.sh (it installs the [browser] extra)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
            service_workers="block",
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


WAIT_FOR_MATHJAX = """async () => {
  const math = document.querySelectorAll('.math, mjx-container').length;
  if (!window.MathJax) return {math, mathjax: false};
  if (MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  return {math, mathjax: true};
}"""

WAIT_FOR_IMAGES = """async () => {
  const images = Array.from(document.images);
  images.forEach(image => { image.loading = 'eager'; });
  await Promise.race([
    Promise.all(images.map(image => image.complete ? null
      : new Promise(done => { image.addEventListener('load', done); image.addEventListener('error', done); }))),
    new Promise(done => setTimeout(done, 30000)),
  ]);
  return images.map(image => ({src: image.currentSrc || image.src || '', complete: image.complete,
                               natural_width: image.naturalWidth}));
}"""


def rendered_problems(tab, site_url: str, page: str) -> list[str]:
    """Open one page, wait for MathJax and the images, and check it; network and JavaScript
    failures along the way are problems too."""
    host = urlsplit(site_url).netloc
    problems: list[str] = []
    errors: list[str] = []

    def outside(route):
        problems.append(f"[network] request to another site (the book must work offline): {route.request.url}")
        route.abort()

    def response(response):
        if response.status >= 400:
            problems.append(f"[network] HTTP {response.status}: {response.url.removeprefix(site_url)}")

    def failed(request):
        if urlsplit(request.url).netloc == host:
            problems.append(f"[network] failed ({request.failure}): {request.url.removeprefix(site_url)}")

    tab.route(lambda target: urlsplit(target).netloc != host and not target.startswith("data:"), outside)
    tab.on("response", response)
    tab.on("requestfailed", failed)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(site_url + page, wait_until="load")
    mathjax = tab.evaluate(WAIT_FOR_MATHJAX)
    if mathjax["math"] and not mathjax["mathjax"]:
        problems.append(f"[math] {mathjax['math']} math elements but MathJax did not load")
    images = [pagecheck.Image(**image) for image in tab.evaluate(WAIT_FOR_IMAGES)]
    found = pagecheck.check_page(tab.content(), page, ids_for, images, repo_root=str(ROOT))
    found += pagecheck.check_javascript(errors)
    return problems + [str(problem) for problem in found]


@pytest.mark.parametrize("page", PAGES or ["(no built book)"], ids=lambda page: page.removesuffix(".html"))
def test_page(page, site_url, browser):
    assert PAGES, f"no built book in {SITE}: run scripts/book.sh first"
    built_html = (SITE / page).read_text(errors="replace")
    redirect = pagecheck.redirect_target(built_html)
    tab = browser.new_page()
    try:
        if redirect:  # Jupyter Book's index.html: its target exists, and the browser lands there
            problems = [str(problem) for problem in pagecheck.check_links(built_html, page, ids_for)]
            if not problems:
                tab.goto(site_url + page)
                tab.wait_for_url(urljoin(site_url + page, redirect))
                tab.wait_for_load_state("load")
        else:
            problems = rendered_problems(tab, site_url, page)
        shot = SHOTS / f"{page.removesuffix('.html')}.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(shot), full_page=True)
    finally:
        tab.close()
    problems = list(dict.fromkeys(problems))
    if problems:
        pytest.fail(
            f"{page}: {len(problems)} problem(s)\n" + "\n".join(f"{page}: {p}" for p in problems), pytrace=False
        )
