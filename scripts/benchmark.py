"""Benchmark (not a test): the cost of pruning every layer's q_proj/k_proj, and of evaluating.

    .venv/bin/python scripts/benchmark.py                       # the offline model on the CPU
    .venv/bin/python scripts/benchmark.py --random-llama-1b --device cuda   # Llama 3.2-1B's shape

For each method it prints the wall time of pruning all layers (the calibration capture included,
as ``attnprune prune`` does it) and the peak memory of the process (CPU: the peak resident set;
GPU: the peak allocated CUDA memory), then the perplexity evaluation throughput, against the
targets: ours within 5× the wall time of SparseGPT on the same calibration data, under 10 minutes
for all layers, under 4 GB of peak memory. Each measurement runs in a fresh process, so peaks do
not carry over. ``--random-llama-1b`` builds a randomly initialised model of Llama 3.2-1B's exact
shape (no weights are downloaded) and feeds it random token ids. Results go to stdout (a
Markdown table) and to ``--out`` (JSON, with provenance).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["magnitude", "wanda", "sparsegpt", "ours", "ours+sparsegpt"]
TARGET_RATIO, TARGET_SECONDS, TARGET_BYTES = 5.0, 600.0, 4 * 1024**3


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="model to load (default: the offline model)")
    parser.add_argument(
        "--random-llama-1b",
        action="store_true",
        help="a randomly initialised model of Llama 3.2-1B's shape instead of --model",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, help="methods to time")
    parser.add_argument("--sparsity", type=float, default=0.5, help="ρ (default 0.5)")
    parser.add_argument("--n-calibration", type=int, default=8, help="calibration sequences (default 8)")
    parser.add_argument("--seq-len", type=int, default=512, help="calibration length (default 512)")
    parser.add_argument("--eval-sequences", type=int, default=8, help="evaluation windows (default 8)")
    parser.add_argument("--eval-len", type=int, default=512, help="evaluation length (default 512)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="JSON results file (default _build/benchmark/<model>.json)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load(args: argparse.Namespace):
    """The model and a tokenizer-free way to make token ids: (model, calib_ids, eval_ids)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_llama_1b:
        from transformers import LlamaConfig, LlamaForCausalLM

        from attnprune.llm.models import PAPER_MODEL_SHAPE

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**copy.deepcopy(PAPER_MODEL_SHAPE))).to(args.device).eval()
        generator = torch.Generator().manual_seed(0)
        calib = torch.randint(128000, (args.n_calibration, args.seq_len), generator=generator)
        evaluation = torch.randint(128000, (args.eval_sequences, args.eval_len), generator=generator)
        return model, calib, evaluation
    from attnprune.llm.data import evaluation_sequences, load_texts, token_sequences
    from attnprune.llm.models import load_model

    model, tokenizer = load_model(args.model, device=args.device)
    calib = token_sequences(tokenizer, load_texts("austen", "calibration"), args.n_calibration, args.seq_len, seed=0)
    evaluation = evaluation_sequences(tokenizer, load_texts("austen", "evaluation"), args.eval_len, args.eval_sequences)
    return model, calib, evaluation


def worker(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process: pruning with one method, or the evaluation."""
    import torch

    from attnprune.llm.evaluate import perplexity
    from attnprune.llm.prune import PruneConfig, prune_model

    model, calib, evaluation = load(args)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if args.worker == "eval":
        perplexity(model, evaluation[:1], batch_size=1)  # warm-up
        start = time.perf_counter()
        value = perplexity(model, evaluation, batch_size=1)
        seconds = time.perf_counter() - start
        result = {
            "what": "perplexity",
            "seconds": seconds,
            "tokens": evaluation.numel(),
            "tokens_per_second": evaluation.numel() / seconds,
            "perplexity": value,
        }
    else:
        method, options = ("ours", {"support": "sparsegpt"}) if args.worker == "ours+sparsegpt" else (args.worker, {})
        config = PruneConfig.from_options(method, args.sparsity, batch_size=args.n_calibration, **options)
        _, report = prune_model(model, calib, config)
        result = {
            "what": args.worker,
            "seconds": report.seconds,
            "layers": len(report.layers),
            "pruned_sparsity": report.sparsity_summary["pruned_weights"],
            "options": report.options,
        }
    result["peak_cpu_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.device.startswith("cuda"):
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    return result


def run_worker(what: str, argv: list[str]) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", what]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return {"what": what, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict], device: str) -> str:
    by = {r["what"]: r for r in results}
    reference = by.get("sparsegpt", {}).get("seconds")
    peak_key = "peak_cuda_bytes" if device.startswith("cuda") else "peak_cpu_bytes"
    lines = ["| method | layers | wall time (s) | × SparseGPT | peak memory (GB) |", "|---|---|---|---|---|"]
    for r in results:
        if r["what"] == "perplexity" or r["what"] == "eval":
            continue
        if "error" in r:
            lines.append(f"| {r['what']} | – | failed: {r['error']} | – | – |")
            continue
        ratio = f"{r['seconds'] / reference:.1f}" if reference else "–"
        lines.append(f"| {r['what']} | {r['layers']} | {r['seconds']:.1f} | {ratio} | {r[peak_key] / 1024**3:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    name = "random-llama-3.2-1b-shape" if args.random_llama_1b else args.model
    print(
        f"benchmark: {name} on {args.device}, ρ = {args.sparsity}, {args.n_calibration} × {args.seq_len} "
        f"calibration tokens, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    for what in [*args.methods, "eval"]:
        start = time.perf_counter()
        results.append(run_worker(what, argv))
        print(f"  {what}: done in {time.perf_counter() - start:.0f} s (process included)", flush=True)
    print()
    print(table(results, args.device))
    evaluation = next(r for r in results if r["what"] in ("perplexity", "eval"))
    if "error" not in evaluation:
        print(
            f"\nperplexity evaluation: {evaluation['tokens']} tokens in {evaluation['seconds']:.1f} s, "
            f"{evaluation['tokens_per_second']:.0f} tokens/s (perplexity {evaluation['perplexity']:.3g})"
        )
    by = {r["what"]: r for r in results}
    peak_key = "peak_cuda_bytes" if args.device.startswith("cuda") else "peak_cpu_bytes"
    targets = {}
    if "ours" in by and "sparsegpt" in by and "error" not in by["ours"] and "error" not in by["sparsegpt"]:
        ours = by["ours"]
        targets = {
            f"ours within {TARGET_RATIO:g}× SparseGPT's wall time": ours["seconds"]
            <= TARGET_RATIO * by["sparsegpt"]["seconds"],
            f"ours under {TARGET_SECONDS / 60:g} minutes for all layers": ours["seconds"] < TARGET_SECONDS,
            f"ours under {TARGET_BYTES / 1024**3:g} GB peak memory": ours[peak_key] < TARGET_BYTES,
        }
        print()
        for target, met in targets.items():
            print(f"{'met' if met else 'NOT met'}: {target}")
    sys.path.insert(0, str(ROOT))
    from attnprune.records.results import provenance, write_json

    out = Path(args.out) if args.out else ROOT / "_build" / "benchmark" / f"{name}-{args.device}.json"
    meta = provenance(
        "benchmark",
        model=name,
        data="austen" if not args.random_llama_1b else "random token ids",
        seed=0,
        device=args.device,
        sparsity=args.sparsity,
        n_calibration=args.n_calibration,
        seq_len=args.seq_len,
        cpus=os.cpu_count(),
    )
    write_json(out, {"meta": meta, "results": results, "targets": targets})
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
