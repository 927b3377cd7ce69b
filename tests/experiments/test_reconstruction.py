"""The sweep's tables: the gap closed is computed against the baselines of the same calibration data."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from attnprune.experiments.reconstruction import (
    Setting,
    gap_table,
    multiples_of,
    sweep_settings,
    time_multiples,
)
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


def test_a_setting_with_its_own_dampening_says_so_in_its_label():
    damped = Setting("sparsegpt", damping=0.3)
    assert damped.label == "sparsegpt (λ = 0.3)" and damped.config(0.5).support_damping == 0.3
    assert Setting("sparsegpt").config(0.5).support_damping == 0.01  # SparseGPT alone: its published λ
    refitted = Setting("sparsegpt", "output", refit=RefitConfig(damping=0.1))
    assert refitted.label == "sparsegpt + refit (output)" and refitted.config(0.5).support_damping == 0.1


def test_times_are_multiples_of_sparsegpt_run_through_the_same_pipeline():
    timing = pd.DataFrame(
        [("sparsegpt", "refit", 0.5, 20.0), ("x + refit", "refit", 0.5, 80.0), ("x + refit", "refit", 0.7, 90.0),
         ("sparsegpt", "refit", 0.7, 30.0),
         ("sg, paper", "paper", 0.5, 18.0), ("ours", "paper", 0.5, 95.0), ("sg, paper", "paper", 0.5, 20.0),
         ("other", "elsewhere", 0.5, 1.0)],
        columns=["candidate", "pipeline", "rho", "seconds"],
    )  # fmt: skip
    times = time_multiples(timing, {"refit": "sparsegpt", "paper": "sg, paper"})
    assert times.tolist()[:7] == pytest.approx([1.0, 4.0, 3.0, 1.0, 18 / 19, 5.0, 20 / 19])
    assert math.isnan(times.iloc[7])  # no yardstick for its pipeline


def test_a_method_is_divided_by_each_timing_of_its_yardstick_at_the_same_rho():
    timing = pd.DataFrame(
        [("sg", 0.5, 20.0), ("ours", 0.5, 100.0), ("sg", 0.5, 25.0), ("ours", 0.7, 90.0), ("sg", 0.7, 30.0)],
        columns=["candidate", "rho", "seconds"],
    )
    pairs = multiples_of(timing, "ours", "sg")
    assert pairs["rho"].tolist() == [0.5, 0.5, 0.7]
    assert pairs["yardstick_seconds"].tolist() == [20.0, 25.0, 30.0]
    assert pairs["multiple"].tolist() == pytest.approx([5.0, 4.0, 3.0])
