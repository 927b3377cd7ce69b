"""Structured pruning of a real model, compared: recipes × ratios × calibration sizes (Part II).

A :class:`Recipe` is a score, a compensation and an allocation
(:class:`~attnprune.structured.prune.StructuredConfig`'s three main choices) under a label. One
dense pass captures the calibration statistics (:func:`nested_stats` captures them for several
numbers of calibration sequences at once, the smaller sets being prefixes of the larger), and
:func:`recipe_runs` prunes with every recipe at every ratio from those statistics
(:func:`~attnprune.structured.prune.prune_from_stats`: the model is never changed) and scores each
sliced model: perplexity on every evaluation set, per window (for the bootstrap of
:mod:`attnprune.records.noise`), the realised sizes and the seconds of each step.
:func:`save_checkpoints` writes sliced models for the speed measurements, and
:func:`measure_rounds` times them in interleaved rounds, each pruned model against the dense model
of its own round (:func:`paired_speedups`, :func:`median_over_rounds`). The chapter on structured
pruning tells the story; the logic lives here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from ..core.checks import check_positive_int
from ..llm.assets import quiet_loading
from ..structured.allocation import ALLOCATIONS
from ..structured.compensation import COMPENSATIONS
from ..structured.prune import StructuredConfig, StructuredReport, prune_from_stats
from ..structured.scores import check_score, score_model
from ..structured.speed import check_folder, measure_checkpoint
from ..structured.stats import LayerStats, capture_layer_stats
from .candidates import perplexity_table


@dataclass(frozen=True)
class Recipe:
    """A labelled structured pruning recipe: ``score`` (a name of
    :data:`~attnprune.structured.scores.SCORES`), ``compensation`` ("refit", "bias" or "none")
    and ``allocation`` ("global" or "uniform"); validated when made."""

    label: str
    score: str
    compensation: str
    allocation: str = "global"

    def __post_init__(self) -> None:
        check_score(self.score)
        if self.compensation not in COMPENSATIONS:
            raise ValueError(f"compensation must be one of {COMPENSATIONS}, got {self.compensation!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")

    def config(self, ratio: float, **options) -> StructuredConfig:
        """The :class:`StructuredConfig` of this recipe at ratio ρ (``options``: its other fields)."""
        return StructuredConfig(
            ratio, score=self.score, compensation=self.compensation, allocation=self.allocation, **options
        )


OURS = Recipe("numerical + refit", "numerical", "refit")
FLAP = Recipe("FLAP", "flap", "bias")
MAIN = (
    OURS,
    Recipe("numerical, no compensation", "numerical", "none"),
    FLAP,
    Recipe("FLAP score + refit", "flap", "refit"),
    Recipe("FLAP score, no compensation", "flap", "none"),
    Recipe("Wanda-sp + refit", "wanda-sp", "refit"),
    Recipe("Wanda-sp, no compensation", "wanda-sp", "none"),
    Recipe("magnitude + refit", "magnitude", "refit"),
    Recipe("magnitude, no compensation", "magnitude", "none"),
    Recipe("random + refit", "random", "refit"),
    Recipe("random, no compensation", "random", "none"),
)
UNIFORM = Recipe("numerical + refit, uniform", "numerical", "refit", "uniform")
COMPARED = MAIN[:4]  # the paper's claim and where its gain comes from: run at every ratio
ABLATIONS = (*MAIN[4:], UNIFORM)  # the other scores, the floors and the uniform allocation
SUMMARY_COLUMNS = [
    "candidate", "rho", "score", "compensation", "allocation", "n_calibration", "realised_ratio",
    "parameter_ratio", "parameters", "kept_heads", "kept_channels", "scores_s", "allocation_s",
    "compensation_s", "slicing_s",
]  # fmt: skip


def nested_stats(
    model: nn.Module, calib_ids: Tensor, sizes: Sequence[int], *, batch_size: int = 1
) -> tuple[dict[int, list[LayerStats]], dict[int, float]]:
    """The statistics of the first n calibration sequences of ``calib_ids`` (N, T) for every n in
    ``sizes`` (each at most N), from one pass over the first max(sizes) sequences: the chunk
    between two consecutive sizes is captured once and added to the sums before it. Returns
    n → statistics and n → the seconds spent capturing the first n sequences."""
    sizes = sorted(set(sizes))
    if not sizes or sizes[0] < 1 or sizes[-1] > calib_ids.shape[0]:
        raise ValueError(f"sizes must be between 1 and the {calib_ids.shape[0]} calibration sequences, got {sizes}")
    stats, seconds, total, elapsed, start = {}, {}, None, 0.0, 0
    for size in sizes:
        began = time.perf_counter()
        chunk = capture_layer_stats(model, calib_ids[start:size], batch_size=batch_size)
        elapsed += time.perf_counter() - began
        total = chunk if total is None else [a + b for a, b in zip(total, chunk, strict=True)]
        stats[size], seconds[size], start = total, elapsed, size
    return stats, seconds


def summary_row(label: str, recipe: Recipe, report: StructuredReport) -> dict:
    """One row of the summary table: what ``recipe`` removed at its ratio, and its seconds."""
    seconds = report.seconds
    return {
        "candidate": label,
        "rho": report.config.ratio,
        "score": recipe.score,
        "compensation": recipe.compensation,
        "allocation": recipe.allocation,
        "n_calibration": report.n_calibration,
        "realised_ratio": report.ratio,
        "parameter_ratio": report.parameter_ratio,
        "parameters": report.parameters_after,
        "kept_heads": [layer.kept_heads for layer in report.layers],
        "kept_channels": [layer.kept_channels for layer in report.layers],
        **{f"{step}_s": seconds[step] for step in ("scores", "allocation", "compensation", "slicing")},
    }


def recipe_runs(
    model: nn.Module,
    stats: list[LayerStats],
    recipes: Sequence[Recipe],
    ratios: Sequence[float],
    eval_sets: dict[str, Tensor],
    *,
    calib_shape: tuple[int, int],
    batch_size: int = 8,
    dense: bool = True,
    suffix: str = "",
    **options,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prune ``model`` with every recipe at every ratio from the same ``stats`` (captured on
    calibration ids of shape ``calib_shape``) and measure each sliced model's perplexity on every
    evaluation set; the scores of recipes that differ only in compensation or allocation are
    computed once. Returns (summary, perplexity): the summary rows of :func:`summary_row`, and
    the rows of :func:`~attnprune.experiments.candidates.perplexity_table` (the dense model's
    first when ``dense``), the candidate named by the recipe's label + ``suffix``. ``options``:
    further :class:`StructuredConfig` fields (damping, λ, seed, ...)."""
    perplexities = [perplexity_table(model, {}, eval_sets, batch_size=batch_size)] if dense else []
    summary, cached = [], {}
    for recipe in recipes:
        label = recipe.label + suffix
        for ratio in ratios:
            config = recipe.config(ratio, **options)
            key = (config.score, config.score_options)  # recipes differing only in compensation or allocation
            if key not in cached:
                start = time.perf_counter()
                cached[key] = (score_model(model, stats, *key), time.perf_counter() - start)
            scores, seconds = cached[key]
            sliced, report = prune_from_stats(model, stats, config, calib_shape=calib_shape, scores=scores)
            report.seconds["scores"] = seconds  # the time to compute them, once
            summary.append(summary_row(label, recipe, report))
            table = perplexity_table(sliced, {}, eval_sets, batch_size=batch_size)
            perplexities.append(table.assign(candidate=label, rho=ratio))
            del sliced
    return pd.DataFrame(summary, columns=SUMMARY_COLUMNS), pd.concat(perplexities, ignore_index=True)


