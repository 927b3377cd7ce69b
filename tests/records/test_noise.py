"""The paired bootstrap over evaluation windows and the verdict rule on noisy comparisons."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from attnprune.records import noise
from attnprune.records.verdicts import verdict_on_points


def _rows(candidate: str, rho: float, data: str, nll: list[float], tokens: int = 100) -> dict:
    return {
        "candidate": candidate,
        "rho": rho,
        "data": data,
        "perplexity": math.exp(sum(nll) / (len(nll) * tokens)),
        "window_nll": nll,
        "window_tokens": tokens,
    }


def _table(ours_shift: float, baseline_shift: float, spread: float = 5.0, windows: int = 16) -> pd.DataFrame:
    """Windows of varying difficulty; every model pays a fixed NLL shift per window over dense."""
    base = list(300.0 + spread * np.sin(np.arange(windows)))
    rows = [_rows("dense", 0.0, "text", base)]
    rows.append(_rows("ours", 0.5, "text", [b + ours_shift for b in base]))
    rows.append(_rows("Wanda", 0.5, "text", [b + baseline_shift for b in base]))
    rows.append(_rows("SparseGPT", 0.5, "text", [b + baseline_shift + 3 for b in base]))
    return pd.DataFrame(rows)


def test_resampled_perplexity_of_all_windows_is_the_perplexity():
    nll = [310.0, 290.0, 305.0]
    everything = np.array([[0, 1, 2]])
    assert noise.resampled_perplexity(nll, 100, everything)[0] == pytest.approx(math.exp(sum(nll) / 300), rel=1e-12)


def test_resample_is_seeded_and_needs_two_units():
    assert np.array_equal(noise.resample(8, 50), noise.resample(8, 50))
    with pytest.raises(ValueError, match="at least 2 units"):
        noise.resample(1)


def test_a_clear_win_by_the_large_margin():
    out = noise.perplexity_comparison(_table(ours_shift=2.0, baseline_shift=20.0), "ours", ["Wanda", "SparseGPT"])
    row = out.iloc[0]
    assert row["best_baseline"] == "Wanda"
    assert row["beats"] and row["halves"] and not row["worse"]
    assert row["difference"].lo <= row["difference"].estimate <= row["difference"].hi < 0
    assert row["closed"] == pytest.approx((row["baseline"] - row["perplexity"]) / (row["baseline"] - row["dense"]))
    assert verdict_on_points(out["beats"], out["halves"]) == "holds"


def test_a_shift_within_the_noise_is_a_tie_not_a_win():
    """Paired windows cancel the text's difficulty; a difference made of noise alone does not."""
    table = _table(ours_shift=0.0, baseline_shift=0.0)
    jitter = 3.0 * np.where(np.arange(16) % 2, 1.0, -1.0)  # ± 3 nats per window, mean 0
    table.at[1, "window_nll"] = list(np.asarray(table.at[1, "window_nll"]) + jitter - 0.3)
    table.at[1, "perplexity"] = math.exp(sum(table.at[1, "window_nll"]) / 1600)
    row = noise.perplexity_comparison(table, "ours", ["Wanda"]).iloc[0]
    assert row["perplexity"] < row["baseline"]  # lower on the point estimate ...
    assert not row["beats"] and not row["worse"]  # ... but within noise
    assert verdict_on_points([row["beats"]], [row["halves"]]) == "fails"


def test_when_the_baseline_beats_dense_beating_it_is_the_large_margin():
    out = noise.perplexity_comparison(_table(ours_shift=-10.0, baseline_shift=-4.0), "ours", ["Wanda"])
    row = out.iloc[0]
    assert row["baseline"] < row["dense"] and row["beats"] and row["halves"]
    assert math.isnan(row["closed"])  # no gap to close
    assert verdict_on_points(out["beats"], out["halves"]) == "holds"


def test_a_win_without_the_margin_holds_with_caveats_and_a_loss_fails():
    caveat = noise.perplexity_comparison(_table(ours_shift=15.0, baseline_shift=20.0), "ours", ["Wanda"])
    assert caveat.iloc[0]["beats"] and not caveat.iloc[0]["halves"]
    assert verdict_on_points(caveat["beats"], caveat["halves"]) == "holds with caveats"
    loss = noise.perplexity_comparison(_table(ours_shift=25.0, baseline_shift=20.0), "ours", ["Wanda"])
    assert loss.iloc[0]["worse"] and verdict_on_points(loss["beats"], loss["halves"]) == "fails"


def test_windows_must_be_paired():
    table = _table(2.0, 20.0)
    table.at[1, "window_nll"] = table.at[1, "window_nll"][:-1]
    with pytest.raises(ValueError, match="different windows"):
        noise.perplexity_comparison(table, "ours", ["Wanda"])


def test_ratio_over_units():
    ours, best = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0])
    exact = noise.ratio_over_units(ours, best)
    assert exact.estimate == exact.lo == exact.hi == pytest.approx(0.5)
    noisy = noise.ratio_over_units([1.0, 3.0, 0.5, 2.0], [2.0, 2.0, 2.0, 2.0])
    assert noisy.lo < noisy.estimate < noisy.hi
    with pytest.raises(ValueError, match="paired"):
        noise.ratio_over_units([1.0, 2.0], [1.0])


def test_interval_text():
    assert noise.Interval(0.4211, -0.1, 0.912).text(2) == "+0.42 [-0.10, +0.91]"
    assert noise.Interval(1.02, 0.98, 1.07).text(2, signed=False) == "1.02 [0.98, 1.07]"


def test_verdict_on_points_needs_points():
    with pytest.raises(ValueError, match="at least one"):
        verdict_on_points([], [])
