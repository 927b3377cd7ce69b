"""Tuning run (not a test): the recommended refit's settings judged on held-out text that no
chapter evaluates on, against the baselines given the same calibration data.

    .venv/bin/python scripts/tune_refit.py      # RefitConfig's defaults against three other settings
    .venv/bin/python scripts/tune_refit.py --rhos 0.7 --settings 24:0.002:2 24:0.002:2:1   # mu = 1
    .venv/bin/python scripts/tune_refit.py --calibration generated --settings 24:0.002:2   # self-calibration
    .venv/bin/python scripts/tune_refit.py --damping 0.01 --settings 24:0.002:2   # SparseGPT's own λ

The refit of chapter 11 (SparseGPT's support on q/k, the kept weights refitted on ``--objective``,
early stopping on ``--n-validation`` sequences of Austen's held-out split) is run with every
``--settings`` entry STEPS:LR:SEQUENCES[:ANCHOR] (Adam steps, step size, calibration sequences a
step, and optionally the penalty μ toward SparseGPT's values; ``--window``, ``--target`` and
``--damping`` as ``RefitConfig``'s fields of those names; every other setting at
``RefitConfig``'s default), beside Wanda and SparseGPT (and SparseGPT alone at the refit's λ when
that is not its published 0.01), on ``--n-calibration`` sequences of Austen's calibration split,
at every ρ.
``--calibration generated`` replaces Austen (calibration and early stopping, for every method
alike) by sequences the dense model samples itself (:mod:`attnprune.llm.generate`,
self-calibration); ``mixed`` takes ⌊n/2⌋ of Austen's and samples the rest. Each is scored by
perplexity on the **held-out** splits of Austen (*Northanger Abbey* and *Persuasion*) and of Lee
(``lee.cor``): never the evaluation texts (*Emma*, ``lee_background.cor``) that the book reports,
so a setting chosen here is not chosen on the numbers it is judged by. It prints, per setting and ρ,
the seconds as a multiple of SparseGPT's, the perplexities, the fraction of the best baseline's gap to dense each closes
(:func:`~attnprune.experiments.reconstruction.gap_table`), and each setting's perplexity minus the
first's with its 95% interval, paired over the held-out windows
(:func:`~attnprune.records.noise.perplexity_comparison`). Results go to stdout (a Markdown table)
and to ``--out`` (JSON, with provenance).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TUNING_TEXTS = ("austen", "lee")
CALIBRATION_SOURCES = ("austen", "generated", "mixed")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="model to load (default: the offline model)")
    parser.add_argument("--rhos", nargs="+", type=float, default=[0.5, 0.7], help="q/k ρ (default 0.5 0.7)")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["24:0.002:2", "12:0.002:4", "36:0.002:1", "24:0.003:2"],
        help="STEPS:LR:SEQUENCES[:ANCHOR] settings of the refit (default: RefitConfig's, 24:0.002:2, and three "
        "others; ANCHOR, the penalty mu toward SparseGPT's values, defaults to RefitConfig's, 0)",
    )
    parser.add_argument("--objective", default="output", help="the refit's objective (default: output)")
    parser.add_argument(
        "--target", default="layer", help="what the refit aims at: layer (the dense layer) or model (default: layer)"
    )
    parser.add_argument(
        "--window",
        default="all",
        help="what the refit moves: all (the dense v_proj/o_proj too) or pruned (default: all, RefitConfig's)",
    )
    parser.add_argument(
        "--damping",
        type=float,
        default=None,
        help="SparseGPT's dampening λ of the refit's support (default: RefitConfig's); when not SparseGPT's "
        "published 0.01, SparseGPT alone at this λ is scored too (the support's share of the refit's gain)",
    )
    parser.add_argument(
        "--calibration",
        choices=CALIBRATION_SOURCES,
        default="austen",
        help="calibration and early-stopping text, for every method alike: austen (the chapters'), generated "
        "(sampled from the dense model itself, self-calibration) or mixed (half each; default: austen)",
    )
    parser.add_argument("--n-calibration", type=int, default=8, help="calibration sequences (default 8)")
    parser.add_argument("--n-validation", type=int, default=4, help="early-stopping sequences (default 4)")
    parser.add_argument("--n-tune", type=int, default=8, help="held-out windows per text (default 8)")
    parser.add_argument("--seq-len", type=int, default=512, help="sequence and window length (default 512)")
    parser.add_argument("--out", default=None, help="JSON results file (default _build/tune/refit-<model>.json)")
    args = parser.parse_args(argv)
    try:
        args.settings = [_setting(entry) for entry in args.settings]
    except ValueError:
        parser.error(f"--settings must be STEPS:LR:SEQUENCES[:ANCHOR] entries such as 24:0.002:2, got {args.settings}")
    if not all(
        steps > 0 and lr > 0 and sequences > 0 and (mu is None or mu >= 0) for steps, lr, sequences, mu in args.settings
    ):
        parser.error(f"--settings need STEPS > 0, LR > 0, SEQUENCES > 0 and ANCHOR >= 0, got {args.settings}")
    return args


def _setting(entry: str) -> tuple[int, float, int, float | None]:
    """STEPS:LR:SEQUENCES[:ANCHOR] → (steps, lr, sequences a step, μ or None: RefitConfig's)."""
    steps, lr, sequences, *anchor = entry.split(":")
    if len(anchor) > 1:
        raise ValueError(f"too many fields in {entry!r}")
    return int(steps), float(lr), int(sequences), float(anchor[0]) if anchor else None


def _anchor(mu: float | None) -> dict:
    """RefitConfig's ``anchor`` keyword when ANCHOR was given (none: its default)."""
    return {} if mu is None else {"anchor": mu}


def _label(steps: int, lr: float, sequences: int, anchor: float | None) -> str:
    """The setting's name in the table: ``refit STEPS:LR:SEQUENCES``, with ``:ANCHOR`` when given."""
    return f"refit {steps}:{lr:g}:{sequences}" + ("" if anchor is None else f":{anchor:g}")


def calibration_ids(model, tokenizer, source: str, split: str, n: int, seq_len: int):
    """(n, seq_len) sequences of ``source`` for the calibration (``split`` "calibration") or
    early-stopping ("heldout") set: random windows of Austen's split, sequences the dense model
    samples (seed 0 for calibration, 1 for early stopping, so the two never share a sequence), or
    ⌊n/2⌋ of Austen's then the rest sampled."""
    from attnprune.llm.data import load_texts, token_sequences
    from attnprune.llm.generate import generated_sequences, start_token_id

    n_austen = {"austen": n, "generated": 0, "mixed": n // 2}[source]
    parts = []
    if n_austen:
        parts.append(token_sequences(tokenizer, load_texts("austen", split), n_austen, seq_len))
    if n > n_austen:
        seed = {"calibration": 0, "heldout": 1}[split]
        parts.append(generated_sequences(model, n - n_austen, seq_len, start_id=start_token_id(tokenizer), seed=seed))
    return torch.cat(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from attnprune.experiments.reconstruction import (
        BASELINES,
        REFIT_PIPELINE,
        Setting,
        gap_table,
        perplexity_rows,
        run_settings,
        time_multiples,
    )
    from attnprune.llm.data import evaluation_sequences, load_texts
    from attnprune.llm.models import load_model
    from attnprune.llm.refit import PUBLISHED_DAMPING, RefitConfig
    from attnprune.records.noise import perplexity_comparison
    from attnprune.records.results import provenance, write_json

    # the settings first, so that a bad --objective is refused before the model loads
    try:
        damping = RefitConfig().damping if args.damping is None else args.damping
        refits = {
            _label(steps, lr, sequences, mu): Setting(
                "sparsegpt",
                args.objective,
                refit=RefitConfig(
                    args.objective,
                    steps,
                    lr,
                    sequences_per_step=sequences,
                    target=args.target,
                    window=args.window,
                    damping=damping,
                    **_anchor(mu),
                ),
            )
            for steps, lr, sequences, mu in args.settings
        }
        support = [] if damping == PUBLISHED_DAMPING else [Setting("sparsegpt", damping=damping)]
        settings = {name: Setting(name) for name in BASELINES} | {s.label: s for s in support} | refits
    except ValueError as error:  # one line naming the argument, as argparse does
        raise SystemExit(f"tune_refit.py: error: {error}") from None
    model, tokenizer = load_model(args.model)
    calib_ids = calibration_ids(model, tokenizer, args.calibration, "calibration", args.n_calibration, args.seq_len)
    validation_ids = calibration_ids(model, tokenizer, args.calibration, "heldout", args.n_validation, args.seq_len)
    tune_sets = {
        f"{name} (held-out)": evaluation_sequences(tokenizer, load_texts(name, "heldout"), args.seq_len, args.n_tune)
        for name in TUNING_TEXTS
    }
    summaries, perplexities = [], []
    for name, setting in settings.items():
        summary, weights = run_settings(model, calib_ids, [setting], args.rhos, validation_ids=validation_ids)
        summaries.append(summary.assign(candidate=name))
        weights = {(name, rho): w for (_, rho), w in weights.items()}
        perplexities.append(perplexity_rows(model, weights, tune_sets, dense=not perplexities))
        print(summaries[-1][["candidate", "rho", "seconds"]].to_string(header=False, index=False), flush=True)
    timing, perplexity = pd.concat(summaries, ignore_index=True), pd.concat(perplexities, ignore_index=True)
    gaps = gap_table(perplexity).pivot_table(index=["candidate", "rho"], columns="data", values="closed")
    timing["× SparseGPT"] = time_multiples(timing, {REFIT_PIPELINE: "sparsegpt"})
    table = timing.set_index(["candidate", "rho"])[["seconds", "× SparseGPT"]]
    table = table.join(perplexity.pivot_table(index=["candidate", "rho"], columns="data", values="perplexity"))
    table = table.join(gaps.add_prefix("gap closed, "))
    reference, *others = refits
    if others:  # each other setting minus the first, paired over the held-out windows
        versus = pd.concat(perplexity_comparison(perplexity, n, [reference]).assign(candidate=n) for n in others)
        versus["text"] = [difference.text(2) for difference in versus["difference"]]
        paired = versus.pivot_table(index=["candidate", "rho"], columns="data", values="text", aggfunc="first")
        table = table.join(paired.add_prefix(f"− {reference} (95%), "))
    dense = perplexity[perplexity["candidate"] == "dense"].set_index("data")["perplexity"]
    print("Dense: " + ", ".join(f"{data} {value:.2f}" for data, value in dense.items()))
    print(table.round(3).to_markdown())
    out = Path(args.out) if args.out else ROOT / "_build" / "tune" / f"refit-{Path(args.model).name}.json"
    meta = provenance("tune", command=" ".join(["scripts/tune_refit.py", *(argv or sys.argv[1:])]), **vars(args))
    write_json(out, {"provenance": meta, "timing": timing.to_dict("records"),
                     "perplexity": perplexity.to_dict("records")})  # fmt: skip
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
