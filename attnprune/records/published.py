"""Published results: the tables of the heavy profiles, committed with their provenance and read
back by the chapters when the book is built.

The book is built with the ``quick`` profile, a smoke test that checks every chapter's code in a
few minutes. What the pages show comes from the heavy runs (``full`` for the synthetic chapters,
``offline-full`` for the real model), which take an hour or more on a laptop: they are run once by

    python -m attnprune.notebooks publish --profile full --only 03_lipschitz

which executes the chapter under that profile and installs its results folder as
``results/<profile>/<chapter>/`` (tables, never models), with ``PROVENANCE.json``: the command,
the profile and its parameters, the commit, the versions, the machine, the wall time, and the
hash of every library module the chapter's code imports (directly or through other modules).

A chapter calls :func:`show` to learn which folder to read: its own fresh results when it runs
under the heavy profile itself; else the published folder, flagged **stale** when one of the
recorded library modules has changed since (its numbers may no longer be what the code computes);
else its own quick results, flagged as a **smoke test** that is never turned into a verdict.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .results import read_json, write_json

PUBLISHED = "results"
PROVENANCE = "PROVENANCE.json"
PACKAGE = "attnprune"
RENDER_ONLY = ("attnprune.records", "attnprune.notebooks")  # read and judge tables; compute none


def package_dir() -> Path:
    """The folder of the ``attnprune`` package."""
    return Path(__file__).resolve().parents[1]


def module_file(module: str) -> Path | None:
    """The source file of an ``attnprune`` module (a ``.py`` file or a package's ``__init__.py``)."""
    parts = module.split(".")[1:]
    base = package_dir().joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(code: str, module: str | None = None) -> set[str]:
    """The ``attnprune`` modules that ``code`` imports (``module``: its own name, to resolve
    relative imports). ``from attnprune.x import name`` counts ``attnprune.x.name`` when that is
    a module, else ``attnprune.x``."""
    found: set[str] = set()
    package = module.rsplit(".", 1)[0] if module and not str(module_file(module)).endswith("__init__.py") else module
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = (package or PACKAGE).split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{name}.{alias.name}"
                found.add(sub if module_file(sub) else name)
    return found


def library_modules(code: str) -> list[str]:
    """Every ``attnprune`` module that ``code`` uses, directly or through other modules, except
    those that only read and judge tables (``RENDER_ONLY``): sorted names."""
    seen: set[str] = set()
    todo = list(_imports(code))
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None or name.startswith(RENDER_ONLY):
            continue
        seen.add(name)
        todo.extend(_imports(module_file(name).read_text(encoding="utf-8"), name))
    return sorted(seen)


def module_hashes(modules: list[str]) -> dict[str, str]:
    """sha256 of each module's source, module → hex digest ("missing" for a module now gone)."""
    hashes = {}
    for name in modules:
        path = module_file(name)
        hashes[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path else "missing"
    return hashes


def library_hash(hashes: dict[str, str]) -> str:
    """One digest of the per-module digests (what the provenance calls the library hash)."""
    return hashlib.sha256("".join(f"{name} {digest}\n" for name, digest in sorted(hashes.items())).encode()).hexdigest()


def install(source: str | os.PathLike, target: str | os.PathLike, provenance: dict[str, Any]) -> Path:
    """Copy the results folder ``source`` to ``target`` with ``PROVENANCE.json``, atomically: the
    copy is made beside ``target`` and renamed into place, so an interrupted publish leaves the
    previous results (or none), never a mixture."""
    source, target = Path(source), Path(target)
    partial = target.with_name(f".{target.name}.partial")
    previous = target.with_name(f".{target.name}.previous")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    write_json(partial / PROVENANCE, provenance)
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        os.replace(target, previous)
    os.replace(partial, target)
    shutil.rmtree(previous, ignore_errors=True)
    return target


@dataclass(frozen=True)
class Shown:
    """Which results a chapter shows: ``folder`` holds its tables; ``provenance`` says what made
    them; ``smoke`` marks the quick profile's own numbers (no verdict); ``stale`` lists the
    library modules that changed since a published run."""

    chapter: str
    profile: str
    folder: Path
    provenance: dict[str, Any] = field(default_factory=dict)
    smoke: bool = False
    stale: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """ "profile full, commit abc1234": where the shown numbers come from."""
        if self.smoke:
            return "profile quick (smoke test)"
        commit = self.provenance.get("commit", "")
        return f"profile {self.profile}, commit {commit[:7]}" if commit else f"profile {self.profile} (this run)"

    def banner(self) -> str:
        """A MyST admonition saying where the results below come from (Markdown)."""
        if self.smoke:
            return (
                f":::{{admonition}} Smoke test: no results of the `{self.profile}` profile\n:class: warning\n\n"
                f"No published results of the `{self.profile}` profile were found for this chapter, so the "
                "numbers below are the `quick` profile's: a smoke test of the code, too small to judge by. "
                "The verdicts are not given. Publish them with\n"
                f"`python -m attnprune.notebooks publish --profile {self.profile} --only {self.chapter}`.\n:::"
            )
        if not self.provenance.get("commit"):
            title = ":::{admonition} Results of this run\n:class: note\n\n"
            return f"{title}This run uses the `{self.profile}` profile.\n:::"
        made = self.provenance
        machine = made.get("machine", {})
        where = ", ".join(str(machine[key]) for key in ("cpu", "cores", "device") if machine.get(key))
        text = (
            f"The tables, figures and verdicts of this chapter are read from `{PUBLISHED}/{self.profile}/"
            f"{self.chapter}/`, made by `{made['command']}` at commit `{made['commit'][:7]}` on "
            f"{made['finished'][:10]} ({where}; {made['wall_seconds'] / 60:.0f} min). The book build runs "
            "the chapter's code with the small `quick` profile as a smoke test, and shows these results."
        )
        if self.stale:
            return (
                f":::{{admonition}} Stale results (profile `{self.profile}`)\n:class: warning\n\n"
                f"{text} Since then these library "
                f"modules have changed: {', '.join(f'`{m}`' for m in self.stale)}. The numbers may no longer "
                f"be what the code computes; rerun the command above to refresh them.\n:::"
            )
        return f":::{{admonition}} Results of the `{self.profile}` profile\n:class: note\n\n{text}\n:::"


def show(chapter: str, profile: str, *, running: str, results_dir: str | os.PathLike, root: str | os.PathLike) -> Shown:
    """The results a chapter shows, for the heavy ``profile`` it is meant to show, when it runs
    under the profile ``running`` and writes its own tables to ``<results_dir>/<chapter>``.
    ``root``: the repository root (the published results are under ``<root>/results``)."""
    own = Path(results_dir) / chapter
    if running == profile:
        return Shown(chapter, profile, own)
    published = Path(root) / PUBLISHED / profile / chapter
    if not (published / PROVENANCE).is_file():
        return Shown(chapter, profile, own, smoke=True)
    provenance = read_json(published / PROVENANCE)
    recorded = provenance["library"]["modules"]
    now = module_hashes(list(recorded))
    stale = tuple(name for name, digest in recorded.items() if now[name] != digest)
    return Shown(chapter, profile, published, provenance, stale=stale)
