"""The "Claims and verdicts" table: each chapter records the claims it checked.

A chapter computes its verdicts from its own numbers and calls :func:`record`; the verdict page
collects every chapter's file with :func:`collect`. No verdict is written by hand: a claim that
ours beats the baselines is judged by :func:`verdict_on_ratios` (the one rule on the comparison of
:mod:`attnprune.records.compare`), any other claim by :func:`verdict_from`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .compare import beats, halves
from .results import read_json, write_json

VERDICTS = ("holds", "holds with caveats", "fails")


@dataclass(frozen=True)
class Verdict:
    """One row: the paper's claim, the chapter that checks it, the evidence, the verdict."""

    claim: str
    chapter: str
    evidence: str
    verdict: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def record(results_dir: str | os.PathLike, chapter: str, verdicts: list[Verdict]) -> Path:
    """Write a chapter's verdicts to ``<results_dir>/verdicts/<chapter>.json`` (atomically)."""
    rows = [asdict(v) for v in verdicts]
    return write_json(Path(results_dir) / "verdicts" / f"{chapter}.json", {"verdicts": rows})


def collect(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Every recorded verdict, in chapter order."""
    files = sorted((Path(results_dir) / "verdicts").glob("*.json"))
    rows = [row for path in files for row in read_json(path)["verdicts"]]
    return pd.DataFrame(rows, columns=["claim", "chapter", "evidence", "verdict"])


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


def verdict_on_ratios(ratios, best=1.0, *, outside=None) -> str:
    """The book's one rule for "ours beats the best baseline by a large margin", on the set of
    points a claim covers (the chapter states which):

    - "holds" when ours has at most half the best baseline's value at every point (ratio ≤ 1/2,
      the paper's "large margin");
    - "holds with caveats" when it beats the best baseline at every point (ratio < 1) but not by
      that margin at all of them;
    - "fails" when at some point a baseline is as good or better (or the ratio is NaN).

    ``ratios``: ours / the best baseline at each point, as :mod:`~attnprune.records.compare`
    computes them. Where the best baseline's value may be 0 or negative (a perplexity increase),
    so that no ratio can be formed, pass ours' values as ``ratios`` and the best baseline's as
    ``best``: the same rule on the values (beats: ours < best; halves: ours ≤ best / 2, best > 0),
    which is the rule on their ratio wherever best > 0.

    ``outside``: the ratios at the points a chapter leaves out of the claim's scope (for instance
    the ends of a sweep where the paper's picture does not hold). A claim that holds on its scope
    but not by the large margin outside it "holds with caveats": the scope is not allowed to hide
    the points where ours loses.
    """
    if np.size(ratios) == 0:
        raise ValueError("a verdict on ratios needs at least one comparison point")
    if np.all(halves(ratios, best)):
        return "holds" if outside is None or np.all(halves(outside)) else "holds with caveats"
    return "holds with caveats" if np.all(beats(ratios, best)) else "fails"
