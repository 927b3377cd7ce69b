"""Benchmark (not a test): the cost of pruning every layer's q_proj/k_proj, and of evaluating;
with ``--section structured``, the cost and the payoff of structured pruning (Part II).

    .venv/bin/python scripts/benchmark.py                       # the offline model on the CPU
    .venv/bin/python scripts/benchmark.py --random-llama-1b --device cuda   # Llama 3.2-1B's shape
    .venv/bin/python scripts/benchmark.py --section structured  # prune at 25% and 50%, measure speed
    .venv/bin/python scripts/benchmark.py --section structured --tiny --seq-len 32 --new-tokens 8  # smoke run

For each method it prints the wall time of pruning all layers (the calibration capture included,
as ``attnprune prune`` does it) and the peak memory of the process (CPU: the peak resident set;
GPU: the peak allocated CUDA memory), then the perplexity evaluation throughput, against the
targets: ours within 5× the wall time of SparseGPT on the same calibration data, under 10 minutes
for all layers, under 4 GB of peak memory. SparseGPT is timed twice, before and after the other
methods, and a time target is judged against each timing by the book's rule (``verdict_on_times``:
"holds" within 5× of both, "holds with caveats" within 5× of the median multiple only, "fails"
otherwise). Each measurement runs in a fresh process, so peaks do not carry over.
``--random-llama-1b`` builds a randomly initialised model of Llama 3.2-1B's exact shape (no
weights are downloaded) and feeds it random token ids. Results go to stdout (a Markdown table)
and to ``--out`` (JSON, with provenance).

``--section structured`` saves the dense model, prunes it with the numerical score and the refit
compensation (``prune_structured``) at each of ``--ratios`` (default 0.25 and 0.5) from
``--n-calibration`` 32 × ``--seq-len`` 512 calibration tokens, each in a fresh process, and saves
each sliced model (with the tokenizer) into a temporary folder. Each folder is then measured in a
fresh process (``attnprune.structured.speed.measure_checkpoint``, on the CPU, batch 1): parameters,
bytes on disk, peak memory, prefill and decode tokens/s. Targets: decode speedup at least 85% of
its bound (the ratio of parameter counts) at every ratio, prefill speedup at least 1.7× at 0.5, and
the pruning of all layers (statistics, scores, compensation, slicing: ``StructuredReport.seconds``)
under 5 minutes. ``--dry-run`` prints the
plan and stops; ``--tiny`` uses a tiny random Llama instead of ``--model``.
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
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["magnitude", "wanda", "sparsegpt", "ours", "ours+sparsegpt", "sparsegpt+refit"]
"""``sparsegpt+refit``: the recommended refit of chapter 11 (SparseGPT's support, the objective and
settings of ``RefitConfig``'s defaults, early stopping on ``VALIDATION`` held-out sequences), as
``attnprune prune --method sparsegpt --objective output`` runs it."""
VALIDATION = 4
TARGET_RATIO, TARGET_SECONDS, TARGET_BYTES = 5.0, 600.0, 4 * 1024**3
SECTIONS = ("qk", "structured")
RATIOS = [0.25, 0.5]
TARGET_DECODE_OF_BOUND, TARGET_PREFILL_AT_HALF, TARGET_STRUCTURED_SECONDS = 0.85, 1.7, 300.0
TINY_SHAPE = {  # --tiny: a small Llama, 4 query heads sharing 2 KV heads
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="model to load (default: the offline model)")
    parser.add_argument(
        "--random-llama-1b",
        action="store_true",
        help="a randomly initialised model of Llama 3.2-1B's shape instead of --model",
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of --model (a smoke run)")
    parser.add_argument(
        "--section",
        choices=SECTIONS,
        default="qk",
        help="qk: prune q_proj/k_proj with every method (default); structured: heads and channels, then speed",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, help="methods to time")
    parser.add_argument("--sparsity", type=float, default=0.5, help="ρ (default 0.5)")
    parser.add_argument(
        "--n-calibration", type=int, default=None, help="calibration sequences (default 8; structured: 32)"
    )
    parser.add_argument("--seq-len", type=int, default=512, help="calibration length (default 512)")
    parser.add_argument("--eval-sequences", type=int, default=8, help="evaluation windows (default 8)")
    parser.add_argument("--eval-len", type=int, default=512, help="evaluation length (default 512)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--ratios", nargs="+", type=float, default=RATIOS, help="structured: ratios (default 0.25 0.5)")
    parser.add_argument("--prompt-len", type=int, default=512, help="structured: prefill prompt tokens (default 512)")
    parser.add_argument("--new-tokens", type=int, default=128, help="structured: tokens decoded (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="structured: timed runs per speed (default 3)")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, and stop")
    parser.add_argument("--out", default=None, help="JSON results file (default _build/benchmark/<model>.json)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n_calibration is None:
        args.n_calibration = 32 if args.section == "structured" else 8
    if args.section == "structured" and not all(0.0 < ratio < 1.0 for ratio in args.ratios):
        parser.error(f"--ratios must lie in (0, 1), got {args.ratios}")
    return args


def load(args: argparse.Namespace):
    """The model, its tokenizer (None for a random model, fed random token ids) and the token ids:
    (model, tokenizer, calib_ids, eval_ids)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_llama_1b or args.tiny:
        from transformers import LlamaConfig, LlamaForCausalLM

        from attnprune.llm.models import PAPER_MODEL_SHAPE

        shape = TINY_SHAPE if args.tiny else copy.deepcopy(PAPER_MODEL_SHAPE)
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**shape)).to(args.device).eval()
        generator = torch.Generator().manual_seed(0)
        vocab = min(shape["vocab_size"], 128000)
        calib = torch.randint(vocab, (args.n_calibration, args.seq_len), generator=generator)
        evaluation = torch.randint(vocab, (args.eval_sequences, args.eval_len), generator=generator)
        return model, None, calib, evaluation
    from attnprune.llm.data import evaluation_sequences, load_texts, token_sequences
    from attnprune.llm.models import load_model

    model, tokenizer = load_model(args.model, device=args.device)
    calib = token_sequences(tokenizer, load_texts("austen", "calibration"), args.n_calibration, args.seq_len, seed=0)
    evaluation = evaluation_sequences(tokenizer, load_texts("austen", "evaluation"), args.eval_len, args.eval_sequences)
    return model, tokenizer, calib, evaluation


