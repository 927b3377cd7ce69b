"""Results files: written atomically (write, then rename) and stamped with their provenance.

Every results file says which profile, model, data, seed and library versions made it, so a
number in the book can be traced to the command that produced it.

Paths are taken as given: a relative path is relative to the current directory (a path on the
command line means what the shell means). A chapter passes ``attnprune.notebooks.ROOT /
results_dir``, an absolute path, so it finds its results whatever the kernel's directory
(papermill runs chapters in the repository root, nbval in the executed notebook's folder).
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
    """Write ``text`` to a temporary file beside ``path`` (relative: to the cwd), then rename it into place."""
    path = Path(path)
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
    """The JSON object in ``path`` (relative: to the cwd)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_table(path: str | os.PathLike, rows: pd.DataFrame, meta: dict[str, Any]) -> Path:
    """Atomically write a chapter's results table as JSON: ``{"meta": provenance, "columns": [...],
    "rows": [[...], ...]}``, the provenance indented and one compact line per row (the column names
    once, not in every row: a table of many rows stays small)."""
    table = rows.to_dict(orient="split", index=False)
    lines = [json.dumps(row, default=str, separators=(",", ":")) for row in table["data"]]
    text = (
        f'{{\n"meta": {json.dumps(meta, indent=2, default=str)},\n'
        f'"columns": {json.dumps(table["columns"])},\n'
        f'"rows": [\n' + ",\n".join(lines) + "\n]}\n"
    )
    return write_atomic(path, text)


def read_table(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows and the provenance of a table written by :func:`write_table`."""
    payload = read_json(path)
    columns = payload.get("columns")  # absent in the tables written before rows were lists
    return pd.DataFrame(payload["rows"], columns=columns), payload["meta"]