def save_checkpoints(
    model: nn.Module,
    tokenizer,
    stats: list[LayerStats],
    recipe: Recipe,
    ratios: Sequence[float],
    folder: str | Path,
    *,
    calib_shape: tuple[int, int],
    **options,
) -> dict[float, Path]:
    """Write the dense model (ρ = 0) and ``recipe``'s sliced model at every other ratio, each with
    its tokenizer, with ``save_pretrained`` into ``folder``/rho-<ρ>; ratio → folder. The sliced
    checkpoints reload with :func:`~attnprune.structured.prune.load_pruned`."""
    folder = Path(folder)
    written = {}
    for ratio in sorted(set(ratios)):
        target = folder / f"rho-{ratio:g}"
        pruned = model
        if ratio != 0:
            pruned, _ = prune_from_stats(model, stats, recipe.config(ratio, **options), calib_shape=calib_shape)
        with quiet_loading():  # no progress bars: a chapter's output must repeat exactly
            pruned.save_pretrained(target)
        tokenizer.save_pretrained(target)
        written[ratio] = target
        del pruned
    return written


def measure_rounds(folders: Mapping[float, str | os.PathLike], *, rounds: int = 3, **options) -> pd.DataFrame:
    """Every checkpoint of ``folders`` (ρ → folder, ρ = 0 the dense model) timed by
    :func:`~attnprune.structured.speed.measure_checkpoint` (each time in a fresh process; ``options``
    are its ``prompt_len``, ``new_tokens``, ``repeats``, ``threads``) in ``rounds`` interleaved
    rounds: each round measures every checkpoint once, in the order given. A slow spell of a shared
    machine then falls on one round of every checkpoint, not on every timing of one checkpoint, and
    :func:`paired_speedups` compares each checkpoint with the dense model of its own round. One row
    per round and ρ: ``round``, ``rho`` and the fields of the
    :class:`~attnprune.llm.speed.SpeedReport`."""
    check_positive_int("rounds", rounds)
    if not isinstance(folders, Mapping) or not folders:
        raise ValueError(f"folders must map each ratio to a checkpoint folder, at least one, got {folders!r}")
    for folder in folders.values():  # every folder checked before the first (long) measurement
        check_folder(folder)
    rows = [
        {"round": r, "rho": rho, **measure_checkpoint(folder, **options).to_dict()}
        for r in range(rounds)
        for rho, folder in folders.items()
    ]
    return pd.DataFrame(rows)