def worker(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process: pruning with one method, or the evaluation."""
    import torch

    from attnprune.llm.evaluate import perplexity
    from attnprune.llm.prune import PruneConfig, prune_model

    if args.worker.startswith("structured-"):
        return structured_worker(args)
    model, tokenizer, calib, evaluation = load(args)
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
    elif args.worker == "sparsegpt+refit":
        result = refit_worker(model, tokenizer, calib, args)
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


def refit_worker(model, tokenizer, calib, args: argparse.Namespace) -> dict:
    """The recommended refit of chapter 11 on all layers' q/k weights (``reconstruct_model``), with
    early stopping on ``VALIDATION`` sequences of the calibration source's held-out split (random
    token ids for a random model)."""
    import torch

    from attnprune.llm.refit import ReconstructConfig, RefitConfig, reconstruct_model

    if tokenizer is None:  # a random model: random token ids, as its calibration
        generator = torch.Generator().manual_seed(1)
        validation = torch.randint(int(calib.max()) + 1, (VALIDATION, args.seq_len), generator=generator)
    else:
        from attnprune.llm.data import load_texts, token_sequences

        validation = token_sequences(tokenizer, load_texts("austen", "heldout"), VALIDATION, args.seq_len, seed=0)
    config = ReconstructConfig("sparsegpt", args.sparsity, refit=RefitConfig(), batch_size=min(args.n_calibration, 8))
    _, report = reconstruct_model(model, calib, config, validation_ids=validation)
    return {"what": args.worker, "seconds": report.seconds, "layers": len(report.per_layer), "options": report.config}


def structured_worker(args: argparse.Namespace) -> dict:
    """One step of the structured section in this (fresh) process: ``structured-dense`` saves the
    dense model; ``structured-R`` prunes it at ratio R (numerical score, refit) and saves the result."""
    import torch

    from attnprune.structured.prune import StructuredConfig, prune_structured

    model, tokenizer, calib, _ = load(args)
    what = args.worker.removeprefix("structured-")
    folder = Path(args.workdir) / what
    result = {"what": args.worker, "folder": str(folder)}
    if what != "dense":
        config = StructuredConfig(ratio=float(what), score="numerical", compensation="refit", batch_size=8)
        model, report = prune_structured(model, calib, config)
        result |= {
            "ratio": float(what),
            "realised_ratio": report.ratio,
            "parameter_ratio": report.parameter_ratio,
            "calibration": list(calib.shape),
            "seconds": report.seconds,
            "peak_cpu_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        if args.device.startswith("cuda"):
            result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return result


def run_worker(what: str, argv: list[str]) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", what]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return {"what": what, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def qk_plan(methods: list[str]) -> list[str]:
    """The fresh processes of the qk section: each method, SparseGPT once more after the others
    (the yardstick timed before and after them, so that its drift shows), then the evaluation."""
    again = ["sparsegpt"] if "sparsegpt" in methods and len(methods) > 1 else []
    return [*methods, *again, "eval"]


def yardstick_seconds(results: list[dict]) -> list[float]:
    """Every successful timing of SparseGPT's pruning."""
    return [r["seconds"] for r in results if r["what"] == "sparsegpt" and "error" not in r]


