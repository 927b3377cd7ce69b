"""The sweep's tables: the gap closed is computed against the baselines of the same calibration data."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from attnprune.experiments.reconstruction import Setting, gap_table, sweep_settings
from attnprune.llm.refit import RefitConfig


def table(rows):
    return pd.DataFrame(rows, columns=["candidate", "rho", "data", "perplexity"])


def test_the_gap_is_closed_against_the_best_baseline_of_the_same_calibration_data():
    perplexity = table([
        ("dense", 0.0, "a", 10.0),
        ("wanda, N = 8", 0.5, "a", 14.0), ("sparsegpt, N = 8", 0.5, "a", 12.0), ("x + refit, N = 8", 0.5, "a", 11.0),
        ("wanda, N = 32", 0.5, "a", 20.0), ("sparsegpt, N = 32", 0.5, "a", 30.0), ("x + refit, N = 32", 0.5, "a", 15.0),
    ])  # fmt: skip
    small = gap_table(perplexity, suffix=", N = 8").set_index("candidate")
    large = gap_table(perplexity, suffix=", N = 32").set_index("candidate")
    assert sorted(small.index) == ["sparsegpt, N = 8", "wanda, N = 8", "x + refit, N = 8"]
    assert small.loc["x + refit, N = 8", "closed"] == pytest.approx(0.5)
    assert small.loc["x + refit, N = 8", "best_baseline"] == "sparsegpt, N = 8"
    assert small.loc["wanda, N = 8", "closed"] == pytest.approx(-1.0)
    assert large.loc["x + refit, N = 32", "closed"] == pytest.approx(0.5)
    assert large.loc["x + refit, N = 32", "best_baseline"] == "wanda, N = 32"


def test_no_gap_gives_no_fraction():
    perplexity = table([("dense", 0.0, "a", 10.0), ("wanda", 0.5, "a", 9.0), ("sparsegpt", 0.5, "a", 9.5)])
    assert math.isnan(gap_table(perplexity).set_index("candidate").loc["sparsegpt", "closed"])


def test_settings_are_the_baselines_the_recommended_refit_then_one_factor_at_a_time():
    settings = sweep_settings(["kl", "frobenius", "output"], ["wanda", "sparsegpt"], RefitConfig(steps=3), "sparsegpt")
    assert [s.label for s in settings] == [
        "wanda", "sparsegpt", "sparsegpt + refit (output)", "sparsegpt + refit (kl)", "sparsegpt + refit (frobenius)",
        "wanda + refit (output)",
    ]  # fmt: skip
    config = settings[-1].config(0.5, layers=[0])
    assert config.refit.objective == "output" and config.refit.steps == 3 and config.layers == (0,)
    assert Setting("wanda").config(0.5).refit is None
    with pytest.raises(ValueError, match="does not depend"):
        Setting("wanda", "kl", scope="qkvo").config(0.5)
