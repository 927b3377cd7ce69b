"""Author-year labels for the bibliography list, so that it shows the keys the text cites.

The book cites with sphinxcontrib-bibtex's ``author_year`` reference style ("Liang et al.,
2025"), but the labels of the bibliography list come from the pybtex *formatting* style
(``bibtex_default_style``), whose default, ``alpha``, labels entries "[LLS+25]". This extension
registers, the way sphinxcontrib-bibtex documents for custom styles, a pybtex label style that
formats each entry with the author and year templates of the configured reference style, and a
formatting style ``author_year`` (pybtex's ``unsrt`` with those labels, sorted by author, year
and title) to select with ``bibtex_default_style: author_year`` in ``_config.yml``.
"""

from __future__ import annotations

from types import SimpleNamespace

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as AuthorYearTitleSorting
from sphinxcontrib.bibtex.plugin import find_plugin
from sphinxcontrib.bibtex.style.referencing import PersonStyle
from sphinxcontrib.bibtex.style.template import join, year

# the person style and separator of the reference style the book cites with (set at config time)
_citation = {"person": PersonStyle(), "sep": ", "}


class AuthorYearLabelStyle(BaseLabelStyle):
    """ "Author, year" as the reference style writes it in a parenthetical citation."""

    def format_labels(self, sorted_entries):
        person = _citation["person"]
        template = join(sep=_citation["sep"])[person.author_or_editor_or_title(full=False), year]
        style = SimpleNamespace(person=person)
        for entry in sorted_entries:
            yield template.format_data({"entry": entry, "style": style}).render_as("text")


class AuthorYearSorting(AuthorYearTitleSorting):
    """pybtex's author-year-title order, ignoring the braces that protect a corporate author
    ("{Meta AI}" sorts under M, not after Z)."""

    def person_key(self, person):
        return super().person_key(person).replace("{", "").replace("}", "")


class AuthorYearStyle(UnsrtStyle):
    """pybtex's ``unsrt`` entries, labelled and sorted by author and year."""

    default_label_style = "author_year"
    default_sorting_style = "author_year"


def _follow_reference_style(app, config) -> None:
    """Take the names and the separator from the configured parenthetical citation, if it has them."""
    try:
        style = find_plugin("sphinxcontrib.bibtex.style.referencing", config.bibtex_reference_style)()
    except ImportError:
        return
    parenthetical = getattr(style, "role_style", {}).get("p")
    if hasattr(parenthetical, "person"):
        _citation["person"] = parenthetical.person
        _citation["sep"] = getattr(parenthetical, "author_year_sep", ", ")


def setup(app):
    app.setup_extension("sphinxcontrib.bibtex")
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle)
    register_plugin("pybtex.style.sorting", "author_year", AuthorYearSorting)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    app.connect("config-inited", _follow_reference_style)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
