"""The comparison with the best baseline: ratio, beats, halves, summaries."""

import numpy as np
import pandas as pd
import pytest

from attnprune.records.compare import against_best, beats, best_of, halves, margin_summary, ratio_to_best


def test_beats_is_strictly_below_and_halves_is_at_most_half():
    ratios = np.array([0.25, 0.5, 0.51, 0.99, 1.0, 3.0, np.nan])
    assert beats(ratios).tolist() == [True, True, True, True, False, False, False]
    assert halves(ratios).tolist() == [True, True, False, False, False, False, False]


def test_on_values_beats_and_halves_are_the_tests_on_their_ratio_where_the_baseline_is_positive():
    value = np.array([0.2, 0.5, 0.7, 1.2, 0.3])
    best = np.array([1.0, 1.0, 1.0, 1.0, 0.6])
    assert beats(value, best).tolist() == beats(value / best).tolist()
    assert halves(value, best).tolist() == halves(value / best).tolist() == [True, True, False, False, True]


def test_a_baseline_at_no_cost_can_be_beaten_but_not_halved():
    """A perplexity increase can be 0 or negative: value ≤ best / 2 would then be weaker than value < best."""
    value = np.array([-0.4, -0.1, 0.0, -0.3])
    best = np.array([-0.2, -0.2, 0.0, 0.0])
    assert beats(value, best).tolist() == [True, False, False, True]
    assert not halves(value, best).any()


def test_best_of_picks_the_lowest_row_per_group_and_the_first_on_a_tie():
    frame = pd.DataFrame(
        {
            "rho": [0.5, 0.5, 0.5, 0.7, 0.7, 0.9],
            "label": ["a", "b", "c", "a", "b", "a"],
            "error": [0.3, 0.1, 0.1, 0.2, 0.4, np.nan],
        }
    )
    best = best_of(frame, "error", ["rho"])
    assert best.to_dict("list") == {"rho": [0.5, 0.7], "label": ["b", "a"], "error": [0.1, 0.2]}


@pytest.fixture
def long_table():
    """Two points (k), two baselines and two candidates; at k = 2 the best baseline changes."""
    return pd.DataFrame(
        {
            "k": [1, 1, 1, 1, 2, 2, 2, 2, 3],
            "label": ["ours A", "ours B", "wanda", "sparsegpt"] * 2 + ["ours A"],
            "error": [0.1, 0.5, 0.4, 0.2, 0.3, 0.9, 0.6, 0.8, 0.1],
        }
    ).assign(method=lambda t: t["label"].str.split().str[0])


def test_ratio_to_best_divides_each_candidate_by_the_lowest_baseline_at_its_point(long_table):
    table = ratio_to_best(long_table, "error", ["k"], long_table["method"] != "ours")
    assert table["label"].tolist() == ["ours A", "ours B", "ours A", "ours B"]  # k = 3 has no baseline
    assert table["best_baseline"].tolist() == ["sparsegpt", "sparsegpt", "wanda", "wanda"]
    assert table["baseline"].tolist() == [0.2, 0.2, 0.6, 0.6]
    np.testing.assert_allclose(table["ratio"], [0.5, 2.5, 0.5, 1.5])
    assert {"method", "error"} <= set(table.columns)


def test_margin_summary_counts_the_points_that_beat_and_halve(long_table):
    table = ratio_to_best(long_table, "error", ["k"], long_table["method"] != "ours")
    summary = margin_summary(table, "label")
    assert list(summary.columns) == ["median", "lowest", "highest", "beats", "halves"]
    assert summary.loc["ours A"].tolist() == pytest.approx([0.5, 0.5, 0.5, 1.0, 1.0])
    assert summary.loc["ours B"].tolist() == pytest.approx([2.0, 1.5, 2.5, 0.0, 0.0])
    mixed = pd.DataFrame({"g": ["x"] * 4, "ratio": [0.3, 0.5, 0.8, 1.0]})
    assert margin_summary(mixed, "g").loc["x", ["beats", "halves"]].tolist() == [0.75, 0.5]


def test_against_best_compares_a_row_with_the_lowest_baseline_row_per_column():
    table = pd.DataFrame(
        {("text", 0.3): [0.4, 0.2, 0.1], ("text", 0.7): [1.0, 2.0, 1.5], ("news", 0.3): [-0.1, 0.3, -0.3]},
        index=["Wanda", "SparseGPT", "ours"],
    )
    out = against_best(table, "ours", ["Wanda", "SparseGPT"])
    assert out["best"].tolist() == [0.2, 1.0, -0.1]
    assert out["ratio"].iloc[:2].tolist() == pytest.approx([0.5, 1.5])
    assert out["excess"].tolist() == pytest.approx([-0.1, 0.5, -0.2])
    assert out["beats"].tolist() == [True, False, True]
    assert out["halves"].tolist() == [True, False, False]  # a gain over a baseline that gains is not "half its cost"
    assert out["value"].tolist() == [0.1, 1.5, -0.3]
