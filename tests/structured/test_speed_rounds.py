"""The chapter's speed protocol (``attnprune.experiments.structured``): checkpoints timed in
interleaved rounds, each speedup against the dense model of its own round, medians and ranges over
the rounds. The measuring process itself is tested in ``tests/test_cli_speed.py``; here it is
replaced by a stand-in that records the order of the calls and returns set speeds."""

from __future__ import annotations

import pandas as pd
import pytest

from attnprune.experiments import structured
from attnprune.experiments.structured import measure_rounds, median_over_rounds, paired_speedups
from attnprune.llm.speed import SpeedReport


def _report(parameters: int, prefill: float, decode: float) -> SpeedReport:
    return SpeedReport(parameters, 10, 100, prefill, decode, 1, 8, 2, 1, 4, 50)


@pytest.fixture
def folders(tmp_path) -> dict[float, str]:
    """Three model folders (a config.json each, all :func:`check_folder` asks), ρ → folder."""
    out = {}
    for rho in (0.0, 0.25, 0.5):
        (tmp_path / f"rho-{rho:g}").mkdir()
        (tmp_path / f"rho-{rho:g}" / "config.json").write_text("{}")
        out[rho] = str(tmp_path / f"rho-{rho:g}")
    return out


def test_measure_rounds_interleaves_the_checkpoints(folders, monkeypatch):
    calls = []

    def fake(folder, **options):
        calls.append((folder, options))
        return _report(100, 1000.0, 20.0)

    monkeypatch.setattr(structured, "measure_checkpoint", fake)
    table = measure_rounds(folders, rounds=2, prompt_len=8, repeats=1)
    order = list(folders.values())
    assert [folder for folder, _ in calls] == order + order  # round 0: every checkpoint, then round 1
    assert all(options == {"prompt_len": 8, "repeats": 1} for _, options in calls)
    assert table[["round", "rho"]].values.tolist() == [[r, rho] for r in (0, 1) for rho in folders]
    assert set(SpeedReport.__dataclass_fields__) <= set(table.columns)


def test_measure_rounds_checks_every_folder_before_measuring(folders, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(structured, "measure_checkpoint", lambda folder, **_: calls.append(folder))
    with pytest.raises(FileNotFoundError, match="missing"):
        measure_rounds({**folders, 0.75: str(tmp_path / "missing")}, rounds=1)
    with pytest.raises(ValueError, match="rounds"):
        measure_rounds(folders, rounds=0)
    with pytest.raises(ValueError, match="folders"):
        measure_rounds({}, rounds=1)
    assert calls == []


def _table() -> pd.DataFrame:
    """Two rounds; the machine is twice as slow in round 1, for every checkpoint alike."""
    rows = [
        (0, 0.0, 100, 1000.0, 20.0),
        (0, 0.5, 60, 1600.0, 30.0),
        (1, 0.0, 100, 500.0, 10.0),
        (1, 0.5, 60, 800.0, 16.0),
    ]
    return pd.DataFrame(rows, columns=["round", "rho", "parameters", "prefill_tokens_per_s", "decode_tokens_per_s"])


def test_paired_speedups_divide_by_the_dense_model_of_the_same_round():
    paired = paired_speedups(_table())
    assert paired["prefill_speedup"].tolist() == [1.0, 1.6, 1.0, 1.6]  # the slow round cancels out
    assert paired["decode_speedup"].tolist() == [1.0, 1.5, 1.0, 1.6]


def test_paired_speedups_need_one_dense_row_per_round():
    table = _table()
    with pytest.raises(ValueError, match="dense"):
        paired_speedups(table[table.index != 2])  # round 1 has no dense row
    with pytest.raises(ValueError, match="dense"):
        paired_speedups(pd.concat([table, table.iloc[[0]]], ignore_index=True))  # round 0 has two


def test_median_over_rounds_gives_medians_and_the_decode_range():
    summary = median_over_rounds(paired_speedups(_table()))
    assert summary["rho"].tolist() == [0.0, 0.5]
    top = summary.iloc[1]
    assert top["decode_speedup"] == pytest.approx(1.55) and top["prefill_speedup"] == pytest.approx(1.6)
    assert (top["decode_low"], top["decode_high"], top["rounds"]) == (1.5, 1.6, 2)
    assert top["parameters"] == 60 and top["decode_tokens_per_s"] == pytest.approx(23.0)
