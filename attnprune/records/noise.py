"""The noise of a comparison: a paired bootstrap over evaluation windows (or layers).

A perplexity over a few thousand tokens moves by a few tenths when the text changes, so a
difference between two pruned models means nothing without its uncertainty. The evaluation
windows are the units: :func:`attnprune.experiments.candidates.perplexity_table` keeps the summed
negative log-likelihood of every window, and here the windows are drawn with replacement
(``N_RESAMPLES`` times, seeded, so a rerun prints the same interval) and every perplexity is
recomputed on each draw. The draw is **paired**: the candidate, the best baseline and the dense
model are evaluated on the same resampled windows, so the text's own difficulty cancels.

For a candidate ("ours") against the best baseline at a point (a text and a ρ), with perplexities
p_ours, p_best and p_dense on one draw:

- ``difference`` = p_ours − p_best; ours **beats** the baselines beyond noise when the upper end
  of its 95% interval is below 0, and is **worse** beyond noise when the lower end is above 0;
- the **large margin** of the paper is ours' increase over dense at most half the best
  baseline's, p_ours − p_dense ≤ (p_best − p_dense)/2, together with beating it: both hold when
  max(p_ours − p_best, p_ours − (p_best + p_dense)/2) < 0, judged on the upper end of its
  interval (``margin``). Where the best baseline beats dense (p_best < p_dense), the second term
  is implied by the first, so the large margin is beating it: the rule still works there;
- ``closed`` = (p_best − p_ours) / (p_best − p_dense): the fraction of the best baseline's gap to
  dense that ours closes (undefined where the baseline has no gap).

numpy and pandas only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

N_RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
DENSE = "dense"


@dataclass(frozen=True)
class Interval:
    """A point estimate with the ends of its bootstrap interval at level ``LEVEL``."""

    estimate: float
    lo: float
    hi: float

    def text(self, digits: int = 2, signed: bool = True) -> str:
        """ "+0.42 [−0.10, +0.91]": the estimate and its 95% interval, rounded to ``digits``."""
        sign = "+" if signed else ""
        return f"{self.estimate:{sign}.{digits}f} [{self.lo:{sign}.{digits}f}, {self.hi:{sign}.{digits}f}]"


def resample(n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Indices of ``n_resamples`` draws of ``n`` units with replacement: (n_resamples, n)."""
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 units (evaluation windows or layers), got {n}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def interval(estimate: float, draws: np.ndarray, level: float = LEVEL) -> Interval:
    """The percentile interval of the bootstrap ``draws`` around ``estimate``."""
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(lo), float(hi))


def resampled_perplexity(window_nll: Sequence[float], tokens: int, draws: np.ndarray) -> np.ndarray:
    """exp(mean token NLL) on each draw of windows: ``window_nll`` (W,) summed NLL per window of
    ``tokens`` predicted tokens, ``draws`` (R, W) window indices → (R,) perplexities."""
    nll = np.asarray(window_nll, dtype=np.float64)
    return np.exp(nll[draws].sum(axis=1) / (draws.shape[1] * tokens))


def ratio_over_units(ours: Sequence[float], best: Sequence[float], n_resamples: int = N_RESAMPLES) -> Interval:
    """mean(ours) / mean(best) over paired units (layers, sequences), with its bootstrap interval."""
    ours, best = np.asarray(ours, dtype=np.float64), np.asarray(best, dtype=np.float64)
    if ours.shape != best.shape:
        raise ValueError(f"ours and best must be paired (same shape), got {ours.shape} and {best.shape}")
    draws = resample(ours.size, n_resamples)
    return interval(ours.mean() / best.mean(), ours[draws].mean(axis=1) / best[draws].mean(axis=1))


def _row(table: pd.DataFrame, candidate: str, data: str, rho: float | None = None) -> pd.Series:
    picked = table[(table["candidate"] == candidate) & (table["data"] == data)]
    if rho is not None:
        picked = picked[np.isclose(picked["rho"], rho)]
    if len(picked) != 1:
        raise ValueError(f"expected one perplexity row for {candidate!r} on {data!r} at ρ = {rho}, got {len(picked)}")
    return picked.iloc[0]


def perplexity_comparison(
    table: pd.DataFrame, candidate: str, baselines: Sequence[str], n_resamples: int = N_RESAMPLES
) -> pd.DataFrame:
    """``candidate`` against the best of ``baselines`` (lowest perplexity) at every text and ρ of
    ``table`` (rows of :func:`~attnprune.experiments.candidates.perplexity_table`, the dense
    model's included), with paired bootstrap intervals over the evaluation windows.

    Columns: data, rho, perplexity, best_baseline, baseline, dense, difference (an
    :class:`Interval` of p_ours − p_best), margin (the upper end of max(p_ours − p_best,
    p_ours − (p_best + p_dense)/2)), closed (point estimate), beats, halves, worse.
    """
    rows = []
    points = table.loc[table["candidate"] == candidate, ["data", "rho"]].drop_duplicates()
    for data, rho in points.itertuples(index=False):
        ours, dense = _row(table, candidate, data, rho), _row(table, DENSE, data)
        rivals = [_row(table, name, data, rho) for name in baselines]
        best = min(rivals, key=lambda row: row["perplexity"])
        units = {len(row["window_nll"]) for row in (ours, dense, best)}
        if len(units) != 1:
            raise ValueError(f"{data!r}, ρ = {rho}: the candidates were evaluated on different windows ({units})")
        draws = resample(units.pop(), n_resamples)
        p_ours, p_best, p_dense = (
            resampled_perplexity(row["window_nll"], row["window_tokens"], draws) for row in (ours, best, dense)
        )
        difference = interval(ours["perplexity"] - best["perplexity"], p_ours - p_best)
        margin = float(np.quantile(np.maximum(p_ours - p_best, p_ours - (p_best + p_dense) / 2), (1 + LEVEL) / 2))
        gap = best["perplexity"] - dense["perplexity"]
        rows.append(
            {
                "data": data,
                "rho": rho,
                "perplexity": ours["perplexity"],
                "best_baseline": best["candidate"],
                "baseline": best["perplexity"],
                "dense": dense["perplexity"],
                "difference": difference,
                "margin": margin,
                "closed": (best["perplexity"] - ours["perplexity"]) / gap if gap > 0 else float("nan"),
                "beats": difference.hi < 0,
                "halves": margin < 0,
                "worse": difference.lo > 0,
            }
        )
    return pd.DataFrame(rows)
