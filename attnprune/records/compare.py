"""The comparison the book rests on: a candidate ("ours") against the best of a set of baselines.

Every value compared is a cost, lower is better (a relative attention error, a perplexity
increase). At each comparison point (a grid point, a layer and ρ, a text and ρ):

- the **best baseline** is the lowest value among the baselines there (:func:`best_of`);
- the **ratio** is the candidate's value over the best baseline's (:func:`ratio_to_best` for a
  long table, :func:`against_best` for a wide one);
- the candidate **beats** the baselines where its value is below the best one's (ratio < 1), and
  **halves** it where its value is at most half of it (ratio ≤ 1/2, what the book reads as the
  paper's "large margin"); :func:`beats`, :func:`halves`.

:func:`margin_summary` summarises a set of ratios (median, lowest, highest, fraction that beats,
fraction that halves); the verdict on a claim's set of points is
:func:`attnprune.records.verdicts.verdict_on_ratios`. pandas and numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

BEATS = 1.0  # a ratio below this: lower than every baseline
HALVES = 0.5  # a ratio at most this: at most half the best baseline's value, "a large margin"


def beats(value, best=1.0):
    """Elementwise: ``value < best``. With ratios (``best`` = 1): the candidate beats every baseline.

    Given the candidate's own values and the best baseline's, the same test without forming a ratio
    (needed where the best baseline's value can be 0 or negative, as a perplexity increase can).
    NaN never beats."""
    return np.less(value, best)


def halves(value, best=1.0):
    """Elementwise: ``value ≤ best / 2`` where ``best`` > 0 (a baseline at no cost cannot be
    halved). With ratios (``best`` = 1): ratio ≤ 1/2. NaN never halves."""
    return np.greater(best, 0) & np.less_equal(value, np.multiply(HALVES, best))


def best_of(frame: pd.DataFrame, value: str, by: Sequence[str], name: str = "label") -> pd.DataFrame:
    """Per group of ``by``: the row with the lowest ``value`` (the first one on a tie), as the
    columns ``by``, ``name`` and ``value``, in the order of the groups. Groups whose values are all
    NaN are left out."""
    by = list(by)
    rows = frame.dropna(subset=[value])
    picked = rows.loc[rows.groupby(by, sort=True)[value].idxmin(), [*by, name, value]]
    return picked.reset_index(drop=True)


def ratio_to_best(frame: pd.DataFrame, value: str, by: Sequence[str], is_baseline, name: str = "label") -> pd.DataFrame:
    """A long table (one row per method and point): the candidates' rows (those not
    ``is_baseline``, a boolean mask on ``frame``), each with the best baseline at its point (the
    groups of ``by``): ``best_baseline`` (its ``name``), ``baseline`` (its ``value``) and
    ``ratio`` = the candidate's ``value`` / ``baseline``. Candidates at a point without baselines
    are left out; the candidates keep their order and columns."""
    is_baseline = pd.Series(is_baseline, index=frame.index).astype(bool)
    best = best_of(frame[is_baseline], value, by, name)
    best = best.rename(columns={name: "best_baseline", value: "baseline"})
    table = frame[~is_baseline].merge(best, on=list(by), how="inner")
    table["ratio"] = table[value] / table["baseline"]
    return table


def against_best(table: pd.DataFrame, candidate, baselines: Sequence) -> pd.DataFrame:
    """A wide table (one row per method, one column per point): per column, the ``candidate``'s
    value (``value``), the lowest of the ``baselines``' rows (``best``), ``ratio`` = value / best,
    ``excess`` = value − best, and whether it ``beats`` and ``halves`` the best baseline there
    (decided on the values, so they hold where ``best`` ≤ 0 too)."""
    value = table.loc[candidate]
    best = table.loc[list(baselines)].min()
    out = pd.DataFrame({"value": value, "best": best, "ratio": value / best, "excess": value - best})
    out["beats"], out["halves"] = beats(value, best), halves(value, best)
    return out


def margin_summary(ratios: pd.DataFrame, by, column: str = "ratio") -> pd.DataFrame:
    """Per group of ``by``: the median, lowest and highest ratio, and the fraction of points where
    the candidate beats (ratio < 1) and halves (ratio ≤ 1/2) the best baseline."""
    return ratios.groupby(by, sort=True)[column].agg(
        median="median",
        lowest="min",
        highest="max",
        beats=lambda r: float(beats(r).mean()),
        halves=lambda r: float(halves(r).mean()),
    )
