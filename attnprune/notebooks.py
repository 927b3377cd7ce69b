"""Execute the book's chapters with papermill, under a named profile, and build the book.

The chapters are MyST Markdown notebooks in ``notebooks/`` (jupytext). Each has a papermill
``parameters`` cell holding its default (``quick``) settings; a profile overrides them from
``notebooks/profiles/<chapter>.yml``, a mapping ``profile name → {parameter: value}``. A chapter
with no entry for a profile runs with its defaults. Every chapter also receives ``profile`` and
``results_dir`` (where it writes its results files).

    python -m attnprune.notebooks execute [--profile quick] [--only NAME ...]
    python -m attnprune.notebooks publish --profile full [--only NAME ...]
    python -m attnprune.notebooks book [--profile quick]

``execute`` writes ``_build/papermill/<profile>/<chapter>.ipynb`` (atomically: a failed or
interrupted chapter leaves no file) and skips a chapter whose source, parameters and library
are unchanged since its last successful run. ``publish`` executes chapters under a heavy profile
and installs their results folders, with their provenance, as ``results/<profile>/<chapter>/``
(committed; the chapters show them: :mod:`attnprune.records.published`). ``book`` executes, copies the executed chapters
into ``book/executed/`` and runs ``jupyter-book build -W -n``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "_build"
EXECUTED_IN_BOOK = ROOT / "book" / "executed"
MATHJAX = ROOT / "book" / "_static" / "mathjax"
STAMP_KEY = "attnprune_stamp"


class ChapterFailed(RuntimeError):
    """A chapter raised an exception (for example a failed ``assert``) while executing."""


def chapters() -> list[Path]:
    """The chapter sources, in execution order (their file names start with a number)."""
    return sorted(NOTEBOOKS.glob("[0-9]*.md"))


def profile_parameters(chapter: Path, profile: str) -> dict:
    """The parameter overrides of ``profile`` for ``chapter`` (empty: the defaults)."""
    path = NOTEBOOKS / "profiles" / f"{chapter.stem}.yml"
    if not path.exists():
        return {}
    profiles = yaml.safe_load(path.read_text()) or {}
    return dict(profiles.get(profile) or {})


def known_profiles() -> set[str]:
    names = {"quick"}
    for path in (NOTEBOOKS / "profiles").glob("*.yml"):
        names.update((yaml.safe_load(path.read_text()) or {}).keys())
    return names


def executed_dir(profile: str) -> Path:
    return BUILD / "papermill" / profile


def results_dir(profile: str) -> Path:
    return BUILD / "results" / profile


def _stamp(chapter: Path, parameters: dict) -> str:
    """A hash of what a chapter's output depends on: its source, parameters, and the library
    modules it uses (:func:`attnprune.records.published.library_modules`, with the modules that
    only read and judge tables, which it uses too)."""
    from .records import published

    digest = hashlib.sha256(chapter.read_bytes())
    digest.update(repr(sorted(parameters.items())).encode())
    modules = published.library_modules(chapter_code(chapter))
    for name, hashed in sorted(published.module_hashes(modules).items()):
        digest.update(f"{name} {hashed}\n".encode())
    for source in sorted((ROOT / "attnprune" / "records").glob("*.py")):
        digest.update(source.read_bytes())
    for source in _inputs(chapter, parameters):
        digest.update(f"{source.relative_to(ROOT)}\n".encode() + source.read_bytes())
    return digest.hexdigest()


def _inputs(chapter: Path, parameters: dict) -> list[Path]:
    """The files a chapter reads besides its code: its published results (``results/*/<chapter>``)
    and, for the page that collects every chapter's verdicts, those verdicts."""
    from .records.published import PUBLISHED

    files = sorted(path for path in (ROOT / PUBLISHED).glob(f"*/{chapter.stem}/*") if path.is_file())
    if "collect(" in chapter_code(chapter):
        files += sorted((ROOT / parameters["results_dir"] / "verdicts").glob("*.json"))
    return files


def _up_to_date(output: Path, stamp: str) -> bool:
    if not output.exists():
        return False
    import nbformat

    return nbformat.read(output, as_version=4).metadata.get(STAMP_KEY) == stamp


def execute_chapter(chapter: Path, profile: str, force: bool = False) -> Path:
    """Run one chapter through papermill; return the executed notebook's path."""
    import jupytext
    import nbformat
    import papermill

    parameters = profile_parameters(chapter, profile)
    parameters.update(profile=profile, results_dir=str(results_dir(profile).relative_to(ROOT)))
    output = executed_dir(profile) / f"{chapter.stem}.ipynb"
    stamp = _stamp(chapter, parameters)
    if not force and _up_to_date(output, stamp):
        print(f"  {chapter.stem}: up to date ({output.relative_to(ROOT)})", flush=True)
        return output

    output.parent.mkdir(parents=True, exist_ok=True)
    results_dir(profile).mkdir(parents=True, exist_ok=True)
    notebook = jupytext.read(chapter)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    partial = BUILD / "papermill" / ".partial" / f"{profile}-{output.name}"
    partial.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"  {chapter.stem}: executing with profile {profile!r} ...", flush=True)
    try:
        papermill.execute_notebook(
            notebook,
            str(partial),
            parameters=parameters,
            cwd=str(ROOT),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
        )
    except papermill.PapermillExecutionError as error:
        failed = BUILD / "papermill" / f"{profile}-failed" / output.name
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, failed)
        output.unlink(missing_ok=True)  # never leave a stale success behind
        raise ChapterFailed(
            f"chapter {chapter.stem} failed ({error.ename}: {error.evalue}); "
            f"the executed notebook with the error is {failed}"
        ) from None
    executed = nbformat.read(partial, as_version=4)
    executed.metadata[STAMP_KEY] = stamp
    for cell in executed.cells:  # the run's settings are plumbing: the page says where its numbers come from
        tags = cell.metadata.setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(executed, partial)
    os.replace(partial, output)
    print(f"  {chapter.stem}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return output


def _selected(only: list[str] | None) -> list[Path]:
    selected = [c for c in chapters() if not only or c.stem in only or c.stem.split("_", 1)[-1] in only]
    if only and not selected:
        raise ValueError(f"no chapter matches {only}; chapters: {[c.stem for c in chapters()]}")
    return selected


def execute(profile: str, only: list[str] | None = None, force: bool = False) -> list[Path]:
    """Execute every chapter (or those named in ``only``) under ``profile``.

    A failing chapter does not stop the others; the failures are reported together at the end.
    """
    if profile not in known_profiles():
        raise ValueError(f"profile must be one of {sorted(known_profiles())}, got {profile!r}")
    selected = _selected(only)
    print(f"Executing {len(selected)} chapter(s) with profile {profile!r}", flush=True)
    executed, failures = [], []
    for chapter in selected:
        try:
            executed.append(execute_chapter(chapter, profile, force))
        except ChapterFailed as failure:
            print(f"  {chapter.stem}: FAILED", flush=True)
            failures.append(str(failure))
    if failures:
        raise ChapterFailed("\n".join(failures))
    return executed


def chapter_code(chapter: Path) -> str:
    """The Python of a chapter's code cells (MyST ``{code-cell}`` blocks, cell options dropped)."""
    cells = re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", chapter.read_text(encoding="utf-8"), re.S | re.M)
    cells = [re.sub(r"\A---\n.*?^---\n", "", cell, flags=re.S | re.M) for cell in cells]  # a YAML options block
    lines = [line for cell in cells for line in cell.splitlines() if not line.startswith((":", "%", "!"))]
    return "\n".join(lines)


def git_commit(paths: list[Path]) -> tuple[str, bool]:
    """The checked-out commit and whether any of ``paths`` (a chapter, its profiles and the library
    modules it uses) differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", *map(str, paths))
        return git("rev-parse", "HEAD"), bool(changed)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)", True


def machine() -> dict:
    """What the numbers were computed on: processor, cores, threads, operating system."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "architecture": platform.machine(),
        "cores": f"{os.cpu_count()} cores",
        "default_torch_threads": torch.get_num_threads(),  # a chapter may set its own (its `threads`)
        "system": platform.platform(),
    }


def publish(profile: str, only: list[str] | None = None) -> list[Path]:
    """Execute chapters under a heavy ``profile`` and install each one's results folder, with its
    provenance, as ``results/<profile>/<chapter>/`` (:func:`attnprune.records.published.install`)."""
    from .records import published
    from .records.results import versions

    if profile == "quick":
        raise ValueError(
            "--profile quick is the smoke test the book build runs; publish a heavy profile (full, offline-full)"
        )
    installed = []
    for chapter in _selected(only):
        started = datetime.now(UTC)
        modules = published.library_modules(chapter_code(chapter))
        used = [published.module_file(name) for name in modules]
        commit, dirty = git_commit([chapter, NOTEBOOKS / "profiles" / f"{chapter.stem}.yml", *filter(None, used)])
        hashes = published.module_hashes(modules)  # the code that runs: read before the run, not after
        execute_chapter(chapter, profile, force=True)
        source = results_dir(profile) / chapter.stem
        if not source.is_dir():
            raise ChapterFailed(f"chapter {chapter.stem} wrote no results folder {source.relative_to(ROOT)}")
        finished = datetime.now(UTC)
        provenance = {
            "command": f"python -m attnprune.notebooks publish --profile {profile} --only {chapter.stem}",
            "profile": profile,
            "parameters": profile_parameters(chapter, profile),
            "commit": commit,
            "uncommitted_changes": dirty,
            "library": {"hash": published.library_hash(hashes), "modules": hashes},
            "versions": versions(),
            "machine": machine(),
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "wall_seconds": round((finished - started).total_seconds()),
        }
        target = published.install(source, ROOT / published.PUBLISHED / profile / chapter.stem, provenance)
        print(f"  {chapter.stem}: results published in {target.relative_to(ROOT)}", flush=True)
        installed.append(target)
    return installed


def install_mathjax() -> Path:
    """Copy MathJax 3 (from the PyPI package django-static-mathjax) into ``book/_static``."""
    from .llm.assets import package_dir

    source = package_dir("mathjax", "django-static-mathjax==3.2.2.1") / "static" / "mathjax" / "es5"
    target = MATHJAX
    if not (target / "tex-svg.js").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    return target


def build_book(profile: str) -> Path:
    """Execute every chapter, copy them into ``book/executed/`` and build the HTML book."""
    executed = execute(profile)
    install_mathjax()
    shutil.rmtree(EXECUTED_IN_BOOK, ignore_errors=True)
    EXECUTED_IN_BOOK.mkdir(parents=True)
    for notebook in executed:
        shutil.copy2(notebook, EXECUTED_IN_BOOK / notebook.name)
    print("Building the HTML book (jupyter-book build -W -n) ...", flush=True)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(ROOT), "-W", "-n", "--keep-going"]
    subprocess.run(command, check=True, cwd=ROOT)
    index = BUILD / "html" / "index.html"
    print(f"The book is at {index}")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m attnprune.notebooks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="execute chapters with papermill")
    run.add_argument("--profile", default="quick", help="parameter profile (default: quick)")
    run.add_argument("--only", nargs="*", help="chapter names (e.g. 06_synthetic or synthetic)")
    run.add_argument("--force", action="store_true", help="re-execute even if up to date")
    pub = sub.add_parser("publish", help="execute chapters under a heavy profile and publish their results")
    pub.add_argument("--profile", required=True, help="a heavy profile (full, offline-full, paper)")
    pub.add_argument("--only", nargs="*", help="chapter names (default: every chapter with that profile)")
    book = sub.add_parser("book", help="execute every chapter and build the HTML book")
    book.add_argument("--profile", default="quick", help="parameter profile (default: quick)")
    args = parser.parse_args(argv)
    try:
        if args.command == "execute":
            execute(args.profile, args.only, args.force)
        elif args.command == "publish":
            if args.profile not in known_profiles():
                raise ValueError(f"--profile must be one of {sorted(known_profiles())}, got {args.profile!r}")
            publish(args.profile, args.only or [c.stem for c in chapters() if profile_parameters(c, args.profile)])
        else:
            build_book(args.profile)
    except ValueError as error:
        parser.error(str(error))
    except ChapterFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:
        print(f"error: the book build failed (exit status {error.returncode}); see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
