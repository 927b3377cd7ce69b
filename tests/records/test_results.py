"""Results files: atomic, with provenance; verdict rows."""

import os

import pandas as pd
import pytest

from attnprune.records import results, verdicts


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = results.write_json(tmp_path / "sub" / "r.json", {"a": 1})
    assert results.read_json(path) == {"a": 1}
    assert os.listdir(path.parent) == ["r.json"]


def test_an_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = results.write_json(tmp_path / "r.json", {"old": True})

    def broken_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        results.write_json(path, {"new": True})
    monkeypatch.undo()
    assert results.read_json(path) == {"old": True}
    assert os.listdir(tmp_path) == ["r.json"]


def test_tables_round_trip_with_their_provenance(tmp_path):
    rows = pd.DataFrame({"method": ["ours", "wanda"], "error": [0.1, 0.2]})
    meta = results.provenance("quick", model="none", data="synthetic", seed=0)
    back, back_meta = results.read_table(results.write_table(tmp_path / "t.json", rows, meta))
    pd.testing.assert_frame_equal(back, rows)
    assert back_meta["profile"] == "quick" and back_meta["seed"] == 0
    assert set(back_meta["versions"]) >= {"python", "torch", "attnprune"}


def test_verdicts_are_recorded_and_collected_in_chapter_order(tmp_path):
    verdicts.record(tmp_path, "02_b", [verdicts.Verdict("c2", "02_b", "e2", "fails")])
    verdicts.record(tmp_path, "01_a", [verdicts.Verdict("c1", "01_a", "e1", "holds")])
    table = verdicts.collect(tmp_path)
    assert table["claim"].tolist() == ["c1", "c2"]


def test_verdicts_are_one_of_three_words():
    with pytest.raises(ValueError, match="verdict"):
        verdicts.Verdict("c", "ch", "e", "probably")
    assert verdicts.verdict_from(True) == "holds"
    assert verdicts.verdict_from(True, caveat=True) == "holds with caveats"
    assert verdicts.verdict_from(False, caveat=True) == "fails"


def test_other_profiles_are_the_sibling_results_folders_with_verdicts(tmp_path):
    book, full = tmp_path / "quick", tmp_path / "offline-full"
    verdicts.record(book, "07_x", [verdicts.Verdict("c", "07_x", "e", "holds")])
    assert verdicts.collect_other_profiles(book) == {}
    (tmp_path / "empty").mkdir()
    verdicts.record(full, "07_x", [verdicts.Verdict("c", "07_x", "big run", "fails")])
    others = verdicts.collect_other_profiles(book)
    assert list(others) == ["offline-full"]
    assert others["offline-full"]["evidence"].tolist() == ["big run"]
