"""Attention-aware reconstruction against the linear methods (chapter 11): the sweep of
objective × support × calibration size, and its tables.

A :class:`Setting` is one row of the sweep: a linear method alone (``objective=None``), or its
support refitted on an objective (:class:`attnprune.llm.refit.RefitConfig`). :func:`run_settings`
prunes the model with every setting at every ρ on the same calibration sequences (the baselines
see exactly the data the refits see), keeps the pruned weights, and times each pruning;
:func:`perplexity_rows` scores them on held-out text (per evaluation window, for the bootstrap of
:mod:`attnprune.records.noise`); :func:`layer_error_table` gives the per-layer error of each on
calibration and held-out sequences; :func:`gap_table` the fraction of the best baseline's gap
to dense that each setting closes. The paper's own method and the multiplicative refit of
chapter 08 are the reference rows (:func:`reference_weights`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
from torch import Tensor, nn

from ..llm.capture import layer_inputs, run_layer
from ..llm.objectives import LayerWindow, objective_for
from ..llm.prune import FitConfig, PruneConfig, prune_model
from ..llm.refit import LayerWeights, ReconstructConfig, RefitConfig, reconstruct_model, with_weights
from .candidates import DENSE, perplexity_table

BASELINES = ("wanda", "sparsegpt")
"""The linear methods the refits are compared with (the best of them at each point)."""
PAPER = "ours (the paper's)"
MULTIPLICATIVE = "ours + SparseGPT support, multiplicative (ch. 08)"
PAPER_SPARSEGPT = "sparsegpt, timed as the paper's"
"""SparseGPT alone through the paper's pipeline (:func:`~attnprune.llm.prune.prune_model`, no
validation stream), timed before and after the reference rows: their time's yardstick."""
REFIT_PIPELINE, PAPER_PIPELINE = "reconstruct_model", "prune_model"


@dataclass(frozen=True)
class Setting:
    """One method of the sweep: the support of ``support`` on ``scope``, refitted on ``objective``
    with ``refit``'s other settings (``objective=None``: the linear method alone), ρ spread over the
    layers by ``allocation`` ("uniform" or OWL's "owl"), SparseGPT's dampening ``damping`` (None:
    :attr:`ReconstructConfig.support_damping`'s rule). ``label`` names it (without the allocation;
    with λ when ``damping`` is given)."""

    support: str
    objective: str | None = None
    scope: str = "qk"
    refit: RefitConfig = field(default_factory=RefitConfig)
    allocation: str = "uniform"
    damping: float | None = None

    @property
    def label(self) -> str:
        name = self.support if self.damping is None else f"{self.support} (λ = {self.damping:g})"
        return name if self.objective is None else f"{name} + refit ({self.objective})"

    def config(self, sparsity: float, *, layers: list[int] | None = None, batch_size: int = 8) -> ReconstructConfig:
        refit = None if self.objective is None else replace(self.refit, objective=self.objective)
        return ReconstructConfig(
            self.support, sparsity, self.scope, refit, layers, batch_size, self.allocation, self.damping
        )


def sweep_settings(
    objectives: list[str], supports: list[str], refit: RefitConfig, recommended: str, scope: str = "qk"
) -> list[Setting]:
    """The baselines, the recommended refit (the ``recommended`` support, ``refit``'s objective),
    then one factor at a time: the recommended support with each other of ``objectives``, and each
    other of ``supports`` with ``refit``'s objective (the full product costs supports × objectives
    refits, and the probability objectives cost 2-3× the attention output's)."""
    best = Setting(recommended, refit.objective, scope, refit)
    objective_rows = [Setting(recommended, o, scope, refit) for o in objectives if o != refit.objective]
    support_rows = [Setting(s, refit.objective, scope, refit) for s in supports if s != recommended]
    return [Setting(method, scope=scope) for method in BASELINES] + [best, *objective_rows, *support_rows]


