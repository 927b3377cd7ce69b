"""Tuning run (not a test): the held-out attention error of ours against its number of descent
steps, on single layers of the offline model, as the defaults of ``OURS_DEFAULTS`` were chosen.

    .venv/bin/python scripts/tune_ours.py         # the defaults against the earlier ones, 3 seeds
    .venv/bin/python scripts/tune_ours.py --settings 160:0.5 120:0.5 100:0.5 --seeds 0 1
    .venv/bin/python scripts/tune_ours.py --rhos 0.5 0.7 --seeds 0 1 --settings 130:0.25:all 150:0.25:half

For each layer it captures the attention input X of ``--n-calibration`` calibration sequences and of
``--n-heldout`` sequences of the calibration source's held-out split (Austen: *Northanger Abbey* and
*Persuasion*; never the evaluation text), on the dense model. For each ρ, step count and seed (the
seed orders the one-sequence steps) it fits ours with each ``--settings`` entry STEPS:RAMP[:ROWS]
(the number of steps, the fraction of them over which the target sparsity rises to ρ, and the query
rows of each step, "all" or "half") and every other setting at its default (``FitConfig``: Adam,
size ``lr``, final decay, one sequence a step), and reports the relative attention error ‖P(W̃) −
P(1)‖²_F / ‖P(1)‖²_F of the fitted weights on the held-out sequences, the fit's seconds, and each
error as a ratio to the first setting's at the same layer, ρ and seed (its mean, and its worst over
layers and seeds). Results go to stdout (a Markdown table) and to ``--out`` (JSON, with provenance).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="model to load (default: the offline model)")
    parser.add_argument("--layers", nargs="+", type=int, default=[3, 15, 27], help="layers (default 3 15 27)")
    parser.add_argument("--rhos", nargs="+", type=float, default=[0.3, 0.5, 0.7], help="ρ (default 0.3 0.5 0.7)")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["160:0.5", "130:0.25", "120:0.25", "120:0.2", "120:0.5"],
        help="STEPS:RAMP[:ROWS] settings (ROWS all or half; default: OURS_DEFAULTS's), the first the reference "
        "(default: 160:0.5, the earlier default, and others)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the step order")
    parser.add_argument("--lr", type=float, default=None, help="Adam step size (default: OURS_DEFAULTS)")
    parser.add_argument("--n-calibration", type=int, default=8, help="calibration sequences (default 8)")
    parser.add_argument("--n-heldout", type=int, default=8, help="held-out sequences (default 8)")
    parser.add_argument("--seq-len", type=int, default=512, help="sequence length (default 512)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="JSON results file (default _build/tune/<model>.json)")
    args = parser.parse_args(argv)
    try:
        args.settings = [_setting(entry) for entry in args.settings]
    except ValueError:
        parser.error(
            f"--settings must be STEPS:RAMP[:ROWS] entries such as 130:0.25 or 150:0.25:half, got {args.settings}"
        )
    if not all(steps > 0 and 0 < ramp <= 1 and rows in (None, "all", "half") for steps, ramp, rows in args.settings):
        parser.error(f"--settings need STEPS > 0, RAMP in (0, 1] and ROWS all or half, got {args.settings}")
    if min(args.layers + args.seeds) < 0:
        parser.error("--layers and --seeds must be non-negative")
    return args


def _setting(entry: str) -> tuple[int, float, str | None]:
    """STEPS:RAMP[:ROWS] → (steps, ramp, rows or None for the default)."""
    steps, ramp, *rows = entry.split(":")
    if len(rows) > 1:
        raise ValueError(entry)
    return int(steps), float(ramp), rows[0] if rows else None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    import pandas as pd
    import torch

    from attnprune.llm.capture import capture_attention_inputs, layer_inputs
    from attnprune.llm.data import load_texts, token_sequences
    from attnprune.llm.models import load_model
    from attnprune.llm.prune import FitConfig, layer_problem
    from attnprune.llm.qk_objective import fit_qk
    from attnprune.records.results import provenance, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    ids = {
        split: token_sequences(tokenizer, load_texts("austen", split), n, args.seq_len, seed=0)
        for split, n in (("calibration", args.n_calibration), ("heldout", args.n_heldout))
    }
    cos, sin = layer_inputs(model, ids["calibration"][:1])[1]["position_embeddings"]
    X = {split: capture_attention_inputs(model, i, args.layers) for split, i in ids.items()}
    base = FitConfig(lr=args.lr)
    rows = []
    for layer in args.layers:
        fit_on = layer_problem(model, layer, X["calibration"][layer], cos, sin, batch_size=base.sequences_per_step)
        heldout = layer_problem(model, layer, X["heldout"][layer], cos, sin)
        for rho in args.rhos:
            for steps, ramp, query_rows in args.settings:
                given = dataclasses.replace(base, steps=steps, ramp=ramp, query_rows=query_rows or base.query_rows)
                options = given.fit_options()
                for seed in args.seeds:
                    tic = time.perf_counter()
                    fit = fit_qk(fit_on, rho, **{**options, "seed": seed})
                    seconds = time.perf_counter() - tic
                    error = heldout.relative_error(fit.weight_q, fit.weight_k)
                    row = dict(layer=layer, rho=rho, setting=f"{steps}:{ramp:g}:{given.query_rows}", seed=seed)
                    rows.append({**row, "heldout_error": error, "seconds": seconds})
                    print(row, f"error {error:.5g}, {seconds:.1f} s", flush=True)
    frame = pd.DataFrame(rows)
    keys, first = ["layer", "rho", "seed"], frame["setting"].iloc[0]
    reference = frame[frame["setting"] == first][[*keys, "heldout_error"]].rename(columns={"heldout_error": "ref"})
    frame = frame.merge(reference, on=keys)
    frame["ratio"] = frame["heldout_error"] / frame.pop("ref")
    order = list(dict.fromkeys(frame["setting"]))
    summary = frame.groupby(["setting", "rho"])["ratio"].mean().unstack("rho").add_prefix("ρ = ")
    by_setting = frame.groupby("setting")
    summary["mean"], summary["worst"] = by_setting["ratio"].mean(), by_setting["ratio"].max()
    summary["fit seconds"] = by_setting["seconds"].mean()
    print(f"Held-out attention error as a ratio to {first}'s (steps:ramp:rows), mean over layers and seeds:")
    print(summary.loc[order].round(3).to_markdown())
    out = Path(args.out) if args.out else ROOT / "_build" / "tune" / f"{Path(args.model).name}.json"
    meta = provenance("tune", command=" ".join(["scripts/tune_ours.py", *(argv or sys.argv[1:])]), **vars(args))
    write_json(out, {"provenance": meta, "rows": rows})
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
