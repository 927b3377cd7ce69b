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


def test_publish_refuses_the_smoke_test_profile_and_unknown_profiles(capsys):
    with pytest.raises(ValueError, match="smoke test"):
        notebooks.publish("quick", ["03_lipschitz"])
    with pytest.raises(SystemExit):
        notebooks.main(["publish", "--profile", "fulll"])
    assert "--profile must be one of" in capsys.readouterr().err


def test_chapter_code_holds_the_code_cells_only():
    code = notebooks.chapter_code(notebooks.NOTEBOOKS / "03_lipschitz.md")
    assert "from attnprune" in code and ":tags:" not in code and "{prf:theorem}" not in code
    compile(code, "03_lipschitz", "exec")  # valid Python: the library closure is read from it


def test_every_chapter_with_a_heavy_profile_shows_its_published_results():
    """A chapter that has a heavy profile reads the tables it shows through records.published.show."""
    for chapter in notebooks.chapters():
        heavy = [p for p in ("full", "offline-full") if notebooks.profile_parameters(chapter, p)]
        if heavy:
            code = notebooks.chapter_code(chapter)
            assert f'show("{chapter.stem}", "{heavy[0]}"' in code, f"{chapter.stem} does not show {heavy[0]}"
