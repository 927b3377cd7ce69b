"""Results files: atomic, with provenance."""

import os

import pandas as pd
import pytest

from attnprune.notebooks import ROOT
from attnprune.records import results


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = results.write_json(tmp_path / "sub" / "r.json", {"a": 1})
    assert results.read_json(path) == {"a": 1}
    assert os.listdir(path.parent) == ["r.json"]


def test_a_relative_path_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = results.write_json(os.path.join("out", "r.json"), {"a": 1})
    assert not path.is_absolute() and (tmp_path / "out" / "r.json").is_file()
    assert results.read_json("out/r.json") == {"a": 1}
    assert not (ROOT / "out" / "r.json").exists()


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


def test_a_table_names_its_columns_once_and_reads_back_exactly(tmp_path):
    rows = pd.DataFrame({"layer": [0, 1], "error": [0.1 / 3, 2.5e-9], "window_nll": [[1.0, 2.0], [3.0, 4.0]]})
    path = results.write_table(tmp_path / "t.json", rows, {"profile": "quick"})
    assert path.read_text().count('"error"') == 1
    back, meta = results.read_table(path)
    pd.testing.assert_frame_equal(back, rows)
    assert meta == {"profile": "quick"}
    empty, _ = results.read_table(results.write_table(tmp_path / "e.json", rows[:0], {}))
    assert list(empty.columns) == ["layer", "error", "window_nll"] and empty.empty
