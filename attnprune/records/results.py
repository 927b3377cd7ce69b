"""Results files: written atomically (write, then rename) and stamped with their provenance.

Every results file says which profile, model, data, seed and library versions made it, so a
number in the book can be traced to the command that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

VERSIONED = ("attnprune", "torch", "numpy", "transformers", "pandas")
ROOT = Path(__file__).resolve().parents[1]


def resolve(path: str | os.PathLike) -> Path:
    """A results path: absolute as given, or relative to the repository root (not the cwd),
    so a chapter finds its results wherever its kernel runs (papermill, nbval)."""
    path = Path(path)
    return path if path.is_absolute() else ROOT / path


def versions() -> dict[str, str]:
    """Python and the versions of the libraries that shape the numbers."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def provenance(profile: str, **settings: Any) -> dict[str, Any]:
    """What made a result: the profile, the given settings (model, data, seed, ...) and versions."""
    return {"profile": profile, **settings, "versions": versions()}


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path = resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` as indented JSON."""
    return write_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(resolve(path).read_text(encoding="utf-8"))


def write_table(path: str | os.PathLike, rows: pd.DataFrame, meta: dict[str, Any]) -> Path:
    """Atomically write a results table as JSON: ``{"meta": provenance, "rows": [...]}``."""
    return write_json(path, {"meta": meta, "rows": rows.to_dict(orient="records")})


def read_table(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows and the provenance of a table written by :func:`write_table`."""
    payload = read_json(path)
    return pd.DataFrame(payload["rows"]), payload["meta"]