def table(results: list[dict], device: str) -> str:
    timings = yardstick_seconds(results)
    reference = sum(timings) / len(timings) if timings else None
    peak_key = "peak_cuda_bytes" if device.startswith("cuda") else "peak_cpu_bytes"
    lines = ["| method | layers | wall time (s) | × SparseGPT (mean) | peak memory (GB) |", "|---|---|---|---|---|"]
    seen: set[str] = set()
    for r in results:
        if r["what"] == "perplexity" or r["what"] == "eval":
            continue
        label = r["what"] + (" (timed again)" if r["what"] in seen else "")
        seen.add(r["what"])
        if "error" in r:
            lines.append(f"| {label} | – | failed: {r['error']} | – | – |")
            continue
        ratio = f"{r['seconds'] / reference:.1f}" if reference else "–"
        lines.append(f"| {label} | {r['layers']} | {r['seconds']:.1f} | {ratio} | {r[peak_key] / 1024**3:.2f} |")
    return "\n".join(lines)


def time_target(seconds: float, timings: list[float]) -> str:
    """The book's rule on a time limit (:func:`attnprune.records.verdicts.verdict_on_times`): ``seconds``
    within TARGET_RATIO× of every timing of SparseGPT ("holds"), of their median only ("holds with
    caveats": within the timing noise), or not ("fails"), with the multiples."""
    from attnprune.records.verdicts import verdict_on_times

    multiples = [seconds / t for t in timings]
    verdict = verdict_on_times(multiples, TARGET_RATIO)
    return f"{verdict} ({', '.join(f'{m:.2f}×' for m in multiples)})"


def structured_plan(args: argparse.Namespace) -> list[str]:
    return ["structured-dense", *(f"structured-{ratio:g}" for ratio in args.ratios)]


