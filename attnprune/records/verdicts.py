"""The "Claims and verdicts" table: each chapter records the claims it checked.

A chapter computes its verdicts from its own numbers and calls :func:`record`; the verdict page
collects every chapter's file with :func:`collect`. No verdict is written by hand.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .results import read_json, resolve, write_json

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
    files = sorted((resolve(results_dir) / "verdicts").glob("*.json"))
    rows = [row for path in files for row in read_json(path)["verdicts"]]
    return pd.DataFrame(rows, columns=["claim", "chapter", "evidence", "verdict"])


def collect_other_profiles(results_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The verdicts recorded by the *other* profiles next to ``results_dir`` (its sibling folders
    ``_build/results/<profile>``), profile → table; empty where no other profile has been run."""
    here = resolve(results_dir)
    siblings = sorted(p for p in here.parent.iterdir() if p.is_dir() and p != here) if here.parent.exists() else []
    tables = {p.name: collect(p) for p in siblings if (p / "verdicts").is_dir()}
    return {name: table for name, table in tables.items() if len(table)}


def verdict_from(holds: bool, caveat: bool = False) -> str:
    """"holds", "holds with caveats" or "fails" from two booleans computed by the chapter."""
    if not holds:
        return "fails"
    return "holds with caveats" if caveat else "holds"
