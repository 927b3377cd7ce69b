"""The ``attnprune`` command: prune a model (its q_proj/k_proj weights, or whole heads and MLP
channels) and evaluate perplexity.

    attnprune prune --model M --method ours|wanda|sparsegpt|magnitude --sparsity R --calib DATA --out DIR
    attnprune prune --model M --method wanda|sparsegpt|magnitude [--objective frobenius|kl|output|block]
                    [--scope qk|qkvo|all] [--n-validation 4] [--damping 0.3] --sparsity R --calib DATA --out DIR
    attnprune prune --structured --model M --method numerical|flap|wanda-sp|magnitude|random
                    --sparsity R [--allocation global|uniform] [--compensation refit|bias|none] --calib DATA --out DIR
    attnprune eval --model DIR --data DATA
    attnprune speed FOLDER [FOLDER ...] [--prompt-len 512] [--new-tokens 128] [--repeats 3] [--threads N] [--json OUT]

``prune`` loads M, draws the calibration sequences from DATA, prunes the q/k weights of every
layer (or ``--layers``) at sparsity R, writes an ordinary Hugging Face checkpoint (model and
tokenizer) to DIR and prints a JSON summary (also saved as DIR/attnprune_summary.json).
``--objective`` (attention-aware reconstruction, :mod:`attnprune.llm.refit`): the linear --method
chooses the support, then the kept weights (and, with ``--refit-window all``, the default, the
dense layers the objective reads) are refitted on that objective, layer by layer, with
early stopping on ``--n-validation`` sequences of the calibration source's held-out split;
``--scope`` widens the pruned layers from q/k to the attention block (qkvo) or every linear layer
of each block (all).
``prune --structured`` (Part II, arXiv 2412.12441) removes whole attention heads and MLP channels,
a fraction R of the attention+MLP linear parameters, and writes a physically smaller checkpoint
(``attnprune.structured.slicing.load_sliced`` reloads it). ``eval`` prints the perplexity of a
model, dense or sliced, on DATA as JSON. Progress bars go to stderr, the JSON summary to stdout.
``speed`` measures each checkpoint folder (dense or sliced) in a fresh process: prefill and decode
tokens/s on the CPU, bytes on disk, peak memory; it prints a table with the decode speedup over the
first folder and its bound (the ratio of parameter counts), and writes JSON with ``--json``.
Relative paths are relative to the current directory.

Every argument is checked before anything is loaded, and the model's depth, width and context
length as soon as its config is read. The checkpoint is written into a hidden folder beside DIR
(``.DIR.attnprune-partial``) and renamed into place at the end: an interrupted or failed run
leaves no partial DIR. A non-empty DIR is replaced only with ``--overwrite``. Each finished layer
is saved there too, so a run killed midway can be continued with ``--resume`` (same arguments;
not with ``--structured``, which scores all layers from one dense pass).
An error prints one line, ``attnprune prune: error: ...``, and exits with status 2; Ctrl-C exits
with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .core.baselines import LINEAR
from .llm.data import DATASETS, evaluation_sequences, load_texts, token_sequences
from .llm.models import OFFLINE_MODEL, PAPER_MODEL, load_model
from .llm.objectives import OBJECTIVES
from .llm.prune import CAPTURES, METHODS, OURS_DEFAULTS, REFIT_DEFAULTS
from .llm.qk_objective import QUERY_ROWS
from .llm.refit import SCOPES, WINDOWS, RefitConfig
from .records.results import versions, write_json
from .structured.allocation import ALLOCATIONS, GQA_RULES
from .structured.compensation import COMPENSATIONS

SUMMARY = "attnprune_summary.json"
CALIB_DATASETS = tuple(name for name in DATASETS if name != "lee")  # Lee is for evaluation only
DATA_HELP = "the path of a local UTF-8 .txt file or one of "
MODEL_HELP = (
    f"{OFFLINE_MODEL!r} (SmolLM2-135M-Instruct, offline), a folder written by "
    f"save_pretrained, or a Hugging Face hub id such as {PAPER_MODEL!r}"
)
STRUCTURED_METHODS = ("numerical", "flap", "wanda-sp", "magnitude", "random")
"""The scores ``prune --structured`` accepts as --method (names of ``attnprune.structured.scores.SCORES``;
its "newton" is the same score as "numerical", reached by the paper's iteration)."""
STRUCTURED_OPTIONS = {
    "allocation": "global",
    "compensation": "refit",
    "gqa": "query",
    "min_heads": 1,
    "min_channels": 1,
}
"""The options of ``prune --structured`` only, with their defaults (fields of StructuredConfig)."""
PARTIAL = ".attnprune-partial"
"""The temporary folder of ``--out DIR`` is ``.DIR.attnprune-partial`` beside it (deterministic, so
that ``--resume`` finds it): ``resume/`` holds the finished layers, ``model/`` the checkpoint
being written, renamed to DIR at the end."""
PAUSE_AT = "ATTNPRUNE_TEST_PAUSE_AT"
"""Test only: ``layer`` (after the first layer is saved) or ``save`` (after the weights are written,
before the tokenizer and summary) makes ``prune`` print ``attnprune: test pause at POINT`` on stderr
and sleep ``ATTNPRUNE_TEST_PAUSE_SECONDS`` (default 30), so a test can interrupt it there."""


class CommandError(ValueError):
    """A bad argument or input: printed as one line ``attnprune CMD: error: ...`` (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like the errors found after parsing (no usage block)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- argument types: each checked when parsed, its message names the flag ------------------------
def _number(text: str, cast):
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if cast is int else 'a number'}, got {text!r}"
        ) from None
    if cast is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _checked(cast, accept, rule: str):
    """An argparse type: the text as ``cast`` (int or a finite float), kept if ``accept(value)``,
    else the error "must <rule>, got <text>"."""

    def parse(text: str):
        value = _number(text, cast)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must {rule}, got {text!r}")
        return value

    return parse


_sparsity = _checked(float, lambda v: 0.0 <= v < 1.0, "lie in [0, 1) (the fraction of weights removed)")
_positive_int = _checked(int, lambda v: v > 0, "be a positive integer")
_count = _checked(int, lambda v: v >= 0, "be an integer ≥ 0")
_seq_len = _checked(int, lambda v: v >= 2, "be an integer ≥ 2 (tokens per sequence)")
_seed = _checked(int, lambda v: 0 <= v < 2**63, "be an integer in [0, 2**63)")
_positive_float = _checked(float, lambda v: v > 0, "be a number > 0")
_nonnegative_float = _checked(float, lambda v: v >= 0, "be a number ≥ 0")


def _method(text: str) -> str:
    if text not in METHODS + STRUCTURED_METHODS:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(METHODS)}; "
            f"with --structured from {', '.join(STRUCTURED_METHODS)})"
        )
    return text


def _layers(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"must be comma-separated layer indices ≥ 0 such as 0,1,5, got {text!r}")
    return sorted({int(part) for part in parts})


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _calib(text: str) -> str:
    if text in DATASETS and text not in CALIB_DATASETS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is for evaluation only; calibrate on one of {CALIB_DATASETS} or a .txt file"
        )
    looks_like_a_file = text.endswith(".txt") or os.sep in text or Path(text).expanduser().exists()
    if text not in DATASETS and not looks_like_a_file:
        raise argparse.ArgumentTypeError(
            f"must be one of {CALIB_DATASETS} or the path of a local .txt file, got {text!r}"
        )
    return _text(text)


def _device(text: str) -> str:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA GPU is available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: there are only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: Apple's MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"device type {device.type!r} is not supported; use cpu, cuda[:N] or mps")
    return text


# -- the parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnprune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{prune,eval,speed}")
    prune = sub.add_parser(
        "prune",
        help="prune the q_proj/k_proj weights of a model, or (--structured) its heads and MLP channels, and save it",
        description="Prune the q_proj/k_proj weights of every decoder layer at "
        "sparsity R (exactly round(R·d) zeros per row) and save the model. With --objective, a linear "
        "--method chooses the support and the kept weights are refitted on that objective (attention-aware "
        "reconstruction); --scope also prunes v_proj/o_proj (qkvo) or every linear layer (all). "
        "With --structured, remove "
        "whole attention heads and MLP channels instead (a fraction R of the attention+MLP linear "
        "parameters) and save a physically smaller model; --method then takes the structured scores.",
    )
    prune.add_argument("--model", required=True, type=_text, help=f"the model to prune: {MODEL_HELP}")
    prune.add_argument(
        "--method",
        required=True,
        type=_method,
        help=f"without --structured, one of {', '.join(METHODS)}: ours: masks fitted to the layer's true "
        "attention (projected descent); wanda, sparsegpt, magnitude: the linear baselines on the same "
        f"inputs. With --structured, one of {', '.join(STRUCTURED_METHODS)}: the score of each head and "
        "channel: numerical (arXiv 2412.12441, closed form of its Newton step), flap (fluctuation), "
        "wanda-sp, magnitude (L2 norm of the channel's o_proj/down_proj weights), random (seeded by --seed)",
    )
    prune.add_argument(
        "--sparsity",
        required=True,
        type=_sparsity,
        help="R in [0, 1): the fraction of each pruned weight (q_proj/k_proj, or the layers of --scope) set to zero "
        "(at least one weight per row must be kept: round(R·d) < d); with --structured, the fraction "
        "of the attention+MLP linear parameters removed (the nearest count whole heads and channels reach)",
    )
    prune.add_argument(
        "--calib",
        required=True,
        type=_calib,
        help=f"calibration text: {DATA_HELP}{', '.join(CALIB_DATASETS)} (its calibration split)",
    )
    prune.add_argument(
        "--out",
        required=True,
        type=_text,
        help="folder to write the pruned model, its tokenizer and the summary; it must not "
        "exist or be empty, unless --overwrite",
    )
    prune.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it holds a model already (replaced whole, at the end)",
    )
    prune.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run with the same arguments from its last finished layer "
        "(kept in the hidden folder beside --out); with --resume a failed run keeps them too",
    )
    prune.add_argument(
        "--n-calibration",
        type=_positive_int,
        default=8,
        help="number of calibration sequences N (default 8, as the paper)",
    )
    prune.add_argument("--seq-len", type=_seq_len, default=512, help="tokens per calibration sequence T (default 512)")
    prune.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed of the random calibration (and --n-validation) windows, of the refit's minibatch order "
        "with --objective, and of --structured --method random (default 0)",
    )
    prune.add_argument(
        "--layers", type=_layers, default=None, help="comma-separated layer indices to prune (default: all)"
    )
    prune.add_argument(
        "--capture",
        choices=CAPTURES,
        default=None,
        help="inputs of each layer from the model as pruned so far (sequential, default, "
        "as Wanda and SparseGPT) or from the dense model",
    )
    _ours_options(prune)
    _reconstruction_options(prune)
    _structured_options(prune)
    _common(prune)
    evaluate = sub.add_parser(
        "eval",
        help="perplexity of a model on a text",
        description="Perplexity (exp of the mean token NLL) on consecutive "
        "windows of the text, as Wanda and SparseGPT report it.",
    )
    evaluate.add_argument("--model", required=True, type=_text, help=f"the model to evaluate: {MODEL_HELP}")
    evaluate.add_argument(
        "--data", required=True, type=_text, help=f"evaluation text: {DATA_HELP}{', '.join(DATASETS)}"
    )
    evaluate.add_argument(
        "--split", default="evaluation", type=_text, help="the split of a named data set (default evaluation)"
    )
    evaluate.add_argument(
        "--seq-len",
        type=_seq_len,
        default=512,
        help="tokens per window (default 512; at most the model's context length)",
    )
    evaluate.add_argument(
        "--max-sequences", type=_positive_int, default=None, help="at most this many windows (default: all)"
    )
    evaluate.add_argument("--summary", default=None, type=_text, help="also write the JSON summary to this file")
    _common(evaluate)
    _speed_parser(sub)
    return parser


def _speed_parser(sub) -> None:
    speed = sub.add_parser(
        "speed",
        help="prefill and decode speed, size and peak memory of checkpoints",
        description="Measure each checkpoint folder (dense, or sliced by prune --structured) in a fresh "
        "process on the CPU, batch 1: prefill tokens/s of one forward pass over a prompt, decode tokens/s of "
        "greedy generation with the KV cache after a 32-token prompt (a step then costs about reading the "
        "weights), bytes of its *.safetensors and the process's peak memory. Prints one row per model with "
        "the decode speedup over the first folder and its bound, the ratio of parameter counts.",
    )
    speed.add_argument(
        "folders",
        nargs="+",
        type=_text,
        metavar="FOLDER",
        help=f"checkpoint folders (or {OFFLINE_MODEL!r}, the offline model); the first is the reference",
    )
    speed.add_argument("--prompt-len", type=_positive_int, default=512, help="prefill prompt tokens (default 512)")
    speed.add_argument("--new-tokens", type=_positive_int, default=128, help="tokens decoded (default 128)")
    speed.add_argument("--repeats", type=_positive_int, default=3, help="timed runs per speed, median (default 3)")
    speed.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    speed.add_argument(
        "--json", dest="json_out", metavar="OUT", default=None, type=_text, help="also write the results as JSON"
    )


def _ours_options(prune: argparse.ArgumentParser) -> None:
    prune.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help=f"ours: descent steps per layer (default {OURS_DEFAULTS['steps']}, "
        f"{REFIT_DEFAULTS['steps']} with --support); with --objective: Adam steps of the refit per layer "
        f"(default {REFIT.steps})",
    )
    prune.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help=f"ours: Adam step size on the masks (default {OURS_DEFAULTS['lr']}, "
        f"{REFIT_DEFAULTS['lr']} decaying to 0 with --support); with --objective: the refit's constant "
        f"Adam step size on the kept weights (default {REFIT.lr:g})",
    )
    prune.add_argument(
        "--output",
        choices=("reweighted", "mask-only"),
        default=None,
        help="ours: keep the learned scale of the kept weights (B∘M∘W) or not (B∘W)",
    )
    prune.add_argument(
        "--selection",
        choices=("projected", "straight-through"),
        default=None,
        help="ours: how the hard mask is fitted (straight-through needs --output mask-only)",
    )
    prune.add_argument(
        "--support",
        choices=LINEAR,
        default=None,
        help="ours: keep this linear method's support and weights, refit only the kept weights",
    )
    prune.add_argument(
        "--anchor",
        type=_nonnegative_float,
        default=None,
        help="ours: μ ≥ 0, the pull of the masks toward 1 (the dense weights); with --objective: μ ≥ 0, "
        "the pull of the kept weights toward the linear method's values, (μ/2)·‖W̃ − W_lin‖²/‖W_lin‖² "
        f"(default {REFIT.anchor:g}: early stopping is the guard)",
    )
    prune.add_argument(
        "--lam", type=_nonnegative_float, default=None, help="ours: λ ≥ 0, the paper's (λ/2)‖M‖² regulariser"
    )
    prune.add_argument(
        "--sequences-per-step",
        type=_positive_int,
        default=None,
        help=f"ours: calibration sequences per descent step (default "
        f"{OURS_DEFAULTS['sequences_per_step']}: stochastic steps); with --objective: calibration sequences "
        f"per refit step (default {REFIT.sequences_per_step})",
    )

    prune.add_argument(
        "--query-rows",
        choices=QUERY_ROWS,
        default=None,
        help=f"ours: the query rows of each descent step's error, all of them or one half of them in "
        f"turn (half the attention work a step; default {OURS_DEFAULTS['query_rows']}, "
        f"{REFIT_DEFAULTS['query_rows']} with --support)",
    )


def _reconstruction_options(prune: argparse.ArgumentParser) -> None:
    group = prune.add_argument_group(
        "attention-aware reconstruction (--objective, --scope)",
        "A linear --method (wanda, sparsegpt, magnitude) chooses the support of each layer; with "
        "--objective the kept weights are then refitted additively (B∘W̃, the support never moves) by "
        "Adam on that objective, layer by layer on the inputs of the model as pruned so far; the refit "
        "takes --steps, --lr, --anchor and --sequences-per-step (not the other options of ours).",
    )
    group.add_argument(
        "--objective",
        choices=tuple(OBJECTIVES),
        default=None,
        help="refit the kept weights on this objective of each layer (relative to the dense layer): "
        "output: the attention block's output, which weighs the attention error by what the layer "
        "passes on (the recommended choice for q/k and the one for --scope qkvo); kl: the row KL "
        "divergence of the attention probabilities (D²Prune's); frobenius: the paper's objective, "
        "‖P̃ − P‖²_F of the attention probabilities; block: the whole decoder block's output (needed "
        "for --scope all). Only with a linear --method: ours chooses its own support on the paper's "
        "objective (default: no refit, the linear method alone)",
    )
    group.add_argument(
        "--scope",
        choices=tuple(SCOPES),
        default=None,
        help="the linear layers of each decoder block that are pruned: qk (default): q_proj, k_proj; "
        "qkvo: the attention block (q/k/v/o_proj); all: every linear layer, the MLP's too. The "
        "--objective must read them all (output or block for qkvo, block for all); --method ours: "
        "qk only. Without --objective, the linear method alone on those layers",
    )
    group.add_argument(
        "--n-validation",
        type=_count,
        default=None,
        help=f"with --objective: held-out sequences (of --seq-len tokens) from the heldout split of --calib, "
        f"never its calibration split, for early stopping: the refit is checked on them before its first "
        f"step and every {REFIT.check_every} steps, and the best weights are kept, never worse there than "
        f"the linear method's (default {VALIDATION_DEFAULT}; 0: no early stopping, the last step's "
        "weights). A local .txt --calib has no held-out split: pass --n-validation 0 with it",
    )
    group.add_argument(
        "--refit-window",
        choices=WINDOWS,
        default=None,
        help="with --objective: what the refit moves. all: the kept weights of the pruned layers and every "
        "dense layer the objective reads (q/k on output: v_proj and o_proj too, which stay dense); it fitted "
        "held-out in-domain text better than the kept weights alone and tied out of domain (chapter 11). "
        f"pruned: the kept weights alone (default {REFIT.window}, RefitConfig's)",
    )
    group.add_argument(
        "--damping",
        type=_nonnegative_float,
        default=None,
        help="with --method sparsegpt and --objective or --scope: SparseGPT's dampening λ of the support, "
        "λ·mean(diag H) added to the diagonal of H = XᵀX (a ridge that leans the support toward the weights' "
        f"magnitudes). Default with --objective: {REFIT.damping:g} (the recommended refit's; its refit "
        "transferred to text unlike the calibration's better than from SparseGPT's own support, chapter 11); "
        "without: SparseGPT's published 0.01",
    )


def _structured_options(prune: argparse.ArgumentParser) -> None:
    group = prune.add_argument_group(
        "structured pruning (arXiv 2412.12441)",
        "Whole heads and MLP channels of every layer, scored from one dense pass on the calibration "
        "sequences; --layers, --capture, --resume, --objective, --scope, --n-validation, --refit-window and the "
        "options of ours do not apply.",
    )
    group.add_argument(
        "--structured",
        action="store_true",
        help="remove whole attention heads and MLP channels (a physically smaller model) instead of "
        "q/k weights; changes which --method names are valid",
    )
    group.add_argument(
        "--allocation",
        choices=ALLOCATIONS,
        default=None,
        help="global (default): one ranking of all layers' heads and channels, cut at R of the "
        "parameters; uniform: every layer removes round(R·n) of its heads and channels",
    )
    group.add_argument(
        "--compensation",
        choices=COMPENSATIONS,
        default=None,
        help="what the kept o_proj/down_proj columns get: refit (default: least-squares refit on the "
        "calibration inputs), bias (FLAP's mean compensation as a bias), none",
    )
    group.add_argument(
        "--gqa",
        choices=GQA_RULES,
        default=None,
        help="grouped-query attention: query (default) removes query heads equally from every KV "
        "group, KV heads stay; group removes whole KV groups (their query heads and k/v rows)",
    )
    group.add_argument(
        "--min-heads", type=_positive_int, default=None, help="query heads every layer keeps at least (default 1)"
    )
    group.add_argument(
        "--min-channels", type=_positive_int, default=None, help="MLP channels every layer keeps at least (default 1)"
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", type=_device, help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="sequences per forward pass (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars (Hugging Face's too)")


OURS_OPTIONS = ("steps", "lr", "output", "selection", "support", "anchor", "lam", "sequences_per_step", "query_rows")
"""The options of ``prune`` for ours: fields of :class:`attnprune.llm.prune.FitConfig` (same names)."""
REFIT_OPTIONS = ("steps", "lr", "anchor", "sequences_per_step")
"""The options of ours that ``--objective`` takes too, for its refit: fields of
:class:`attnprune.llm.refit.RefitConfig` (same names)."""
REFIT = RefitConfig()
"""The refit's defaults (those of :class:`~attnprune.llm.refit.RefitConfig`)."""
VALIDATION_DEFAULT = 4
"""``--n-validation`` when not given (with ``--objective``)."""


# -- errors that name the flag -------------------------------------------------------------------
LIBRARY_NAMES = {"seq_len": "--seq-len", "max_sequences": "--max-sequences", "n_sequences": "--n-calibration"}


@contextlib.contextmanager
def _about(flag: str, value, *names: str, **other_flags: str):
    """Turn a library error into a :class:`CommandError` about ``flag``: a message that starts with
    one of the library's parameter ``names`` has it replaced by the flag, else is prefixed by it
    (and the library's names in :data:`LIBRARY_NAMES` become the flags'); one that starts with a
    name in ``other_flags`` is about that flag."""
    try:
        yield
    except CommandError:
        raise
    except (ValueError, OSError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        text = re.sub(rf"\b({'|'.join(LIBRARY_NAMES)})\b=?", lambda m: LIBRARY_NAMES[m[1]] + " ", text).rstrip()
        for name, named in [(name, flag) for name in names] + list(other_flags.items()):
            if text.startswith((f"{name} ", f"{name}:")):
                raise CommandError(f"{named}{text[len(name) :]}") from error
        raise CommandError(f"{flag} {value!r}: {text}") from error


def _check_against_model(args: argparse.Namespace, config) -> None:
    """The arguments that depend on the model's depth, width and context length (from its config)."""
    from .core.masks import n_pruned
    from .llm.batches import context_length

    depth, width = config.num_hidden_layers, config.hidden_size
    beyond = [i for i in getattr(args, "layers", None) or [] if i >= depth]
    if beyond:
        raise CommandError(f"--layers {beyond}: the model has {depth} layers (indices 0 to {depth - 1})")
    sparsity = getattr(args, "sparsity", None)
    if sparsity is not None and not getattr(args, "structured", False) and n_pruned(width, sparsity) >= width:
        # refused, not warned: every q/k weight zero makes each head's attention uniform, whatever the input
        raise CommandError(
            f"--sparsity {sparsity:g} keeps no weight: round({sparsity:g}·{width}) = {width} zeros in every "
            f"q_proj/k_proj row of width d = {width}, so every head would attend uniformly; "
            f"use a sparsity below {(width - 0.5) / width:.6g}"
        )
    context = context_length(config)
    if context is not None and args.seq_len > context:
        raise CommandError(
            f"--seq-len {args.seq_len} is longer than the model's context length "
            f"(max_position_embeddings={context}); use at most {context}"
        )


def _check_writable(flag: str, path: Path) -> None:
    """``path`` can be created: its nearest existing ancestor is a folder we may write in."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CommandError(f"{flag} {str(path)!r}: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CommandError(f"{flag} {str(path)!r}: no permission to write in {str(ancestor)!r}")


def _pause(point: str) -> None:
    """The test-only pause (:data:`PAUSE_AT`)."""
    if os.environ.get(PAUSE_AT) == point:
        sys.stderr.write(f"attnprune: test pause at {point}\n")
        sys.stderr.flush()
        os.environ.pop(PAUSE_AT)  # once per run
        time.sleep(float(os.environ.get("ATTNPRUNE_TEST_PAUSE_SECONDS", "30")))


def _hf_progress(enabled: bool):
    """Hugging Face's progress bars (e.g. "Writing model shards") on or off for this block."""
    from .llm.assets import quiet_loading

    return contextlib.nullcontext() if enabled else quiet_loading()


# -- the output folder: checked first, written whole, renamed into place -------------------------
class Output:
    """``--out``: checked before anything is loaded; the checkpoint is written into the hidden folder
    :data:`PARTIAL` beside it and renamed into place by :meth:`commit`; the finished layers are kept
    in its ``resume/`` for ``--resume``. :meth:`discard` removes what a failed run wrote."""

    def __init__(self, text: str, *, overwrite: bool, resume: bool, model: str) -> None:
        self.path = Path(os.path.abspath(Path(text).expanduser()))
        self.resume = resume
        if self.path == self.path.parent or self.path in Path.cwd().parents or self.path == Path.cwd():
            raise CommandError(f"--out {text!r} is the current folder or one above it; name a new folder")
        self.partial = self.path.parent / f".{self.path.name}{PARTIAL}"
        self.layers = self.partial / "resume"
        if self.path.exists():
            self._check_existing(text, overwrite, model)
        _check_writable("--out", self.path)
        if self.partial.exists() and not resume:
            if any(self.layers.glob("layer-*.safetensors")):
                raise CommandError(
                    f"--out {text!r}: an interrupted earlier run left its finished layers in {str(self.partial)!r}; "
                    "rerun with --resume to continue it, or delete that folder"
                )
            shutil.rmtree(self.partial)
        try:
            self.layers.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CommandError(f"--out {text!r}: cannot create {str(self.partial)!r} ({error})") from error

    def _check_existing(self, text: str, overwrite: bool, model: str) -> None:
        if not self.path.is_dir():
            raise CommandError(f"--out {text!r} is a file, not a folder; name a folder for the pruned model")
        if Path(model).expanduser().exists() and Path(model).expanduser().resolve() == self.path.resolve():
            raise CommandError(f"--out {text!r} is the --model folder; write the pruned model to another folder")
        if any(self.path.iterdir()):
            if not overwrite:
                raise CommandError(f"--out {text!r} is not empty; pass --overwrite to replace it, or name a new folder")
            if not (self.path / "config.json").is_file():
                raise CommandError(
                    f"--out {text!r} holds no model (no config.json): --overwrite replaces only "
                    "a model folder; name a new folder"
                )

    # -- the finished layers (resume) --
    def check_run(self, run: dict, *, record_it: bool) -> None:
        """Resuming, refuse other arguments than the finished layers were made with; ``record_it``:
        record them if there is no record yet (and delete stray layers)."""
        record = self.layers / "run.json"
        if record.is_file():
            earlier = json.loads(record.read_text(encoding="utf-8"))
            changed = {key: (earlier.get(key), value) for key, value in run.items() if earlier.get(key) != value}
            if changed:
                what = "; ".join(f"{key}: {old!r} then, {new!r} now" for key, (old, new) in sorted(changed.items()))
                raise CommandError(
                    f"--resume: the finished layers in {str(self.partial)!r} come from a run with "
                    f"other arguments ({what}); rerun with the same arguments, or delete that folder"
                )
        elif record_it:
            for stale in self.layers.glob("layer-*"):
                stale.unlink()
            write_json(record, run)

    def finished_layers(self, device, names: tuple[str, ...] | None = None) -> dict:
        """The finished layers: layer → (W_q, W_k) as ``prune_model`` saved them (files with
        ``q_proj``/``k_proj``), or with ``names`` (short names of
        :data:`~attnprune.llm.objectives.MODULES`) layer → {name: weight} as ``reconstruct_model`` did."""
        from safetensors.torch import load_file

        done = {}
        for path in sorted(self.layers.glob("layer-*.safetensors")):
            try:
                tensors = load_file(path, device=str(device))
                if names is None:
                    done[int(path.stem.split("-")[1])] = (tensors["q_proj"], tensors["k_proj"])
                elif sorted(tensors) != sorted(names):
                    raise ValueError(f"it holds {sorted(tensors)}, not the weights {sorted(names)}")
                else:
                    done[int(path.stem.split("-")[1])] = {name: tensors[name] for name in names}
            except Exception as error:  # safetensors' SafetensorError, a missing key, a bad name
                raise CommandError(
                    f"--resume: cannot read the finished layer {str(path)!r} ({error}); "
                    f"delete {str(self.partial)!r} and start again"
                ) from error
        return done

    def save_layer(self, layer: int, weights, fit=None) -> None:
        """One finished layer, atomically (written then renamed): ``weights`` (W_q, W_k) and its
        ``fit`` from ``prune_model``, or {short name: weight} from ``reconstruct_model``."""
        from safetensors.torch import save_file

        path = self.layers / f"layer-{layer:04d}.safetensors"
        if isinstance(weights, dict):
            tensors = {name: W.detach().contiguous() for name, W in weights.items()}
            metadata = {"names": ",".join(weights)}
        else:
            tensors = {"q_proj": weights[0].detach().contiguous(), "k_proj": weights[1].detach().contiguous()}
            metadata = {"fit": json.dumps(asdict(fit))}
        save_file(tensors, path.with_suffix(".tmp"), metadata=metadata)
        os.replace(path.with_suffix(".tmp"), path)
        _pause("layer")

    # -- the checkpoint --
    def commit(self, model, tokenizer, summary: dict, *, progress: bool) -> None:
        """Write model, tokenizer and summary into the hidden folder, then rename it to ``--out``."""
        staging = self.partial / "model"
        shutil.rmtree(staging, ignore_errors=True)
        with _hf_progress(progress):
            model.save_pretrained(staging)
        _pause("save")
        tokenizer.save_pretrained(staging)
        write_json(staging / SUMMARY, summary)
        _readable(staging)
        if self.path.exists():  # an empty folder, or a model to replace (--overwrite): moved aside first
            self.path.rename(self.partial / "previous")
        staging.rename(self.path)
        shutil.rmtree(self.partial)

    def discard(self) -> bool:
        """After a failure: remove the hidden folder, but keep the finished layers with --resume.
        True if finished layers are kept."""
        keep = self.resume and any(self.layers.glob("layer-*.safetensors"))
        if keep:
            shutil.rmtree(self.partial / "model", ignore_errors=True)
        else:
            shutil.rmtree(self.partial, ignore_errors=True)
        return keep


def _readable(folder: Path) -> None:
    """Files as the umask says (0644 usually): safetensors writes its file 0600, the rest 0644."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


# -- the commands --------------------------------------------------------------------------------
def _load(name: str, config, device: str):
    """A model and its tokenizer: a sliced checkpoint (``structured_layers`` in its config.json)
    through :func:`attnprune.structured.prune.load_pruned`, any other through ``load_model``."""
    from .structured.prune import is_sliced, load_pruned

    return (load_pruned if is_sliced(config) else load_model)(name, device=device)


def _check_method(args: argparse.Namespace) -> None:
    """--structured decides which --method names and which options apply."""
    structured_options = [key for key in STRUCTURED_OPTIONS if getattr(args, key) is not None]
    if not args.structured:
        if args.method not in METHODS:
            raise CommandError(
                f"--method {args.method!r} is a structured score: add --structured (heads and channels), "
                f"or prune q/k weights with one of {', '.join(METHODS)}"
            )
        if structured_options:
            flags = ", ".join(f"--{key.replace('_', '-')}" for key in structured_options)
            raise CommandError(f"{flags} apply to --structured only")
        return
    if args.method not in STRUCTURED_METHODS:
        raise CommandError(
            f"--method {args.method!r} prunes q/k weights, not heads and channels; with --structured "
            f"use one of {', '.join(STRUCTURED_METHODS)}"
        )
    if args.resume:
        raise CommandError(
            "--resume does not apply to --structured: it scores all layers from one dense pass, so there "
            "are no finished layers to resume from; rerun the command without --resume"
        )
    other = ("layers", "capture", "objective", "scope", "n_validation", "refit_window", "damping", *OURS_OPTIONS)
    other = [key for key in other if getattr(args, key) is not None]
    if other:
        flags = ", ".join(f"--{key.replace('_', '-')}" for key in other)
        raise CommandError(f"{flags} do not apply to --structured (every layer is scored from one dense pass)")


STRUCTURED_NAMES = {
    "allocation='global'": "--allocation global",
    "ratio": "--sparsity",
    "score": "--method",
    "min_heads": "--min-heads",
    "min_channels": "--min-channels",
    "allocation": "--allocation",
    "compensation": "--compensation",
    "gqa": "--gqa",
    "batch_size": "--batch-size",
}
"""The names of :class:`~attnprune.structured.prune.StructuredConfig` in its errors → the flags."""


def _structured_error(error: ValueError) -> CommandError:
    pattern = "|".join(re.escape(name) for name in STRUCTURED_NAMES)
    text = re.sub(rf"(?<![\w-])({pattern})(?![\w-])", lambda m: STRUCTURED_NAMES[m[1]], _one_line(error))
    return CommandError(text)


def prune_command(args: argparse.Namespace) -> dict:
    from .llm.models import model_config
    from .llm.prune import PruneConfig

    _check_method(args)
    if args.structured:
        return _prune_structured(args)
    _check_reconstruction(args)
    args.capture = args.capture or "sequential"
    args.scope = args.scope or "qk"
    if _reconstructs(args):
        config = _reconstruct_config(args)
    else:
        options = {key: getattr(args, key) for key in OURS_OPTIONS if getattr(args, key) is not None}
        try:
            config = PruneConfig.from_options(
                args.method,
                args.sparsity,
                layers=args.layers,
                capture=args.capture,
                batch_size=args.batch_size,
                **options,
            )
        except ValueError as error:  # a combination of options: the library's names are the flags' names
            flags = "|".join(("batch_size", *OURS_OPTIONS))
            raise CommandError(
                re.sub(rf"\b({flags})\b", lambda m: "--" + m[1].replace("_", "-"), str(error))
            ) from error
    out = Output(args.out, overwrite=args.overwrite, resume=args.resume, model=args.model)
    args.output_folder = out
    with _about("--model", args.model, "name_or_path"):
        model_cfg = model_config(args.model)
        _check_against_model(args, model_cfg)
    from .structured.prune import is_sliced

    if is_sliced(model_cfg):
        raise CommandError(
            f"--model {args.model!r} is a structured-pruned (sliced) checkpoint: q/k pruning needs a dense "
            "model; prune the dense model, or this one again with --structured"
        )
    return _prune(args, config, out)


def _reconstructs(args: argparse.Namespace) -> bool:
    """Whether ``prune`` runs :func:`attnprune.llm.refit.reconstruct_model`: with --objective, or a
    linear method on more than q/k (a linear method on q/k alone is ``prune_model``'s, as before)."""
    return args.objective is not None or (args.scope or "qk") != "qk"


def _flags(keys) -> str:
    return ", ".join(f"--{key.replace('_', '-')}" for key in sorted(keys))


def _check_reconstruction(args: argparse.Namespace) -> None:
    """The rules of --objective, --scope and --n-validation, and which options of ours apply."""
    if args.objective is not None and args.method == "ours":
        raise CommandError(
            f"--objective {args.objective} does not apply to --method ours, which chooses its own support on "
            f"the paper's objective: to refit on --objective, pass a linear method as --method ({', '.join(LINEAR)})"
        )
    if args.method == "ours" and args.scope not in (None, "qk"):
        raise CommandError(
            f"--scope {args.scope} does not apply to --method ours, which prunes q_proj/k_proj only (--scope qk); "
            f"to prune more layers, pass a linear method as --method ({', '.join(LINEAR)})"
        )
    if args.n_validation is not None and args.objective is None:
        raise CommandError(
            "--n-validation applies to --objective only (held-out sequences of its refit's early stopping)"
        )
    if args.refit_window is not None and args.objective is None:
        raise CommandError("--refit-window applies to --objective only (what its refit moves)")
    if args.damping is not None and (args.method != "sparsegpt" or not _reconstructs(args)):
        raise CommandError(
            "--damping applies to --method sparsegpt with --objective or --scope qkvo/all (the support of the "
            "reconstruction); SparseGPT on q/k alone keeps its published 0.01"
        )
    given = [key for key in OURS_OPTIONS if getattr(args, key) is not None]
    allowed = OURS_OPTIONS if args.method == "ours" else REFIT_OPTIONS if args.objective is not None else ()
    wrong = [key for key in given if key not in allowed]
    if wrong and args.objective is not None:
        raise CommandError(
            f"{_flags(wrong)} apply to --method ours only, not to the refit of --objective "
            f"(it takes {_flags(REFIT_OPTIONS)})"
        )
    if wrong:
        also = ", or to the refit of --objective" if set(wrong) <= set(REFIT_OPTIONS) else ""
        raise CommandError(f"{_flags(wrong)} apply to --method ours only{also}")
    if _reconstructs(args) and args.capture == "dense":
        raise CommandError(
            f"--capture dense does not apply to --objective or --scope {args.scope or 'qk'}: the reconstruction "
            "takes each layer's inputs from the model as pruned so far (--capture sequential)"
        )
    if args.objective is not None:
        args.n_validation = VALIDATION_DEFAULT if args.n_validation is None else args.n_validation


RECONSTRUCT_NAMES = {
    "objective": "--objective",
    "scope": "--scope",
    "support": "--method",
    "sparsity": "--sparsity",
    "layers": "--layers",
    "batch_size": "--batch-size",
    "steps": "--steps",
    "lr": "--lr",
    "anchor": "--anchor",
    "sequences_per_step": "--sequences-per-step",
    "seed": "--seed",
    "damping": "--damping",
}
"""The names of :class:`~attnprune.llm.refit.ReconstructConfig` and
:class:`~attnprune.llm.refit.RefitConfig` in their errors → the flags."""


def _reconstruct_config(args: argparse.Namespace):
    """The :class:`~attnprune.llm.refit.ReconstructConfig` of the arguments; its errors (e.g. an
    objective that does not read every layer of the scope) as one line naming the flags."""
    from .llm.refit import ReconstructConfig

    refit = None
    try:
        if args.objective is not None:
            options = {key: getattr(args, key) for key in REFIT_OPTIONS if getattr(args, key) is not None}
            window = {} if args.refit_window is None else {"window": args.refit_window}
            refit = RefitConfig(objective=args.objective, seed=args.seed, **options, **window)
        layers = None if args.layers is None else tuple(args.layers)
        config = ReconstructConfig(
            args.method, args.sparsity, args.scope, refit, layers, args.batch_size, damping=args.damping
        )
    except ValueError as error:
        pattern = "|".join(re.escape(name) for name in RECONSTRUCT_NAMES)
        text = re.sub(rf"(?<![\w-])({pattern})(?= '| must|=)", lambda m: RECONSTRUCT_NAMES[m[1]], _one_line(error))
        raise CommandError(text) from error
    if args.n_validation and args.calib not in DATASETS:  # load_texts would give the file itself as "heldout"
        raise CommandError(
            f"--calib {args.calib!r} is a local file, which has no held-out split for the early stopping of "
            f"--objective (--n-validation {args.n_validation}): pass --n-validation 0 (no early stopping), "
            f"or calibrate on one of {', '.join(CALIB_DATASETS)}"
        )
    return config


def _prune_structured(args: argparse.Namespace) -> dict:
    """``prune --structured``: check everything, load, prune heads and channels, write the sliced model."""
    from .llm.models import model_config
    from .structured.prune import StructuredConfig, check_reachable, layer_shapes_of_config, prune_structured

    options = dict(STRUCTURED_OPTIONS)
    options |= {key: getattr(args, key) for key in STRUCTURED_OPTIONS if getattr(args, key) is not None}
    try:
        config = StructuredConfig(
            args.sparsity, score=args.method, seed=args.seed, batch_size=args.batch_size, **options
        )
    except ValueError as error:
        raise _structured_error(error) from error
    out = Output(args.out, overwrite=args.overwrite, resume=False, model=args.model)
    args.output_folder = out
    with _about("--model", args.model, "name_or_path", "model"):
        model_cfg = model_config(args.model)
        _check_against_model(args, model_cfg)
        shapes = layer_shapes_of_config(model_cfg)
    try:
        check_reachable(shapes, config)  # a ratio that would empty a layer, from the sizes alone
    except ValueError as error:
        raise _structured_error(error) from error
    with _about("--calib", args.calib, "name"):
        texts = load_texts(args.calib, "calibration")
    with _about("--model", args.model, "name_or_path", "model"):
        model, tokenizer = _load(args.model, model_cfg, args.device)
    with _about("--calib", args.calib):
        calib = token_sequences(tokenizer, texts, args.n_calibration, args.seq_len, seed=args.seed)
    _check_vocabulary(args, model, calib)
    sliced, report = prune_structured(model, calib, config)
    del model
    details = report.to_dict()
    settings = details.pop("config")
    summary = {
        "command": "prune",
        "structured": True,
        "model": args.model,
        "method": settings.pop("score"),
        "sparsity": settings.pop("ratio"),
        "options": settings,
        "calib": args.calib,
        "seed": settings.pop("seed"),
        "out": args.out,
        **details,
        "versions": versions(),
    }
    out.commit(sliced, tokenizer, summary, progress=not args.no_progress)
    return summary


def _check_vocabulary(args: argparse.Namespace, model, calib: torch.Tensor) -> None:
    vocabulary = model.get_input_embeddings().num_embeddings
    if int(calib.max()) >= vocabulary:
        raise CommandError(
            f"--model {args.model!r}: its tokenizer gives token ids up to {int(calib.max())}, "
            f"beyond the model's vocabulary of {vocabulary}: the tokenizer is not this model's"
        )


def _prune(args: argparse.Namespace, config, out: Output) -> dict:
    from .llm.prune import prune_model, set_qk_weights
    from .llm.refit import ReconstructConfig

    run = {
        key: value
        for key, value in vars(args).items()
        if key not in ("no_progress", "overwrite", "resume", "output_folder", "out")
    }
    run["model"] = os.path.abspath(args.model) if Path(args.model).expanduser().exists() else args.model
    run["calib"] = os.path.abspath(args.calib) if args.calib not in DATASETS else args.calib
    out.check_run(run, record_it=False)  # before loading: a resume with other arguments is refused at once
    with _about("--calib", args.calib, "name"):
        texts = load_texts(args.calib, "calibration")
        heldout = load_texts(args.calib, "heldout") if getattr(args, "n_validation", None) else None
    with _about("--model", args.model, "name_or_path"):
        model, tokenizer = load_model(args.model, device=args.device)
    with _about("--calib", args.calib):
        calib = token_sequences(tokenizer, texts, args.n_calibration, args.seq_len, seed=args.seed)
        validation = None
        if heldout is not None:  # as notebooks/08_deployable.md draws them
            validation = token_sequences(tokenizer, heldout, args.n_validation, args.seq_len, seed=args.seed)
    _check_vocabulary(args, model, calib if validation is None else torch.cat([calib, validation]))
    run["calibration_sha256"] = hashlib.sha256(calib.numpy().tobytes()).hexdigest()
    if validation is not None:
        run["validation_sha256"] = hashlib.sha256(validation.numpy().tobytes()).hexdigest()
    out.check_run(run, record_it=True)
    if isinstance(config, ReconstructConfig):
        return _reconstruct(args, config, out, model, tokenizer, calib, validation)
    done = out.finished_layers(args.device) if args.resume else {}
    weights, report = prune_model(
        model, calib, config, progress=not args.no_progress, done=done, on_layer=out.save_layer
    )
    set_qk_weights(model, weights)  # this model is ours to change: it is written out pruned
    summary = {
        "command": "prune",
        "model": args.model,
        "calib": args.calib,
        "seed": args.seed,
        "out": args.out,
        **report.to_dict(),
        "resumed_layers": sorted(done),
        "versions": versions(),
    }
    out.commit(model, tokenizer, summary, progress=not args.no_progress)
    return summary


def _reconstruct(args: argparse.Namespace, config, out: Output, model, tokenizer, calib, validation) -> dict:
    """``prune`` with --objective or --scope: :func:`attnprune.llm.refit.reconstruct_model`, its
    weights written into the model (ours to change), then the checkpoint."""
    from .core.solver import zero_fraction
    from .llm.models import decoder_layers
    from .llm.refit import reconstruct_model, refitted_names, write_weights

    names = SCOPES[config.scope]  # the pruned layers (a refit may also change the window's dense ones)
    done = out.finished_layers(args.device, refitted_names(config)) if args.resume else {}
    weights, report = reconstruct_model(
        model,
        calib,
        config,
        validation_ids=validation,
        progress=not args.no_progress,
        done=done,
        on_layer=out.save_layer,
    )
    write_weights(model, weights)  # this model is ours to change: it is written out pruned
    pruned = [layer_weights[name] for layer_weights in weights.values() for name in names]
    linear = [m.weight for m in decoder_layers(model).modules() if isinstance(m, torch.nn.Linear)]
    by_name = {name: [layer_weights[name] for layer_weights in weights.values()] for name in names}
    summary = {
        "command": "prune",
        "model": args.model,
        "method": args.method,
        "objective": args.objective,
        "scope": config.scope,
        "sparsity": args.sparsity,
        "layers": sorted(weights),
        "calib": args.calib,
        "seed": args.seed,
        "out": args.out,
        **report.to_dict(),
        "sparsity_summary": {
            "pruned_weights": zero_fraction(pruned),
            "by_name": {name: zero_fraction(Ws) for name, Ws in by_name.items()},
            "model_linear_weights": zero_fraction(linear),
        },
        "resumed_layers": sorted(done),
        "versions": versions(),
    }
    out.commit(model, tokenizer, summary, progress=not args.no_progress)
    return summary


def _json_target(flag: str, value: str | None) -> Path | None:
    """The path of a JSON file the command will write (None if ``value`` is None), checked now:
    not a folder, and writable."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        raise CommandError(f"{flag} {value!r} is a folder; name a .json file")
    _check_writable(flag, path)
    return path


def eval_command(args: argparse.Namespace) -> dict:
    from .llm.evaluate import perplexity
    from .llm.models import model_config
    from .structured.prune import is_sliced

    summary_path = _json_target("--summary", args.summary)
    with _about("--model", args.model, "name_or_path"):
        model_cfg = model_config(args.model)
        _check_against_model(args, model_cfg)
    with _about("--data", args.data, "name", split="--split"):
        texts = load_texts(args.data, args.split)
    with _about("--model", args.model, "name_or_path"):
        model, tokenizer = _load(args.model, model_cfg, args.device)
    with _about("--data", args.data):
        ids = evaluation_sequences(tokenizer, texts, args.seq_len, args.max_sequences)
    start = time.perf_counter()
    with _about("--model", args.model):
        ppl = perplexity(model, ids, batch_size=args.batch_size, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    summary = {
        "command": "eval",
        "model": args.model,
        "data": args.data,
        "split": args.split,
        "seq_len": args.seq_len,
        "n_sequences": int(ids.shape[0]),
        "perplexity": ppl,
        "structured": is_sliced(model_cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": seconds,
        "tokens_per_second": ids.numel() / seconds,
        "versions": versions(),
    }
    if args.summary is not None:
        write_json(summary_path, summary)
    return summary


def speed_command(args: argparse.Namespace) -> None:
    """``speed``: check every folder, then measure each in its own process, one table row at a time."""
    from .llm.speed import decode_bound
    from .structured.speed import check_folder, measure_checkpoint

    json_path = _json_target("--json", args.json_out)
    for folder in args.folders:
        with _about("FOLDER", folder, "folder"):
            check_folder(folder)
    print(SPEED_HEADER, flush=True)
    rows = []
    for folder in args.folders:
        try:
            report = measure_checkpoint(
                folder,
                prompt_len=args.prompt_len,
                new_tokens=args.new_tokens,
                repeats=args.repeats,
                threads=args.threads,
            )
        except (ValueError, RuntimeError) as error:
            raise CommandError(f"FOLDER {_one_line(error).removeprefix('folder ')}") from error
        first = rows[0] if rows else report.to_dict()
        row = {"folder": folder, **report.to_dict()}
        row["prefill_speedup"] = report.prefill_tokens_per_s / first["prefill_tokens_per_s"]
        row["decode_speedup"] = report.decode_tokens_per_s / first["decode_tokens_per_s"]
        row["decode_bound"] = decode_bound(first["parameters"], report.parameters)
        rows.append(row)
        print(_speed_row(row), flush=True)
    if args.json_out is not None:
        settings = {"prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "repeats": args.repeats}
        write_json(json_path, {"command": "speed", **settings, "models": rows, "versions": versions()})


SPEED_HEADER = (
    "| model | parameters | disk MB | peak MB | prefill tok/s | decode tok/s | decode speedup | bound | speedup/bound |"
    "\n|---|---|---|---|---|---|---|---|---|"
)


def _speed_row(row: dict) -> str:
    megabytes = [f"{row[key] / 1e6:.1f}" for key in ("bytes_on_disk", "peak_memory_bytes")]
    speeds = f"{row['prefill_tokens_per_s']:.1f} | {row['decode_tokens_per_s']:.1f}"
    ratios = (
        f"{row['decode_speedup']:.2f} | {row['decode_bound']:.2f} | {row['decode_speedup'] / row['decode_bound']:.2f}"
    )
    return f"| {row['folder']} | {row['parameters']:,} | {' | '.join(megabytes)} | {speeds} | {ratios} |"


COMMANDS = {"prune": prune_command, "eval": eval_command, "speed": speed_command}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = COMMANDS[args.command]
    prog = f"attnprune {args.command}"
    try:
        with torch.no_grad() if args.command == "eval" else contextlib.nullcontext():
            summary = command(args)
    except (ValueError, OSError) as error:  # CommandError, the library's checks, files, the hub
        kept = _discard(args)
        parser.exit(2, f"{prog}: error: {_one_line(error)}{kept}\n")
    except KeyboardInterrupt:
        kept = _discard(args)
        parser.exit(130, f"{prog}: interrupted{kept}\n")
    except BaseException:
        _discard(args)
        raise
    if summary is not None:  # speed prints its table as it goes
        json.dump(summary, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    return 0


def _discard(args: argparse.Namespace) -> str:
    out = getattr(args, "output_folder", None)
    if out is None or not out.discard():
        return ""
    return f"; the finished layers are kept in {str(out.partial)!r}: rerun the same command with --resume"


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return " ".join(lines) if lines else type(error).__name__


if __name__ == "__main__":
    raise SystemExit(main())
