"""Checks of one rendered page of the book, as pure functions of its HTML (and of what the browser
measured): each returns a list of problems, an empty list when the page is clean.

``tests/browser/test_book_pages.py`` feeds them the DOM of every page of ``_build/html`` after
MathJax has typeset it; ``tests/browser/test_pagecheck_units.py`` feeds them small snippets, so each
check is seen to fail. No browser is needed here: only BeautifulSoup.

The rules, in short:

* math: MathJax errors (``mjx-merror``, ``merror`` nodes, ``data-mjx-error``), "Math input error",
  "Undefined control sequence", undefined equation references (``???``), and raw TeX (``$$``,
  ``\\(``, ``\\[``, ``\\begin{``, ``$…\\cmd…$``, a bare ``\\cmd``) left in the visible text outside code;
* images: every ``<img>`` loaded (complete, naturalWidth > 0); every ``<figure>`` has a caption;
* links: every same-site ``href`` (and a redirect's target) names a built file, and its ``#anchor``
  an ``id`` on the target page;
* cross-references: no Sphinx ``problematic`` span or system message, no ``??``, no role text
  (``{cite}``, ``{eq}``, ``{ref}``…) left unresolved;
* build paths: no ``/work/``, ``/tmp/``, ``/root/``, ``PosixPath(``, ``site-packages`` or the
  repository's absolute path anywhere in the visible text (prose, code, outputs); ``_build/`` in
  prose and in cell outputs, but not in code (a chapter's parameter cell, or an inline literal
  that tells the reader where results land);
* tracebacks: no ``Traceback (most recent call last)``, no error output block, no
  ``SomethingError:`` line in a cell output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

from bs4 import BeautifulSoup, Comment, NavigableString, Tag

SNIPPET = 50  # characters of context either side of an offending match

# Not rendered, or not text: their content is never "visible text".
INVISIBLE = {"script", "style", "noscript", "template", "head", "title", "meta", "link", "svg", "iframe"}
# Code: raw TeX and ``_build/`` are allowed here.
CODE_TAGS = {"pre", "code", "kbd", "samp", "tt", "textarea"}
CODE_CLASSES = {"highlight", "cell_input", "literal-block"}
OUTPUT_CLASSES = {"cell_output", "output"}
BLOCK_TAGS = {
    "p", "div", "section", "article", "aside", "nav", "header", "footer", "main", "li", "ul", "ol",
    "dl", "dt", "dd", "table", "thead", "tbody", "tr", "td", "th", "caption", "figure", "figcaption",
    "blockquote", "pre", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "details", "summary", "form",
}  # fmt: skip

RAW_TEX = [
    (re.compile(r"\$\$"), "display-math delimiter $$"),
    (re.compile(r"\\[()\[\]]"), "math delimiter \\( \\) \\[ \\]"),
    (re.compile(r"\\(?:begin|end)\{"), "TeX environment"),
    (re.compile(r"\$[^$\n]{0,200}?\\[A-Za-z]+[^$\n]{0,200}?\$"), "inline math $…$ not typeset"),
    (re.compile(r"\\[A-Za-z]{2,}"), "TeX command"),
]
MATH_ERRORS = [re.compile(r"Math input error"), re.compile(r"Undefined control sequence")]  # MathJax's words
UNRESOLVED_ROLE = re.compile(
    r"\{(?:cite(?::[a-z]+)?|eq|ref|numref|doc|prf:ref|math|term|download|footcite(?::[a-z]+)?)\}`?"
)
ALWAYS_BUILD_PATHS = ["/work/", "/tmp/", "/root/", "PosixPath(", "WindowsPath(", "site-packages"]
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception)(?::|$)", re.M)  # ValueError: …
TRACEBACK_CLASSES = {"traceback", "output_error", "error"}


@dataclass(frozen=True)
class Problem:
    """One finding: which check, and the offending snippet."""

    check: str
    snippet: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.snippet}"


@dataclass(frozen=True)
class Image:
    """One ``<img>`` as the browser saw it."""

    src: str
    complete: bool
    natural_width: int


@dataclass
class Text:
    """The visible text of a page, split by where it stands."""

    prose: str  # outside code and outputs
    code: str  # code cells and inline literals, outside outputs
    output: str  # cell outputs (code or not)
    output_prose: str  # the part of the outputs that is not code (rendered Markdown, HTML tables)

    @property
    def everything(self) -> str:
        return "\n".join(part for part in (self.prose, self.code, self.output) if part)


def soup_of(html: str | BeautifulSoup) -> BeautifulSoup:
    return html if isinstance(html, BeautifulSoup) else BeautifulSoup(html, "html.parser")


def _classes(tag: Tag) -> set[str]:
    value = tag.get("class") or []
    return set(value.split() if isinstance(value, str) else value)


def _hidden(tag: Tag) -> bool:
    if tag.name in INVISIBLE or tag.name.startswith("mjx-"):
        return True  # typeset math (mjx-container, its assistive MathML) is checked on its own
    if tag.has_attr("hidden") or (tag.name == "dialog" and not tag.has_attr("open")):
        return True
    style = re.sub(r"\s+", "", str(tag.get("style", ""))).lower()
    return "display:none" in style or "visibility:hidden" in style


def visible_text(html: str | BeautifulSoup) -> Text:
    """The text a reader sees, in document order, block elements on their own lines."""
    soup = soup_of(html)
    parts: dict[str, list[str]] = {"prose": [], "code": [], "output": [], "output_prose": []}

    def walk(node: Tag, in_code: bool, in_output: bool) -> None:
        for child in node.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                text = str(child)
                if in_output:
                    parts["output"].append(text)
                    parts["output_prose"].append("" if in_code else text)
                else:
                    parts["code" if in_code else "prose"].append(text)
                continue
            if not isinstance(child, Tag) or _hidden(child):
                continue
            classes = _classes(child)
            code = in_code or child.name in CODE_TAGS or bool(classes & CODE_CLASSES)
            output = in_output or bool(classes & OUTPUT_CLASSES)
            block = "\n" if child.name in BLOCK_TAGS else ""
            for key in parts:
                parts[key].append(block)
            walk(child, code, output)
            for key in parts:
                parts[key].append(block)

    walk(soup.body or soup, False, False)

    def tidy(pieces: list[str]) -> str:
        lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(pieces).split("\n"))
        return "\n".join(line for line in lines if line)

    return Text(**{key: tidy(pieces) for key, pieces in parts.items()})


def _snippet(text: str, start: int, end: int) -> str:
    """The match with up to SNIPPET characters of its line either side."""
    line_start, line_end = text.rfind("\n", 0, start) + 1, text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    left, right = max(line_start, start - SNIPPET), min(line_end, end + SNIPPET)
    return f"{'…' if left > line_start else ''}{text[left:right]}{'…' if right < line_end else ''}"


def _find(check: str, text: str, pattern: re.Pattern[str], what: str = "") -> list[Problem]:
    found = []
    for match in pattern.finditer(text):
        label = f"{what}: " if what else ""
        found.append(Problem(check, f"{label}{match.group(0)!r} in “{_snippet(text, match.start(), match.end())}”"))
    return found


def _glyphs(node: Tag) -> str:
    """The characters MathJax's SVG output draws (each glyph is a ``<use data-c="hex">``)."""
    chars = []
    for use in node.find_all(attrs={"data-c": True}):
        try:
            chars.append(chr(int(str(use["data-c"]), 16)))
        except ValueError:
            continue
    return "".join(chars)