def run_settings(
    model: nn.Module,
    calib_ids: Tensor,
    settings: list[Setting],
    sparsities: list[float],
    *,
    validation_ids: Tensor | None = None,
    layers: list[int] | None = None,
    batch_size: int = 8,
    suffix: str = "",
) -> tuple[pd.DataFrame, dict[tuple[str, float], LayerWeights]]:
    """Prune with every setting at every ρ, from the dense model each time: a summary (one row per
    setting and ρ: seconds, the mean per-layer objective on calibration and validation sequences,
    before and after the refit, the mean step kept) and the pruned weights keyed by (label, ρ)."""
    rows, weights = [], {}
    for setting in settings:
        for rho in sparsities:
            config = setting.config(rho, layers=layers, batch_size=batch_size)
            name = setting.label + suffix
            weights[name, rho], report = reconstruct_model(model, calib_ids, config, validation_ids=validation_ids)
            fit = pd.DataFrame([vars(row) for row in report.per_layer])
            rows.append(
                {"candidate": name, "support": setting.support, "objective": setting.objective or "none",
                 "scope": setting.scope, "rho": rho, "n_calibration": int(calib_ids.shape[0]),
                 "pipeline": REFIT_PIPELINE, "seconds": report.seconds,
                 **fit.drop(columns=["layer", "seconds"]).mean().to_dict()}
            )  # fmt: skip
    return pd.DataFrame(rows), weights


def reference_weights(
    model: nn.Module,
    calib_ids: Tensor,
    sparsities: list[float],
    *,
    validation_ids: Tensor | None = None,
    layers: list[int] | None = None,
    batch_size: int = 8,
) -> tuple[pd.DataFrame, dict[tuple[str, float], LayerWeights]]:
    """The reference rows on q/k: the paper's method (support chosen by descent) and chapter 08's
    multiplicative refit of SparseGPT's support, through :func:`attnprune.llm.prune.prune_model`;
    and SparseGPT alone through the same pipeline (:data:`PAPER_SPARSEGPT`, no weights kept),
    timed once before and once after them, so that their times are compared like for like and the
    drift of the machine's speed shows in the two timings."""
    rows, weights = [], {}
    bracket = [(PAPER_SPARSEGPT, None), (PAPER, FitConfig()), (MULTIPLICATIVE, FitConfig(support="sparsegpt"))]
    for rho in sparsities:
        for name, fit in [*bracket, bracket[0]]:
            method = "sparsegpt" if fit is None else "ours"
            layer_tuple = None if layers is None else tuple(layers)
            config = PruneConfig(method, rho, layers=layer_tuple, batch_size=batch_size, fit=fit)
            validation = validation_ids if fit is not None and fit.support else None
            pruned, report = prune_model(model, calib_ids, config, validation_ids=validation)
            if fit is not None:
                weights[name, rho] = {layer: {"q": Wq, "k": Wk} for layer, (Wq, Wk) in pruned.items()}
            rows.append({"candidate": name, "support": "sparsegpt" if fit is None else fit.support or "descent",
                         "objective": "none" if fit is None else "frobenius", "scope": "qk", "rho": rho,
                         "n_calibration": int(calib_ids.shape[0]), "pipeline": PAPER_PIPELINE,
                         "seconds": report.seconds})  # fmt: skip
    return pd.DataFrame(rows), weights


def time_multiples(timing: pd.DataFrame, yardsticks: dict[str, str]) -> pd.Series:
    """Each row's seconds as a multiple of the mean seconds of its pipeline's yardstick at the same
    ρ: ``yardsticks`` maps a pipeline (the ``pipeline`` column) to the candidate timed as its
    yardstick (SparseGPT through that pipeline, on the same data), so that every method is compared
    with SparseGPT run the way it runs itself."""
    multiples = pd.Series(math.nan, index=timing.index)
    for pipeline, candidate in yardsticks.items():
        reference = timing[timing["candidate"] == candidate].groupby("rho")["seconds"].mean()
        rows = timing["pipeline"] == pipeline
        multiples[rows] = timing.loc[rows, "seconds"] / timing.loc[rows, "rho"].map(reference)
    return multiples


