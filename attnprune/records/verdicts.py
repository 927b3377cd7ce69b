"""The "Claims and verdicts" table: each chapter records the claims it checked.

A chapter computes its verdicts from its own numbers and calls :func:`record`; the verdict page
collects every chapter's file with :func:`collect`. No verdict is written by hand: a claim that
ours beats the baselines is judged by :func:`verdict_on_ratios` (the one rule on the comparison of
:mod:`attnprune.records.compare`), a claim on a measurement repeated for its noise (timings) by
:func:`verdict_on_repeats`, any other claim by :func:`verdict_from`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .compare import beats, halves
from .published import Shown
from .results import read_json, write_json

VERDICTS = ("holds", "holds with caveats", "fails")
NOT_JUDGED = "not judged (smoke test)"
SMOKE_EVIDENCE = "the chapter's heavy run is not published; its smoke-test numbers are not evidence"
THIS_BUILD = "computed by the book build"


@dataclass(frozen=True)
class Verdict:
    """One row: the paper's claim, the chapter that checks it, the evidence, the verdict."""

    claim: str
    chapter: str
    evidence: str
    verdict: str
    source: str = THIS_BUILD

    def __post_init__(self) -> None:
        if self.verdict not in (*VERDICTS, NOT_JUDGED):
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def judged(verdicts: list[Verdict], shown: Shown | None = None) -> list[Verdict]:
    """The verdicts as the book gives them: each names the results it was judged on (``shown``,
    from :func:`attnprune.records.published.show`; "stale" if they are), and a smoke test's numbers
    are never turned into a verdict nor given as evidence: their rows say "not judged" (a smoke
    test's timings also differ from run to run). Without ``shown``, the verdicts were computed by
    the book build itself and are returned as they are."""
    if shown is None:
        return list(verdicts)
    stale = " (stale)" if shown.stale else ""
    if shown.smoke:
        return [replace(v, verdict=NOT_JUDGED, evidence=SMOKE_EVIDENCE, source=shown.source) for v in verdicts]
    return [replace(v, source=shown.source + stale) for v in verdicts]


def record(results_dir: str | os.PathLike, chapter: str, verdicts: list[Verdict], shown: Shown | None = None) -> Path:
    """Write a chapter's verdicts, as :func:`judged` gives them, to
    ``<results_dir>/verdicts/<chapter>.json`` (atomically)."""
    rows = [asdict(verdict) for verdict in judged(verdicts, shown)]
    return write_json(Path(results_dir) / "verdicts" / f"{chapter}.json", {"verdicts": rows})


def collect(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Every recorded verdict, in chapter order."""
    files = sorted((Path(results_dir) / "verdicts").glob("*.json"))
    rows = [row for path in files for row in read_json(path)["verdicts"]]
    return pd.DataFrame(rows, columns=["claim", "chapter", "evidence", "verdict", "source"])


def collect_other_profiles(results_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The verdicts recorded by the *other* profiles next to ``results_dir`` (its sibling folders
    ``_build/results/<profile>``), profile → table; empty where no other profile has been run."""
    here = Path(results_dir)
    siblings = sorted(p for p in here.parent.iterdir() if p.is_dir() and p != here) if here.parent.exists() else []
    tables = {p.name: collect(p) for p in siblings if (p / "verdicts").is_dir()}
    return {name: table for name, table in tables.items() if len(table)}


def verdict_from(holds: bool, caveat: bool = False) -> str:
    """ "holds", "holds with caveats" or "fails" from two booleans computed by the chapter, for a
    claim that is not a comparison with the baselines (those are judged by :func:`verdict_on_ratios`)."""
    if not holds:
        return "fails"
    return "holds with caveats" if caveat else "holds"


def verdict_on_repeats(on_median: bool, on_each, caveat: bool = False) -> str:
    """The book's one rule for a claim on a noisy measurement taken more than once (timings, or
    rounds of timings), given whether the claim holds on the median of the repeats and on each:

    - "holds" when it holds on the median and on every repeat;
    - "holds with caveats" when it holds on the median but not on every repeat (the margin is
      within the noise of the measurement), or when ``caveat`` (another reason the chapter states);
    - "fails" when it does not hold on the median.
    """
    on_each = np.asarray(on_each, dtype=bool)
    if on_each.size == 0:
        raise ValueError("on_each must say, for at least one repeat, whether the claim holds on it")
    return verdict_from(bool(on_median), caveat=caveat or not bool(on_each.all()))


def verdict_on_times(multiples, limit: float) -> str:
    """The rule for "costs at most ``limit`` times the yardstick's wall time", given the cost as a
    multiple of each timing of the yardstick (the same work timed more than once, for its noise):
    :func:`verdict_on_repeats` on "the multiple is at most ``limit``", so "holds" when every
    multiple is, "holds with caveats" when their median is but not every one, "fails" when their
    median is above ``limit``."""
    multiples = np.asarray(multiples, dtype=float)
    if multiples.size == 0 or not np.all(np.isfinite(multiples)):
        raise ValueError(f"multiples must be finite time ratios, at least one, got {multiples.tolist()}")
    return verdict_on_repeats(bool(np.median(multiples) <= limit), multiples <= limit)


def verdict_on_points(beats, halves) -> str:
    """The book's one rule for "ours beats the best baseline by a large margin", given, at each
    point a claim covers (the chapter states which), whether ours beats the best baseline and
    whether it does so by the large margin, each beyond noise where the values are noisy:

    - "holds" when ours wins by the large margin at every point;
    - "holds with caveats" when it beats the best baseline at every point, but not by that
      margin at all of them;
    - "fails" when at some point it does not beat it (a tie within noise included).
    """
    beats, halves = np.asarray(beats, dtype=bool), np.asarray(halves, dtype=bool)
    if beats.size == 0:
        raise ValueError("a verdict needs at least one comparison point")
    if np.all(halves & beats):
        return "holds"
    return "holds with caveats" if np.all(beats) else "fails"


def verdict_on_ratios(ratios, best=1.0, *, outside=None) -> str:
    """:func:`verdict_on_points` on exact ratios (ours / the best baseline, as
    :mod:`~attnprune.records.compare` computes them): ours beats where the ratio is below 1 and
    wins by the paper's "large margin" where it is at most 1/2. Where the best baseline's value
    may be 0 or negative, so that no ratio can be formed, pass ours' values as ``ratios`` and the
    best baseline's as ``best``: the same rule on the values (beats: ours < best; halves: ours ≤
    best / 2, best > 0). Noisy values (perplexities) are compared by
    :func:`attnprune.records.noise.perplexity_comparison`, whose ``beats`` and ``halves`` go to
    :func:`verdict_on_points` directly.

    ``outside``: the ratios at the points a chapter leaves out of the claim's scope (for instance
    the ends of a sweep where the paper's picture does not hold). A claim that holds on its scope
    but not by the large margin outside it "holds with caveats": the scope is not allowed to hide
    the points where ours loses.
    """
    if np.size(ratios) == 0:
        raise ValueError("a verdict on ratios needs at least one comparison point")
    verdict = verdict_on_points(beats(ratios, best), halves(ratios, best))
    if verdict == "holds" and outside is not None and not np.all(halves(outside)):
        return "holds with caveats"
    return verdict
