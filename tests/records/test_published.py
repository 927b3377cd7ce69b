"""Published results: the module closure, the library hash, atomic install, and what a chapter shows."""

from __future__ import annotations

import json

import pytest

from attnprune.records import published
from attnprune.records.verdicts import NOT_JUDGED, Verdict, collect, record


def test_library_modules_follow_imports_and_leave_out_render_only_modules():
    code = "from attnprune.core.solver import descend\nfrom attnprune.records.results import read_table\n"
    modules = published.library_modules(code)
    assert "attnprune.core.solver" in modules
    assert "attnprune.core.objective" in modules  # imported by the solver
    assert not any(m.startswith(("attnprune.records", "attnprune.notebooks")) for m in modules)
    assert "attnprune.llm.models" not in modules  # core imports nothing from llm


def test_relative_imports_are_resolved():
    modules = published.library_modules("import attnprune.llm.evaluate\n")
    assert {"attnprune.llm.batches", "attnprune.llm.capture", "attnprune.llm.prune"} <= set(modules)


def _publish(tmp_path, modules: dict[str, str]):
    source = tmp_path / "run" / "03_lipschitz"
    source.mkdir(parents=True, exist_ok=True)
    (source / "table.json").write_text("{}")
    provenance = {
        "command": "python -m attnprune.notebooks publish --profile full --only 03_lipschitz",
        "commit": "0123456789abcdef",
        "finished": "2026-11-30T23:00:00+00:00",
        "wall_seconds": 600,
        "machine": {"cpu": "a CPU", "cores": "2 cores"},
        "library": {"hash": published.library_hash(modules), "modules": modules},
    }
    target = tmp_path / "root" / "results" / "full" / "03_lipschitz"
    published.install(source, target, provenance)
    return target


def test_install_is_complete_and_replaces_the_previous_results(tmp_path):
    modules = published.module_hashes(["attnprune.core.solver"])
    target = _publish(tmp_path, modules)
    assert sorted(p.name for p in target.iterdir()) == ["PROVENANCE.json", "table.json"]
    (target / "old.json").write_text("{}")
    _publish(tmp_path, modules)
    assert not (target / "old.json").exists()
    assert [p.name for p in target.parent.iterdir()] == ["03_lipschitz"]  # no partial or previous folder left


def test_a_chapter_shows_published_results_and_flags_them_when_the_library_changed(tmp_path):
    fresh = published.module_hashes(["attnprune.core.solver", "attnprune.core.objective"])
    _publish(tmp_path, fresh)
    kwargs = {"running": "quick", "results_dir": tmp_path / "quick", "root": tmp_path / "root"}
    shown = published.show("03_lipschitz", "full", **kwargs)
    assert shown.folder == tmp_path / "root" / "results" / "full" / "03_lipschitz"
    assert not shown.smoke and shown.stale == ()
    assert "commit `0123456`" in shown.banner() and shown.source == "profile full, commit 0123456"

    _publish(tmp_path, {**fresh, "attnprune.core.objective": "an older digest"})
    stale = published.show("03_lipschitz", "full", **kwargs)
    assert stale.stale == ("attnprune.core.objective",)
    assert "Stale results" in stale.banner() and "attnprune.core.objective" in stale.banner()


def test_without_published_results_a_chapter_shows_its_smoke_test_and_judges_nothing(tmp_path):
    shown = published.show("03_lipschitz", "full", running="quick", results_dir=tmp_path / "quick", root=tmp_path)
    assert shown.smoke and shown.folder == tmp_path / "quick" / "03_lipschitz"
    assert "Smoke test" in shown.banner()
    record(tmp_path / "quick", "03_lipschitz", [Verdict("a claim", "03_lipschitz", "numbers", "holds")], shown)
    table = collect(tmp_path / "quick")
    assert table["verdict"].tolist() == [NOT_JUDGED]
    assert table["source"].tolist() == ["profile quick (smoke test)"]


def test_running_the_heavy_profile_shows_its_own_results(tmp_path):
    shown = published.show("03_lipschitz", "full", running="full", results_dir=tmp_path / "full", root=tmp_path)
    assert shown.folder == tmp_path / "full" / "03_lipschitz" and not shown.smoke


@pytest.mark.parametrize("folder", sorted((published.package_dir().parent / "results").glob("*/*")))
def test_every_published_folder_has_complete_provenance(folder):
    """The committed results: each folder says what made it, and its modules still exist."""
    provenance = json.loads((folder / published.PROVENANCE).read_text())
    for key in ("command", "profile", "parameters", "commit", "library", "versions", "machine", "wall_seconds"):
        assert key in provenance, f"{folder}: PROVENANCE.json lacks {key!r}"
    assert provenance["profile"] == folder.parent.name
    assert provenance["library"]["hash"] == published.library_hash(provenance["library"]["modules"])
    assert any(path.suffix == ".json" and path.name != published.PROVENANCE for path in folder.iterdir())


def test_judged_gives_the_verdicts_as_recorded(tmp_path):
    from attnprune.records.verdicts import SMOKE_EVIDENCE, judged

    verdict = Verdict("a claim", "03_lipschitz", "evidence", "fails")
    smoke = published.show("03_lipschitz", "full", running="quick", results_dir=tmp_path / "quick", root=tmp_path)
    assert [(v.verdict, v.evidence) for v in judged([verdict], smoke)] == [(NOT_JUDGED, SMOKE_EVIDENCE)]
    assert judged([verdict]) == [verdict]  # computed by the book build itself
