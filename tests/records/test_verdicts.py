"""The verdict rows: one of three words, recorded per chapter, collected; the rule on ratios."""

import numpy as np
import pandas as pd
import pytest

from attnprune.records import verdicts
from attnprune.records.compare import against_best


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


@pytest.mark.parametrize(
    "multiples, expected",
    [
        ([4.2, 4.9], "holds"),  # within the limit at every timing of the yardstick
        ([5.0], "holds"),  # the limit itself is allowed
        ([4.6, 4.8, 5.3], "holds with caveats"),  # the median is within, one timing is not: noise
        ([4.8, 5.2], "holds with caveats"),  # the median of two is their mean: 5.0
        ([4.7, 5.5], "fails"),  # the median above the limit, though one timing is within it
        ([5.1, 5.6], "fails"),
    ],
)
def test_a_time_limit_holds_at_every_timing_of_the_yardstick(multiples, expected):
    assert verdicts.verdict_on_times(multiples, 5.0) == expected


@pytest.mark.parametrize(
    "on_median, on_each, caveat, expected",
    [
        (True, [True, True, True], False, "holds"),
        (True, [True, False, True], False, "holds with caveats"),  # one repeat misses: within the noise
        (True, [True, True], True, "holds with caveats"),  # the chapter's own caveat
        (False, [True, False, False], False, "fails"),  # not on the median, though on one repeat
        (False, [True, True], False, "fails"),
    ],
)
def test_a_claim_on_repeats_holds_on_the_median_and_on_every_repeat(on_median, on_each, caveat, expected):
    assert verdicts.verdict_on_repeats(on_median, on_each, caveat=caveat) == expected


def test_a_claim_on_repeats_needs_one_repeat():
    with pytest.raises(ValueError, match="on_each"):
        verdicts.verdict_on_repeats(True, [])


@pytest.mark.parametrize("multiples", [[], [4.0, float("nan")], [float("inf")]])
def test_a_time_verdict_needs_finite_multiples(multiples):
    with pytest.raises(ValueError, match="multiples"):
        verdicts.verdict_on_times(multiples, 5.0)


def test_other_profiles_are_the_sibling_results_folders_with_verdicts(tmp_path):
    book, full = tmp_path / "quick", tmp_path / "offline-full"
    verdicts.record(book, "07_x", [verdicts.Verdict("c", "07_x", "e", "holds")])
    assert verdicts.collect_other_profiles(book) == {}
    (tmp_path / "empty").mkdir()
    verdicts.record(full, "07_x", [verdicts.Verdict("c", "07_x", "big run", "fails")])
    others = verdicts.collect_other_profiles(book)
    assert list(others) == ["offline-full"]
    assert others["offline-full"]["evidence"].tolist() == ["big run"]


@pytest.mark.parametrize(
    "ratios, expected",
    [
        ([0.1, 0.5, 0.25], "holds"),  # every ratio at most 1/2: a large margin everywhere
        ([0.1, 0.5, 0.51], "holds with caveats"),  # beats everywhere, halves not everywhere
        ([0.9, 0.99], "holds with caveats"),
        ([0.1, 0.2, 1.0], "fails"),  # a tie with the best baseline is not beating it
        ([0.1, 3.0], "fails"),
        ([0.1, float("nan")], "fails"),  # a point that cannot be compared does not count as won
        (pd.Series([0.4, 0.3]), "holds"),
        (np.array([[0.4], [0.7]]), "holds with caveats"),
    ],
)
def test_the_rule_on_ratios(ratios, expected):
    assert verdicts.verdict_on_ratios(ratios) == expected


def test_the_rule_needs_a_point():
    with pytest.raises(ValueError, match="at least one"):
        verdicts.verdict_on_ratios([])


def test_the_rule_on_values_is_the_rule_on_their_ratios_where_the_baseline_is_positive():
    rng = np.random.default_rng(0)
    for _ in range(200):
        best = rng.uniform(0.1, 2.0, size=3)
        value = best * rng.choice([0.3, 0.5, 0.7, 1.0, 1.4], size=3)
        assert verdicts.verdict_on_ratios(value, best) == verdicts.verdict_on_ratios(value / best)


def test_the_rule_on_a_perplexity_increase_whose_best_baseline_costs_nothing():
    increase = pd.DataFrame({"text": [0.5, -0.2, -0.3], "news": [0.6, 0.2, 0.05]}, index=["Wanda", "SparseGPT", "ours"])
    ours = against_best(increase, "ours", ["Wanda", "SparseGPT"])
    # lower everywhere, but the best baseline's increase on "text" is negative: nothing to halve there
    assert verdicts.verdict_on_ratios(ours["value"], ours["best"]) == "holds with caveats"
    increase.loc["ours", "text"] = -0.1
    ours = against_best(increase, "ours", ["Wanda", "SparseGPT"])
    # ours gains less than SparseGPT on "text": it loses there, although the ratio -0.1 / -0.2 is 1/2
    assert ours.loc["text", "ratio"] == pytest.approx(0.5)
    assert verdicts.verdict_on_ratios(ours["value"], ours["best"]) == "fails"


def test_points_outside_the_scope_turn_holds_into_holds_with_caveats():
    assert verdicts.verdict_on_ratios([0.2, 0.4], outside=[0.3]) == "holds"
    assert verdicts.verdict_on_ratios([0.2, 0.4], outside=[0.3, 1.06]) == "holds with caveats"
    assert verdicts.verdict_on_ratios([0.2, 0.9], outside=[0.3]) == "holds with caveats"
    assert verdicts.verdict_on_ratios([0.2, 1.2], outside=[0.1]) == "fails"