def check_math(html: str | BeautifulSoup, text: Text | None = None) -> list[Problem]:
    """MathJax errors, undefined macros (drawn in red by MathJax's ``noundefined``), undefined
    equation references (``???``) and raw TeX left in the visible text outside code."""
    soup = soup_of(html)
    text = text or visible_text(soup)
    problems = []
    errors = soup.find_all(attrs={"data-mjx-error": True}) + soup.find_all(["mjx-merror", "merror"])
    for node in errors + soup.find_all(attrs={"data-mml-node": "merror"}):
        message = node.get("data-mjx-error") or node.get("title") or node.get_text(" ", strip=True) or _glyphs(node)
        problems.append(Problem("math", f"MathJax error: {message}"))
    red = soup.find_all("mtext", attrs={"mathcolor": "red"})
    for node in red + soup.find_all(attrs={"data-mml-node": "mtext", "fill": "red"}):
        problems.append(Problem("math", f"undefined TeX macro: {node.get_text(strip=True) or _glyphs(node)}"))
    for container in soup.find_all("mjx-container"):
        assistive = container.find("mjx-assistive-mml")
        shown = (assistive.get_text(" ", strip=True) if assistive else "") + " " + _glyphs(container)
        if "???" in shown:
            problems.append(Problem("math", f"undefined equation reference (???) in {shown.strip()[:120]!r}"))
    readable = text.prose + "\n" + text.output_prose
    for pattern in MATH_ERRORS:
        problems += _find("math", readable, pattern, "MathJax error text")
    for line in readable.splitlines():
        hits = [
            (m.start(), -len(m.group(0)), m.group(0), what) for pattern, what in RAW_TEX for m in pattern.finditer(line)
        ]
        if hits:
            start, _, first, _ = min(hits)  # the first match on the line, the longest of those
            kinds = ", ".join(dict.fromkeys(what for *_, what in hits))
            problems.append(
                Problem("math", f"raw TeX ({kinds}): {first!r} in “{_snippet(line, start, start + len(first))}”")
            )
    return _unique(problems)