def multiples_of(timing: pd.DataFrame, candidate: str, yardstick: str) -> pd.DataFrame:
    """``candidate``'s seconds over each timing of ``yardstick`` at the same ρ (each timing on its
    own, so that the verdict sees their spread): rows rho, seconds, yardstick_seconds, multiple."""
    reference = timing[timing["candidate"] == yardstick][["rho", "seconds"]]
    own = timing[timing["candidate"] == candidate][["rho", "seconds"]]
    pairs = own.merge(reference.rename(columns={"seconds": "yardstick_seconds"}), on="rho")
    return pairs.assign(multiple=pairs["seconds"] / pairs["yardstick_seconds"])


def perplexity_rows(
    model: nn.Module,
    weights: dict[tuple[str, float], LayerWeights],
    eval_sets: dict[str, Tensor],
    *,
    batch_size: int = 8,
    dense: bool = True,
) -> pd.DataFrame:
    """:func:`~attnprune.experiments.candidates.perplexity_table` of the dense model (if ``dense``)
    and of the model with each candidate's weights written into a copy of it."""
    frames = [perplexity_table(model, {}, eval_sets, batch_size=batch_size)] if dense else []
    for key, pruned in weights.items():
        copy = with_weights(model, pruned)
        frames.append(perplexity_table(copy, {key: {}}, eval_sets, batch_size=batch_size, dense=False))
        del copy
    return pd.concat(frames, ignore_index=True)


@torch.no_grad()
def layer_error_table(
    model: nn.Module,
    weights: dict[tuple[str, float], LayerWeights],
    id_sets: dict[str, Tensor],
    objectives: tuple[str, ...] = ("frobenius", "output"),
    *,
    batch_size: int = 8,
) -> pd.DataFrame:
    """The relative error of every candidate's weights under each objective, layer by layer, on
    the *dense* model's inputs for each set of sequences (calibration, held-out): every candidate
    is measured on the same inputs and targets. Rows: candidate, rho, split, layer, objective, error."""
    rows = []
    for split, ids in id_sets.items():
        hidden, kwargs = layer_inputs(model, ids, batch_size=batch_size)
        layers = sorted({i for pruned in weights.values() for i in pruned})
        for index in range(max(layers) + 1):
            window = LayerWindow.of(model, index, hidden, kwargs)
            for name in objectives if index in layers else ():
                objective = objective_for(name, window)
                rows += [{"candidate": c, "rho": rho, "split": split, "layer": index, "objective": name,
                          "error": objective.relative_error(pruned[index], batch_size)}
                         for (c, rho), pruned in weights.items() if index in pruned]  # fmt: skip
            hidden = run_layer(model, index, hidden, kwargs, batch_size=batch_size)
    return pd.DataFrame(rows, columns=["candidate", "rho", "split", "layer", "objective", "error"])


def gap_table(perplexity: pd.DataFrame, baselines: tuple[str, ...] = BASELINES, suffix: str = "") -> pd.DataFrame:
    """The fraction of the best baseline's gap to dense that each candidate closes, per text and ρ:
    (p_best − p) / (p_best − p_dense), the best among ``baselines`` (+ ``suffix``: the same
    calibration data) at that point, for the candidates whose names end with ``suffix``. Rows:
    candidate, rho, data, perplexity, best_baseline, closed."""
    dense = perplexity[perplexity["candidate"] == DENSE].set_index("data")["perplexity"]
    rivals = perplexity[perplexity["candidate"].isin([b + suffix for b in baselines])]
    best = rivals.loc[rivals.groupby(["data", "rho"])["perplexity"].idxmin()].set_index(["data", "rho"])
    rows = []
    ours = perplexity[(perplexity["candidate"] != DENSE) & perplexity["candidate"].str.endswith(suffix)]
    for row in ours.itertuples(index=False):
        p_best, name = best.loc[(row.data, row.rho), ["perplexity", "candidate"]]
        gap = p_best - dense[row.data]
        closed = (p_best - row.perplexity) / gap if gap > 0 else math.nan
        rows.append({"candidate": row.candidate, "rho": row.rho, "data": row.data, "perplexity": row.perplexity,
                     "best_baseline": name, "closed": closed})  # fmt: skip
    return pd.DataFrame(rows)
