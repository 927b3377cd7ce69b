"""Comparing pruning candidates on one model: prune with each, keep its q/k weights, score them.

A :class:`Candidate` is a named method with options (``ours`` with a remedy, a baseline, ...).
:func:`prune_candidates` prunes with each candidate at each ρ, always from the model's dense
weights (the model is never changed), and keeps the pruned q/k weights; :func:`perplexity_table`
and :func:`error_table` score them (perplexity on held-out text with the pruned weights passed
in; the per-layer relative attention error on any set of sequences, from
:func:`attnprune.llm.evaluate.layer_errors`); :func:`reload_check` writes a pruned checkpoint
with ``save_pretrained`` and reads it back. The chapter on deployable pruning tells the story;
the logic lives here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd
from torch import Tensor, nn
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from ..core.checks import check_choice
from ..llm.evaluate import layer_errors, window_nll
from ..llm.models import qk_modules
from ..llm.prune import METHODS, PruneConfig, PruneReport, QKWeights, prune_model, qk_overrides

DENSE = "dense"
KEY = "{name} @ {rho:g}"


@dataclass(frozen=True)
class Candidate:
    """A named pruning method: ``method`` (one of :data:`attnprune.llm.prune.METHODS`) and its
    ``options`` (those of :meth:`attnprune.llm.prune.PruneConfig.from_options`: the settings of
    ours); ``early_stopping`` passes the validation sequences to it (ours only). The options are
    checked when the candidate is made."""

    name: str
    method: str
    options: dict = field(default_factory=dict)
    early_stopping: bool = False

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        if self.early_stopping and self.method != "ours":
            raise ValueError(f"early_stopping applies to method 'ours' only, not {self.method!r}")
        self.config(0.0)

    def config(self, sparsity: float, *, layers: list[int] | None = None, batch_size: int = 8) -> PruneConfig:
        """The :class:`~attnprune.llm.prune.PruneConfig` of this candidate at sparsity ρ."""
        return PruneConfig.from_options(self.method, sparsity, layers=layers, batch_size=batch_size, **self.options)


def prune_candidates(
    model: nn.Module,
    calib_ids: Tensor,
    candidates: list[Candidate],
    sparsities: list[float],
    *,
    layers: list[int] | None = None,
    validation_ids: Tensor | None = None,
    batch_size: int = 8,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, float], QKWeights]]:
    """Prune ``model`` with every candidate at every ρ, each time from its dense weights.

    Returns a summary (one row per candidate and ρ: seconds, sparsity of the pruned weights and of
    the whole model's linear weights, mean fitted error), the per-layer rows of the reports, and
    the pruned q/k weights keyed by (name, ρ). The model is not changed.
    """
    if len({c.name for c in candidates}) != len(candidates):
        raise ValueError("candidates must have distinct names")
    summary, per_layer, weights = [], [], {}
    for candidate in candidates:
        for rho in sparsities:
            validation = validation_ids if candidate.early_stopping else None
            config = candidate.config(rho, layers=layers, batch_size=batch_size)
            weights[candidate.name, rho], report = prune_model(model, calib_ids, config, validation_ids=validation)
            summary.append(_summary_row(candidate, rho, report))
            per_layer += [{"candidate": candidate.name, "rho": rho, **asdict(row)} for row in report.per_layer]
    return pd.DataFrame(summary), pd.DataFrame(per_layer), weights


def _summary_row(candidate: Candidate, rho: float, report: PruneReport) -> dict:
    fit = pd.DataFrame([asdict(row) for row in report.per_layer])
    return {
        "candidate": candidate.name,
        "method": candidate.method,
        "rho": rho,
        "n_calibration": report.n_calibration,
        "seq_len": report.seq_len,
        "seconds": report.seconds,
        "fit_error": float(fit["fit_error"].mean()),
        **{f"sparsity_{k}": v for k, v in report.sparsity_summary.items()},
    }


def perplexity_table(
    model: nn.Module,
    weights: dict[tuple[str, float], QKWeights],
    eval_sets: dict[str, Tensor],
    *,
    batch_size: int = 8,
    dense: bool = True,
) -> pd.DataFrame:
    """Perplexity of the dense model (``dense=True``; candidate "dense", ρ = 0) and of every
    pruned candidate on every evaluation set. Rows: candidate, rho, data, perplexity, and the
    evidence for its noise: ``window_nll`` (the summed NLL of each evaluation window, a list in
    window order) and ``window_tokens`` (the predicted tokens per window, T − 1), from which
    :mod:`attnprune.records.noise` resamples windows."""
    runs = [(DENSE, 0.0, None)] if dense else []
    runs += [(name, rho, pruned) for (name, rho), pruned in weights.items()]
    rows = []
    for name, rho, pruned in runs:
        for data, ids in eval_sets.items():
            sums = window_nll(model, ids, batch_size=batch_size, weights=pruned)
            tokens = ids.shape[1] - 1
            rows.append(
                {
                    "candidate": name,
                    "rho": rho,
                    "data": data,
                    "perplexity": math.exp(float(sums.sum()) / (sums.numel() * tokens)),
                    "window_nll": sums.tolist(),
                    "window_tokens": tokens,
                }
            )
    return pd.DataFrame(rows, columns=["candidate", "rho", "data", "perplexity", "window_nll", "window_tokens"])


def error_table(
    model: nn.Module, weights: dict[tuple[str, float], QKWeights], id_sets: dict[str, Tensor], *, batch_size: int = 8
) -> pd.DataFrame:
    """The per-layer relative attention error of every candidate on every set of sequences, on
    the dense model's inputs. Rows: candidate, rho, split, layer, error."""
    keyed = {KEY.format(name=name, rho=rho): (name, rho) for name, rho in weights}
    frames = []
    for split, ids in id_sets.items():
        errors = layer_errors(model, ids, {key: weights[pair] for key, pair in keyed.items()}, batch_size=batch_size)
        errors["candidate"], errors["rho"] = zip(*(keyed[key] for key in errors["candidate"]), strict=True)
        errors["split"] = split
        frames.append(errors)
    return pd.concat(frames, ignore_index=True)[["candidate", "rho", "split", "layer", "error"]]


def pooled_errors(errors: pd.DataFrame) -> pd.DataFrame:
    """The mean over layers of the per-layer error, per candidate, ρ and split (a wide table)."""
    return errors.groupby(["candidate", "rho", "split"])["error"].mean().unstack("split")


def excess_perplexity(table: pd.DataFrame) -> pd.DataFrame:
    """Each candidate's perplexity minus the dense model's on the same data (a ``delta`` column)."""
    dense = table[table["candidate"] == DENSE].set_index("data")["perplexity"]
    out = table[table["candidate"] != DENSE].copy()
    out["delta"] = out["perplexity"] - out["data"].map(dense)
    return out


# -- the checkpoint -------------------------------------------------------------------------------
def reload_check(model: nn.Module, weights: QKWeights, folder) -> tuple[nn.Module, float]:
    """Write the model with ``weights`` in place of its q/k weights with ``save_pretrained`` (its
    state dict with those entries replaced: the model itself is not changed), read it back with
    ``from_pretrained``; return the reloaded model and the largest |difference| of its q/k
    weights from ``weights``."""
    state = {**model.state_dict(), **{name: w.detach() for name, w in qk_overrides(model, weights).items()}}
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a chapter's output must repeat exactly
    try:
        model.save_pretrained(folder, state_dict=state)
        reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=next(model.parameters()).dtype).eval()
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    difference = max(
        float((m.weight.detach() - w.to(m.weight.device)).abs().max())
        for layer, pair in weights.items()
        for m, w in zip(qk_modules(reloaded, layer), pair, strict=True)
    )
    return reloaded, difference