def check_images(images: Iterable[Image]) -> list[Problem]:
    """Every image loaded."""
    problems = []
    for image in images:
        if not image.complete or image.natural_width <= 0:
            state = "not finished loading" if not image.complete else "loaded empty or broken (naturalWidth 0)"
            src = image.src if len(image.src) <= 120 else image.src[:117] + "…"
            problems.append(Problem("image", f"{state}: {src}"))
    return problems


def check_figures(html: str | BeautifulSoup) -> list[Problem]:
    """Every ``<figure>`` (and Sphinx's older ``div.figure``) has a non-empty caption."""
    soup = soup_of(html)
    problems = []
    for figure in soup.find_all("figure") + soup.find_all("div", class_="figure"):
        caption = figure.find("figcaption") or figure.find(class_="caption")
        if caption is None or not caption.get_text(strip=True):
            image = figure.find("img")
            what = (image.get("src") or "")[:120] if image else str(figure)[:120]
            ident = figure.get("id") or ""
            problems.append(Problem("figure", f"figure {ident + ' ' if ident else ''}has no caption: {what}"))
    return problems


def _fragment_ids(soup: BeautifulSoup) -> set[str]:
    ids = {str(tag["id"]) for tag in soup.find_all(attrs={"id": True})}
    return ids | {str(tag["name"]) for tag in soup.find_all("a", attrs={"name": True})}


def page_ids(html: str | BeautifulSoup) -> set[str]:
    """The ids a ``#fragment`` can point at on this page."""
    return _fragment_ids(soup_of(html))


def redirect_target(html: str | BeautifulSoup) -> str | None:
    """The URL of a ``<meta http-equiv="refresh">`` redirect (Jupyter Book's ``index.html``)."""
    for meta in soup_of(html).find_all("meta"):
        if str(meta.get("http-equiv", "")).lower() == "refresh":
            match = re.search(r"url\s*=\s*['\"]?([^'\"\s>]+)", str(meta.get("content", "")), re.I)
            if match:
                return match.group(1)
    return None


SITE = "http://book.invalid/"


def check_links(html: str | BeautifulSoup, page: str, ids_for: Callable[[str], set[str] | None]) -> list[Problem]:
    """Every same-site link resolves. ``page`` is the page's path inside the site (``book/intro.html``);
    ``ids_for(path)`` gives the ids of the built file at ``path`` (relative to the site), or None
    if there is no such file."""
    soup = soup_of(html)
    hrefs = [str(a["href"]) for a in soup.find_all("a", href=True)]
    redirect = redirect_target(soup)
    if redirect:
        hrefs.append(redirect)
    problems = []
    for href in dict.fromkeys(hrefs):
        if href.startswith(("mailto:", "javascript:", "data:", "tel:")) or href in ("", "#"):
            continue
        url = urlsplit(urljoin(SITE + page, href))
        if f"{url.scheme}://{url.netloc}/" != SITE:
            continue  # another site
        target = unquote(url.path).lstrip("/") or "index.html"
        ids = ids_for(target)
        if ids is None and not target.endswith(".html"):
            folder_index = str(PurePosixPath(target) / "index.html")
            ids = ids_for(folder_index)
            target = folder_index if ids is not None else target
        if ids is None:
            problems.append(Problem("link", f"link to a missing file: href={href!r} (→ {target})"))
        elif url.fragment and unquote(url.fragment) not in ids:
            problems.append(Problem("link", f"anchor #{unquote(url.fragment)} not on {target}: href={href!r}"))
    return problems


