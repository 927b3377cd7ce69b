"""The ``attnprune`` command: prune a model's q_proj/k_proj weights and evaluate perplexity.

    attnprune prune --model M --method ours|wanda|sparsegpt|magnitude --sparsity R --calib DATA --out DIR
    attnprune eval --model DIR --data DATA

``prune`` loads M, draws the calibration sequences from DATA, prunes the q/k weights of every
layer (or ``--layers``) at sparsity R, writes an ordinary Hugging Face checkpoint (model and
tokenizer) to DIR and prints a JSON summary (also saved as DIR/attnprune_summary.json).
``eval`` prints the perplexity of a model on DATA as JSON. Progress bars go to stderr, the JSON
summary to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from .llm.data import DATASETS, evaluation_sequences, load_texts, token_sequences
from .llm.models import OFFLINE_MODEL, PAPER_MODEL, load_model
from .llm.prune import CAPTURES, LINEAR, METHODS, OURS_DEFAULTS, REFIT_DEFAULTS
from .records.results import versions, write_json

SUMMARY = "attnprune_summary.json"
DATA_HELP = f"one of {', '.join(DATASETS)} or the path of a local UTF-8 .txt file"
MODEL_HELP = (f"{OFFLINE_MODEL!r} (SmolLM2-135M-Instruct, offline), a folder written by "
              f"save_pretrained, or a Hugging Face hub id such as {PAPER_MODEL!r}")


def _layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers must be comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnprune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{prune,eval}")
    prune = sub.add_parser("prune", help="prune the q_proj/k_proj weights of a model and save it",
                           description="Prune the q_proj/k_proj weights of every decoder layer at "
                           "sparsity R (exactly round(R·d) zeros per row) and save the model.")
    prune.add_argument("--model", required=True, help=f"the model to prune: {MODEL_HELP}")
    prune.add_argument("--method", required=True, choices=METHODS,
                       help="ours: masks fitted to the layer's true attention (projected descent); "
                       "wanda, sparsegpt, magnitude: the linear baselines on the same inputs")
    prune.add_argument("--sparsity", required=True, type=float,
                       help="R in [0, 1): the fraction of each q_proj/k_proj weight set to zero")
    prune.add_argument("--calib", required=True, help=f"calibration text: {DATA_HELP} (its calibration split)")
    prune.add_argument("--out", required=True, help="folder to write the pruned model, its tokenizer and the summary")
    prune.add_argument("--n-calibration", type=int, default=8, help="number of calibration sequences N (default 8, as the paper)")
    prune.add_argument("--seq-len", type=int, default=512, help="tokens per calibration sequence T (default 512)")
    prune.add_argument("--seed", type=int, default=0, help="seed of the random calibration windows (default 0)")
    prune.add_argument("--layers", type=_layers, default=None, help="comma-separated layer indices to prune (default: all)")
    prune.add_argument("--capture", choices=CAPTURES, default="sequential",
                       help="inputs of each layer from the model as pruned so far (sequential, default, "
                       "as Wanda and SparseGPT) or from the dense model")
    prune.add_argument("--steps", type=int, default=None,
                       help=f"ours: descent steps per layer (default {OURS_DEFAULTS['steps']}, "
                       f"{REFIT_DEFAULTS['steps']} with --support)")
    prune.add_argument("--lr", type=float, default=None,
                       help=f"ours: Adam step size on the masks (default {OURS_DEFAULTS['lr']}, "
                       f"{REFIT_DEFAULTS['lr']} decaying to 0 with --support)")
    prune.add_argument("--output", choices=("reweighted", "mask-only"), default=None,
                       help="ours: keep the learned scale of the kept weights (B∘M∘W) or not (B∘W)")
    prune.add_argument("--selection", choices=("projected", "straight-through"), default=None,
                       help="ours: how the hard mask is fitted (straight-through needs --output mask-only)")
    prune.add_argument("--support", choices=LINEAR, default=None,
                       help="ours: keep this linear method's support and weights, refit only the kept weights")
    prune.add_argument("--anchor", type=float, default=None, help="ours: μ, the pull of the masks toward 1 (the dense weights)")
    prune.add_argument("--lam", type=float, default=None, help="ours: λ, the paper's (λ/2)‖M‖² regulariser")
    prune.add_argument("--sequences-per-step", type=int, default=None,
                       help=f"ours: calibration sequences per descent step (default "
                       f"{OURS_DEFAULTS['sequences_per_step']}: stochastic steps)")
    _common(prune)
    evaluate = sub.add_parser("eval", help="perplexity of a model on a text",
                              description="Perplexity (exp of the mean token NLL) on consecutive "
                              "windows of the text, as Wanda and SparseGPT report it.")
    evaluate.add_argument("--model", required=True, help=f"the model to evaluate: {MODEL_HELP}")
    evaluate.add_argument("--data", required=True, help=f"evaluation text: {DATA_HELP}")
    evaluate.add_argument("--split", default="evaluation", help="the split of a named data set (default evaluation)")
    evaluate.add_argument("--seq-len", type=int, default=512, help="tokens per window (default 512)")
    evaluate.add_argument("--max-sequences", type=int, default=None, help="at most this many windows (default: all)")
    evaluate.add_argument("--summary", default=None, help="also write the JSON summary to this file")
    _common(evaluate)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


OURS_OPTIONS = ("steps", "lr", "output", "selection", "support", "anchor", "lam", "sequences_per_step")
"""The options of ``prune`` that go to :func:`attnprune.llm.prune.prune_model` for ours (same names)."""


def prune_command(args: argparse.Namespace) -> dict:
    from .llm.prune import prune_model

    options = {key: getattr(args, key) for key in OURS_OPTIONS if getattr(args, key) is not None}
    if options and args.method != "ours":
        flags = ", ".join(f"--{key.replace('_', '-')}" for key in sorted(options))
        raise ValueError(f"{flags} apply to --method ours only")
    model, tokenizer = load_model(args.model, device=args.device)
    texts = load_texts(args.calib, "calibration")
    calib = token_sequences(tokenizer, texts, args.n_calibration, args.seq_len, seed=args.seed)
    report = prune_model(model, calib, args.method, args.sparsity, layers=args.layers, capture=args.capture,
                         batch_size=args.batch_size, progress=not args.no_progress, **options)
    out = Path(args.out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    summary = {"command": "prune", "model": args.model, "calib": args.calib, "seed": args.seed,
               "out": str(out), **report, "versions": versions()}
    write_json(out / SUMMARY, summary)
    return summary


def eval_command(args: argparse.Namespace) -> dict:
    from .llm.evaluate import perplexity

    model, tokenizer = load_model(args.model, device=args.device)
    ids = evaluation_sequences(tokenizer, load_texts(args.data, args.split), args.seq_len, args.max_sequences)
    start = time.perf_counter()
    ppl = perplexity(model, ids, batch_size=args.batch_size, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    summary = {"command": "eval", "model": args.model, "data": args.data, "split": args.split,
               "seq_len": args.seq_len, "n_sequences": int(ids.shape[0]), "perplexity": ppl,
               "seconds": seconds, "tokens_per_second": ids.numel() / seconds, "versions": versions()}
    if args.summary:
        write_json(args.summary, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = prune_command if args.command == "prune" else eval_command
    try:
        with torch.no_grad() if args.command == "eval" else contextlib.nullcontext():
            summary = command(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        parser.exit(2, f"attnprune {args.command}: error: {error}\n")
    json.dump(summary, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
