"""The speed and peak memory of one checkpoint, dense or sliced, each measured in a fresh process.

The peak resident set of a process only grows, so a second model measured in the same process
would inherit the first one's peak. :func:`measure_checkpoint` therefore runs

    python -m attnprune.structured.speed FOLDER --json [--prompt-len T] [--new-tokens n] [--repeats r] [--threads N]

which loads the checkpoint (a sliced one, with ``structured_layers`` in its config.json, through
:func:`~attnprune.structured.prune.load_pruned`; a dense one through
:func:`~attnprune.llm.models.load_model`), measures it with :func:`attnprune.llm.speed.measure_model`
and prints one JSON line: a :class:`~attnprune.llm.speed.SpeedReport` with the bytes of its
``*.safetensors`` files and the process's peak resident set. It lives here, not in ``llm``, because
loading a sliced checkpoint needs this package. The tokenizer is not loaded (:func:`load_checkpoint`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import transformers
from torch import nn

from ..llm.assets import quiet_loading
from ..llm.models import OFFLINE_MODEL, model_config, resolve_model
from ..llm.speed import SpeedConfig, SpeedReport, bytes_on_disk, measure_model, peak_rss_bytes
from .prune import is_sliced
from .slicing import load_sliced

BAD_INPUT = 2
"""The exit status of the measuring process for a bad folder or setting (its ValueError or OSError)."""


def check_folder(folder: str | os.PathLike) -> Path:
    """``folder`` must be an existing model folder (one with a config.json), or the alias
    :data:`~attnprune.llm.models.OFFLINE_MODEL` of the offline model's folder."""
    if not isinstance(folder, (str, os.PathLike)) or not os.fspath(folder):
        raise ValueError(f"folder must be the path of a model folder, got {folder!r}")
    if os.fspath(folder) == OFFLINE_MODEL:
        return resolve_model(OFFLINE_MODEL)[1]
    path = Path(folder).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"folder {os.fspath(folder)!r}: no such folder")
    if not path.is_dir():
        raise ValueError(f"folder {os.fspath(folder)!r} is a file, not a model folder")
    if not (path / "config.json").is_file():
        raise ValueError(f"folder {os.fspath(folder)!r} is not a model folder (no config.json)")
    return path


def load_checkpoint(folder: str | os.PathLike) -> nn.Module:
    """The model of a checkpoint folder on the CPU in float32, in evaluation mode: a sliced one
    (``structured_layers`` in its config.json) through :func:`~attnprune.structured.slicing.load_sliced`,
    a dense one through ``AutoModelForCausalLM``. Without its tokenizer, unlike
    :func:`~attnprune.structured.prune.load_pruned` and :func:`~attnprune.llm.models.load_model`:
    a fast tokenizer of a large vocabulary holds hundreds of MB, which would swamp the model's
    peak memory."""
    path = check_folder(folder)
    sliced = is_sliced(model_config(os.fspath(path)))
    try:
        with quiet_loading():
            if sliced:
                return load_sliced(path)
            return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    except (ValueError, OSError):
        raise
    except Exception as error:  # safetensors' SafetensorError (a truncated file), a shape mismatch
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"folder {os.fspath(folder)!r}: cannot load its weights ({type(error).__name__}: {first})"
        ) from error


def measure_checkpoint(
    folder: str | os.PathLike,
    *,
    prompt_len: int = 512,
    new_tokens: int = 128,
    repeats: int = 3,
    threads: int | None = None,
) -> SpeedReport:
    """Prefill and decode speed, bytes on disk and peak memory of the checkpoint ``folder``
    (relative: to the working directory), measured in a fresh Python process (``sys.executable``)."""
    config = SpeedConfig(prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats, threads=threads)
    path = check_folder(folder).resolve()
    command = [sys.executable, "-m", __name__, str(path), "--json", *_options(config)]
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env())
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else "no message"
        if done.returncode == BAD_INPUT:  # its message may name the folder by its absolute path
            message, named = last.removeprefix("error: "), f"folder {str(path)!r}"
            rest = message[len(named) :] if message.startswith(named) else f": {message}"
            raise ValueError(f"folder {os.fspath(folder)!r}{rest}")
        raise RuntimeError(
            f"folder {os.fspath(folder)!r}: the measuring process failed (status {done.returncode}): {last}"
        )
    return SpeedReport(**json.loads(done.stdout.strip().splitlines()[-1]))


def _options(config: SpeedConfig) -> list[str]:
    options = ["--prompt-len", str(config.prompt_len), "--new-tokens", str(config.new_tokens)]
    options += ["--repeats", str(config.repeats)]
    return options + (["--threads", str(config.threads)] if config.threads is not None else [])


def _child_env() -> dict[str, str]:
    """This process's environment (HF offline settings included, offline by default) with this
    package importable."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def measure_here(folder: str | os.PathLike, config: SpeedConfig) -> SpeedReport:
    """In this process: set the threads, load ``folder``, measure it; the peak memory is this
    process's (honest only in a fresh one: the measuring process of :func:`measure_checkpoint`);
    the baseline is its peak before loading, the libraries imported."""
    transformers.AutoModelForCausalLM  # noqa: B018  (its lazy import, before the baseline)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    path = check_folder(folder)
    baseline = peak_rss_bytes()
    model = load_checkpoint(path)
    report = measure_model(model, config)
    fields = report.to_dict() | {"bytes_on_disk": bytes_on_disk(path), "baseline_memory_bytes": baseline}
    return SpeedReport(**fields | {"peak_memory_bytes": peak_rss_bytes()})


def main(argv: list[str] | None = None) -> int:
    """The measuring process: one checkpoint, one JSON line on stdout (``--json``) or a short text."""
    parser = argparse.ArgumentParser(prog="python -m attnprune.structured.speed", description=__doc__)
    parser.add_argument(
        "folder", help=f"a checkpoint folder written by save_pretrained, dense or sliced, or {OFFLINE_MODEL!r}"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    parser.add_argument("--prompt-len", type=int, default=512, help="prefill prompt tokens (default 512)")
    parser.add_argument("--new-tokens", type=int, default=128, help="decoded tokens (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, median (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    try:
        config = SpeedConfig(args.prompt_len, args.new_tokens, args.repeats, args.threads)
        report = measure_here(args.folder, config)
    except (ValueError, OSError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        return BAD_INPUT
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print("\n".join(f"{key}: {value}" for key, value in report.to_dict().items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