def check_xrefs(html: str | BeautifulSoup, text: Text | None = None) -> list[Problem]:
    """Citations and cross-references resolved: no ``problematic`` span, no system message, no
    ``??`` and no MyST role text left over."""
    soup = soup_of(html)
    text = text or visible_text(soup)
    problems = []
    for node in soup.find_all(class_="problematic"):
        problems.append(Problem("xref", f"unresolved reference (problematic): {node.get_text(' ', strip=True)!r}"))
    for node in soup.find_all(class_="system-message"):
        problems.append(Problem("xref", f"Sphinx system message: {node.get_text(' ', strip=True)[:200]!r}"))
    readable = text.prose + "\n" + text.output_prose
    problems += _find("xref", readable, re.compile(r"\?\?+"), "unresolved reference")
    problems += _find("xref", readable, UNRESOLVED_ROLE, "unresolved role")
    return _unique(problems)


def check_build_paths(text: Text, repo_root: str | None = None) -> list[Problem]:
    """No build or machine path in the visible text: one problem per offending line, naming
    every path marker found on it."""
    needles = list(ALWAYS_BUILD_PATHS)
    if repo_root and repo_root.rstrip("/") not in ("", "/"):
        needles.append(repo_root.rstrip("/"))
    problems = []
    for part, build_dir_too in ((text.prose, True), (text.code, False), (text.output, True)):
        for line in part.splitlines():
            found = [needle for needle in dict.fromkeys(needles) if needle in line]
            found += ["_build/"] if build_dir_too and "_build/" in line else []
            if found:
                spans = [(line.index(needle), line.index(needle) + len(needle)) for needle in found]
                where = _snippet(line, min(start for start, _ in spans), max(end for _, end in spans))
                markers = ", ".join(repr(needle) for needle in found)
                problems.append(Problem("build-path", f"{markers} in “{where}”"))
    return _unique(problems)


def check_tracebacks(html: str | BeautifulSoup, text: Text | None = None) -> list[Problem]:
    """No Python traceback or error output."""
    soup = soup_of(html)
    text = text or visible_text(soup)
    problems = _find("traceback", text.everything, TRACEBACK)
    for node in soup.find_all(class_=lambda c: bool(c) and c in TRACEBACK_CLASSES):
        if node.find_parent(class_="cell_output") is not None or "output" in _classes(node):
            body = node.get_text(" ", strip=True)
            problems.append(Problem("traceback", f"error output block: {body[:200]!r}"))
    problems += _find("traceback", text.output, ERROR_LINE, "error line in a cell output")
    return _unique(problems)


# JavaScript errors of the toolchain itself, not of the book: sphinx-thebe 0.3.1 under Jupyter Book 1.x
# writes its inline configuration script twice into every page, so the second ``const`` throws.
# Harmless (the first one ran; the book does not use Thebe).
HARMLESS_JS_ERRORS = [re.compile(r"Identifier 'THEBE_JS_URL' has already been declared")]


def check_javascript(errors: Iterable[str]) -> list[Problem]:
    """Uncaught JavaScript errors on the page, but the toolchain's known harmless one."""
    return [
        Problem("javascript", error)
        for error in errors
        if not any(pattern.search(error) for pattern in HARMLESS_JS_ERRORS)
    ]


def check_page(
    html: str,
    page: str,
    ids_for: Callable[[str], set[str] | None],
    images: Iterable[Image] = (),
    repo_root: str | None = None,
) -> list[Problem]:
    """Every check of one page (its DOM after MathJax), in one list."""
    soup = soup_of(html)
    text = visible_text(soup)
    return [
        *check_math(soup, text),
        *check_images(images),
        *check_figures(soup),
        *check_links(soup, page, ids_for),
        *check_xrefs(soup, text),
        *check_build_paths(text, repo_root),
        *check_tracebacks(soup, text),
    ]


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