def paired_speedups(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per round and ρ, as :func:`measure_rounds` gives it) with each row's
    prefill and decode tokens/s over those of the dense model (ρ = 0) of the same round:
    ``prefill_speedup`` and ``decode_speedup`` (1 for the dense rows themselves)."""
    dense = table[table["rho"] == 0].set_index("round")
    if dense.index.has_duplicates or set(dense.index) != set(table["round"]):
        raise ValueError("table must hold exactly one dense row (rho = 0) in every round")
    paired = dense.loc[table["round"]]  # the dense row of each row's round, row for row
    return table.assign(
        prefill_speedup=table["prefill_tokens_per_s"].to_numpy() / paired["prefill_tokens_per_s"].to_numpy(),
        decode_speedup=table["decode_tokens_per_s"].to_numpy() / paired["decode_tokens_per_s"].to_numpy(),
    )


def median_over_rounds(paired: pd.DataFrame) -> pd.DataFrame:
    """Per ρ (ascending), the median over the rounds of every measured column of
    :func:`paired_speedups`'s table, with the smallest and the largest decode speedup of the rounds
    (``decode_low``, ``decode_high``) and the number of ``rounds``."""
    grouped = paired.drop(columns="round").groupby("rho", sort=True)
    summary = grouped.median(numeric_only=True)
    decode = grouped["decode_speedup"]
    return summary.assign(decode_low=decode.min(), decode_high=decode.max(), rounds=grouped.size()).reset_index()


def layer_allocation(summary: pd.DataFrame, heads: int, channels: int) -> pd.DataFrame:
    """Per layer, the fraction of query heads and of MLP channels each candidate removed at each
    ratio (long format: candidate, rho, layer, part, removed)."""
    rows = []
    for row in summary.itertuples(index=False):
        for part, kept, total in (("heads", row.kept_heads, heads), ("channels", row.kept_channels, channels)):
            rows += [
                {"candidate": row.candidate, "rho": row.rho, "layer": layer, "part": part, "removed": 1 - k / total}
                for layer, k in enumerate(kept)
            ]
    return pd.DataFrame(rows, columns=["candidate", "rho", "layer", "part", "removed"])


@torch.no_grad()
def max_logit_difference(a: nn.Module, b: nn.Module, input_ids: Tensor) -> float:
    """The largest |difference| of the logits of two models on the same ids (a reload check)."""
    return float((a(input_ids, use_cache=False).logits - b(input_ids, use_cache=False).logits).abs().max())