def measure_speeds(args: argparse.Namespace, steps: list[dict]) -> list[dict]:
    """Speed and memory of each saved folder, each in a fresh process; speedups against the dense."""
    from attnprune.llm.speed import decode_bound
    from attnprune.structured.speed import measure_checkpoint

    rows = []
    for step in steps:
        if "error" in step:
            rows.append({"what": step["what"], "error": step["error"]})
            continue
        options = {"prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "repeats": args.repeats}
        try:
            report = measure_checkpoint(step["folder"], threads=args.threads, **options).to_dict()
        except (ValueError, RuntimeError) as error:
            rows.append({"what": step["what"], "error": str(error)})
            continue
        row = {"what": step["what"], "ratio": step.get("ratio", 0.0), **report}
        dense = rows[0] if rows and "error" not in rows[0] else row
        row["prefill_speedup"] = row["prefill_tokens_per_s"] / dense["prefill_tokens_per_s"]
        row["decode_speedup"] = row["decode_tokens_per_s"] / dense["decode_tokens_per_s"]
        row["bound"] = decode_bound(dense["parameters"], row["parameters"])
        rows.append(row)
        print(f"  speed of {step['what']}: measured", flush=True)
    return rows


def structured_table(rows: list[dict]) -> str:
    lines = [
        "| ratio | parameters | MB on disk | peak MB | prefill tok/s | decode tok/s | prefill × | decode × | bound "
        "| decode × / bound |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['what']} | failed: {r['error']} |" + " – |" * 8)
            continue
        lines.append(
            f"| {r['ratio']:g}{' (dense)' if r['ratio'] == 0 else ''} | {r['parameters']:,} "
            f"| {r['bytes_on_disk'] / 1e6:.1f} "
            f"| {r['peak_memory_bytes'] / 1e6:.0f} "
            f"| {r['prefill_tokens_per_s']:.0f} | {r['decode_tokens_per_s']:.1f} | {r['prefill_speedup']:.2f} "
            f"| {r['decode_speedup']:.2f} | {r['bound']:.2f} | {r['decode_speedup'] / r['bound']:.2f} |"
        )
    return "\n".join(lines)


def structured_targets(steps: list[dict], rows: list[dict]) -> dict[str, bool]:
    targets = {}
    for r in rows:
        if "error" in r or r["ratio"] == 0.0:
            continue
        key = f"ratio {r['ratio']:g}: decode speedup ≥ {TARGET_DECODE_OF_BOUND:.0%} of its bound ({r['bound']:.2f})"
        targets[key] = r["decode_speedup"] >= TARGET_DECODE_OF_BOUND * r["bound"]
        if r["ratio"] == 0.5:
            targets[f"ratio 0.5: prefill speedup ≥ {TARGET_PREFILL_AT_HALF:g}×"] = (
                r["prefill_speedup"] >= TARGET_PREFILL_AT_HALF
            )
    for step in steps:
        if "seconds" in step:
            minutes = TARGET_STRUCTURED_SECONDS / 60
            key = f"ratio {step['ratio']:g}: pruning (statistics, scores, compensation, slicing) under {minutes:g} min"
            targets[key] = sum(step["seconds"].values()) < TARGET_STRUCTURED_SECONDS
    return targets


def structured_main(args: argparse.Namespace, argv: list[str], name: str) -> dict:
    """The structured section: save, prune and save at each ratio, then measure every folder."""
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="attnprune-benchmark-") as workdir:
        steps = []
        for what in structured_plan(args):
            start = time.perf_counter()
            steps.append(run_worker(what, [*argv, "--workdir", workdir]))
            print(f"  {what}: done in {time.perf_counter() - start:.0f} s (process included)", flush=True)
        rows = measure_speeds(args, steps)
    print()
    print(structured_table(rows))
    print()
    for step in steps:
        if "seconds" in step:
            parts = ", ".join(f"{key} {value:.1f}" for key, value in step["seconds"].items())
            total = sum(step["seconds"].values())
            print(f"ratio {step['ratio']:g} (realised {step['realised_ratio']:.3f}): {total:.1f} s ({parts})")
        elif "error" in step:
            print(f"{step['what']}: failed: {step['error']}")
    targets = structured_targets(steps, rows)
    print()
    for target, met in targets.items():
        print(f"{'met' if met else 'NOT met'}: {target}")
    return {"steps": steps, "results": rows, "targets": targets}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    name = "tiny-random-llama" if args.tiny else "random-llama-3.2-1b-shape" if args.random_llama_1b else args.model
    plan = structured_plan(args) if args.section == "structured" else qk_plan(args.methods)
    if args.dry_run:
        print(f"benchmark {args.section}: {name} on {args.device}, {args.n_calibration} × {args.seq_len} "
              f"calibration tokens; would run, each in a fresh process: {', '.join(plan)}")  # fmt: skip
        return 0
    if args.section == "structured":
        print(
            f"benchmark structured: {name}, ratios {args.ratios}, {args.n_calibration} × {args.seq_len} calibration "
            f"tokens on {args.device}; speed on the CPU ({args.prompt_len}-token prefill, {args.new_tokens} decoded "
            f"tokens, median of {args.repeats}), {os.cpu_count()} CPUs",
            flush=True,
        )
        outcome = structured_main(args, argv, name)
        return write_results(args, name, outcome)
    print(
        f"benchmark: {name} on {args.device}, ρ = {args.sparsity}, {args.n_calibration} × {args.seq_len} "
        f"calibration tokens, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    for what in plan:
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
    from attnprune.records.verdicts import verdict_from

    by = {r["what"]: r for r in results if "error" not in r}
    timings = yardstick_seconds(results)
    peak_key = "peak_cuda_bytes" if args.device.startswith("cuda") else "peak_cpu_bytes"
    targets = {}
    if "ours" in by and timings:
        ours = by["ours"]
        targets = {
            f"ours within {TARGET_RATIO:g}× SparseGPT's wall time": time_target(ours["seconds"], timings),
            f"ours under {TARGET_SECONDS / 60:g} minutes for all layers": verdict_from(
                ours["seconds"] < TARGET_SECONDS
            ),
            f"ours under {TARGET_BYTES / 1024**3:g} GB peak memory": verdict_from(ours[peak_key] < TARGET_BYTES),
        }
    refit = by.get("sparsegpt+refit")
    if refit and timings:
        targets |= {
            f"sparsegpt+refit within {TARGET_RATIO:g}× SparseGPT's wall time": time_target(refit["seconds"], timings),
            f"sparsegpt+refit under {TARGET_BYTES / 1024**3:g} GB peak memory": verdict_from(
                refit[peak_key] < TARGET_BYTES
            ),
        }
    if targets:
        print()
        for target, verdict in targets.items():
            print(f"{verdict}: {target}")
    return write_results(args, name, {"results": results, "targets": targets})


def write_results(args: argparse.Namespace, name: str, outcome: dict) -> int:
    sys.path.insert(0, str(ROOT))
    from attnprune.records.results import provenance, write_json

    section = "" if args.section == "qk" else f"-{args.section}"
    out = Path(args.out) if args.out else ROOT / "_build" / "benchmark" / f"{name}{section}-{args.device}.json"
    settings = {"sparsity": args.sparsity} if args.section == "qk" else {"ratios": args.ratios}
    if args.section == "structured":
        settings |= {"prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "repeats": args.repeats}
    meta = provenance(
        f"benchmark-{args.section}",
        model=name,
        data="random token ids" if args.random_llama_1b or args.tiny else "austen",
        seed=0,
        device=args.device,
        n_calibration=args.n_calibration,
        seq_len=args.seq_len,
        threads=args.threads,
        cpus=os.cpu_count(),
        **settings,
    )
    write_json(out, {"meta": meta, **outcome})
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
