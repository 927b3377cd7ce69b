"""The chapter runner: chapters, profiles and their parameters."""

import pytest

from attnprune import notebooks


def test_every_chapter_is_in_the_table_of_contents():
    toc = (notebooks.ROOT / "_toc.yml").read_text()
    for chapter in notebooks.chapters():
        assert f"book/executed/{chapter.stem}" in toc, chapter.stem


def test_every_chapter_has_a_parameters_cell():
    for chapter in notebooks.chapters():
        text = chapter.read_text()
        assert ":tags: [parameters]" in text, chapter.stem
        assert 'profile = "quick"' in text and "results_dir = " in text, chapter.stem


def test_profiles_override_the_defaults_and_unknown_ones_are_refused():
    for path in (notebooks.NOTEBOOKS / "profiles").glob("*.yml"):
        chapter = notebooks.NOTEBOOKS / f"{path.stem}.md"
        assert chapter.exists(), f"profile file {path.name} has no chapter"
        assert notebooks.profile_parameters(chapter, "no-such-profile") == {}
    with pytest.raises(ValueError, match="profile"):
        notebooks.execute("no-such-profile")


def test_unknown_chapter_is_refused():
    with pytest.raises(ValueError, match="no chapter"):
        notebooks.execute("quick", only=["no_such_chapter"])
