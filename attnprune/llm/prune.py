"""Pruning a whole model's ``q_proj``/``k_proj`` weights, layer by layer (spec §7, experiment 2).

:func:`prune_model` is what the command-line tool and the chapter call. For each layer ℓ it
takes the attention input X_ℓ of the calibration sequences, prunes W_q and W_k of that layer at
sparsity ρ with one method, and writes the pruned weights into the model in place, so the result
is an ordinary Hugging Face model (``save_pretrained`` / ``from_pretrained``) whose q/k weights
have exactly round(ρ·d) zeros in every row. Methods:

- ``"magnitude"``, ``"wanda"``, ``"sparsegpt"``: the linear baselines of :mod:`attnprune.core.baselines`,
  on the same X (SparseGPT's H = XᵀX is shared by q_proj and k_proj, which read the same X);
- ``"ours"``: :func:`attnprune.llm.qk_objective.fit_qk` on the layer's true attention; with
  ``support="wanda"`` or ``"sparsegpt"`` it keeps that method's support and weights and refits
  only the kept weights on the attention objective (a remedy of the book's chapter).

**[choice]** Capture: ``"sequential"`` (default) — X_ℓ comes from the layers below *as pruned
so far*, the recipe of Wanda and SparseGPT, so each layer is fitted to the inputs it will see in
the pruned model and the comparison with the baselines is like for like; ``"dense"`` — X_ℓ from
the unpruned layers below. Both run the layers one at a time on the calibration hidden states,
so memory holds one layer's inputs, never all of them. In both, ours' target is the attention of
the layer's dense weights on the same X.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..core.baselines import LINEAR, linear_pair
from .batches import check_input_ids
from .capture import attention_input, check_layers, layer_inputs, run_layer
from .qk_objective import LayerProblem, fit_qk
from ..core.masks import sparsity_of
from .models import attention_shape, decoder_layers, linear_weight_count, qk_modules
from ..core.checks import check_choice, check_sparsity

METHODS = ("ours", "magnitude", "wanda", "sparsegpt")
CAPTURES = ("sequential", "dense")
PROBLEM_OPTIONS = ("lam", "anchor")
OURS_DEFAULTS = {"steps": 160, "lr": 0.01, "schedule": "final-decay", "sequences_per_step": 1}
"""**[choice]** ours from the dense model: 160 Adam steps of size 0.01, decaying linearly to 0 over
the last quarter, one calibration sequence per step (stochastic steps: on SmolLM2 they fitted
better than full-batch steps at the same cost; without the final decay the noise of the last
steps set a floor on the error at low ρ)."""
REFIT_DEFAULTS = {"steps": 40, "lr": 0.005, "schedule": "cosine", "sequences_per_step": 1}
"""**[choice]** ours refitting a linear method's support (``support=...``): it starts from a good
solution, so fewer, smaller steps, decaying to 0 (larger steps first undo the linear fit)."""
QKWeights = dict[int, tuple[Tensor, Tensor]]


# -- the q/k weights of a model -------------------------------------------------------------------
def qk_weights(model: nn.Module, layers: list[int] | None = None) -> QKWeights:
    """A copy of the q_proj and k_proj weights of ``layers`` (all if None): layer → (W_q, W_k)."""
    layers = range(len(decoder_layers(model))) if layers is None else layers
    return {i: tuple(m.weight.detach().clone() for m in qk_modules(model, i)) for i in layers}


@torch.no_grad()
def set_qk_weights(model: nn.Module, weights: QKWeights) -> None:
    """Write q_proj/k_proj weights into the model in place (layer → (W_q, W_k))."""
    for i, (Wq, Wk) in weights.items():
        q, k = qk_modules(model, i)
        q.weight.copy_(Wq)
        k.weight.copy_(Wk)


@contextmanager
def swapped(model: nn.Module, weights: QKWeights) -> Iterator[nn.Module]:
    """The model with ``weights`` in place of its q/k weights, restored on exit."""
    saved = qk_weights(model, list(weights))
    set_qk_weights(model, weights)
    try:
        yield model
    finally:
        set_qk_weights(model, saved)


def sparsity_summary(model: nn.Module, layers: list[int] | None = None) -> dict[str, float]:
    """Fractions of exact zeros: in the q/k weights of ``layers`` (the pruned weights), in the
    q/k weights of every layer, and in all linear weights of the decoder (the whole model)."""
    blocks = decoder_layers(model)
    layers = range(len(blocks)) if layers is None else layers
    pruned = [m.weight for i in layers for m in qk_modules(model, i)]
    every = [m.weight for i in range(len(blocks)) for m in qk_modules(model, i)]
    zeros_linear = sum(int((m.weight == 0).sum()) for m in blocks.modules() if isinstance(m, nn.Linear))
    return {
        "pruned_weights": _zeros(pruned) / sum(w.numel() for w in pruned),
        "all_qk_weights": _zeros(every) / sum(w.numel() for w in every),
        "model_linear_weights": zeros_linear / linear_weight_count(model),
    }


def _zeros(tensors: list[Tensor]) -> int:
    return sum(int((t == 0).sum()) for t in tensors)


# -- one layer ------------------------------------------------------------------------------------
def layer_problem(model: nn.Module, layer: int, X: Tensor, cos: Tensor, sin: Tensor, *,
                  batch_size: int = 8, lam: float = 0.0, anchor: float = 0.0) -> LayerProblem:
    """The deployable objective of layer ``layer`` on inputs X (N × T × d), dense weights as target."""
    q, k = qk_modules(model, layer)
    bias = lambda m: None if m.bias is None else m.bias.detach()  # noqa: E731
    return LayerProblem(
        X, q.weight.detach().clone(), k.weight.detach().clone(), cos, sin, attention_shape(model),
        bias(q), bias(k), lam=lam, anchor=anchor, batch_size=batch_size,
    )


def prune_layer(problem: LayerProblem, method: str, sparsity: float, *, support: str | None = None,
                validation: LayerProblem | None = None, **fit_options) -> tuple[Tensor, Tensor]:
    """The pruned (W_q, W_k) of one layer by ``method``; ``fit_options`` go to :func:`fit_qk`."""
    check_choice("method", method, METHODS)
    if method in LINEAR:
        return tuple(r.weight for r in linear_pair(method, problem.Wq, problem.Wk, problem.X, sparsity))
    if support is not None:
        check_choice("support", support, LINEAR)
        fit_options["support"] = linear_pair(support, problem.Wq, problem.Wk, problem.X, sparsity)
    fit = fit_qk(problem, sparsity, validation=validation, **fit_options)
    return fit.weight_q, fit.weight_k


# -- the whole model --------------------------------------------------------------------------------
def prune_model(
    model: nn.Module,
    calib_ids: Tensor,
    method: str,
    sparsity: float,
    *,
    layers: list[int] | None = None,
    capture: str = "sequential",
    batch_size: int = 8,
    validation_ids: Tensor | None = None,
    progress: bool = False,
    **options,
) -> dict:
    """Prune the q_proj/k_proj weights of ``layers`` (all if None) of ``model`` in place.

    ``calib_ids`` (N, T) are the calibration sequences; ``method`` one of :data:`METHODS`;
    ``sparsity`` ρ; ``capture`` "sequential" (default) or "dense"; ``batch_size`` sequences per
    forward chunk; ``validation_ids`` (N_v, T) held-out calibration sequences for ours' early
    stopping; ``options`` (ours only): ``lam``, ``anchor`` (the objective), ``support``,
    ``sequences_per_step`` (None: every sequence at every step) and the options of
    :func:`~attnprune.llm.qk_objective.fit_qk`, over :data:`OURS_DEFAULTS` (or :data:`REFIT_DEFAULTS`
    with a support). Returns a JSON-ready report: the settings,
    per layer the relative attention error on the inputs it was fitted to and the seconds taken,
    the sparsity summary and the total time.
    """
    calib_ids = check_input_ids(calib_ids)
    check_choice("method", method, METHODS)
    rho = check_sparsity("sparsity", sparsity)
    check_choice("capture", capture, CAPTURES)
    layers = check_layers(model, layers)
    if method in LINEAR and options:
        raise ValueError(f"options {sorted(options)} apply to method 'ours' only, not {method!r}")
    if method == "ours":
        options = {**(REFIT_DEFAULTS if options.get("support") else OURS_DEFAULTS), **options}
    problem_options = {k: options.pop(k) for k in PROBLEM_OPTIONS if k in options}
    per_step = options.pop("sequences_per_step", None)
    if per_step is not None:
        problem_options["batch_size"] = per_step
        options["chunks_per_step"] = 1
    settings = {k: v for k, v in {**problem_options, **options}.items() if k != "batch_size"}
    settings = {**settings, "sequences_per_step": per_step} if method == "ours" else {}
    start = time.perf_counter()
    streams = {"calibration": layer_inputs(model, calib_ids, batch_size=batch_size)}
    if validation_ids is not None:
        streams["validation"] = layer_inputs(model, check_input_ids(validation_ids), batch_size=batch_size)
    rows = []
    for layer in tqdm(range(max(layers) + 1), desc=f"prune {method} ρ={rho:g}", unit="layer", disable=not progress):
        inputs = {name: attention_input(model, layer, hidden) for name, (hidden, _) in streams.items()}
        if capture == "dense":
            _advance(model, layer, streams, batch_size)
        if layer in layers:
            rows.append(_prune_one(model, layer, inputs, streams, method, rho, batch_size, problem_options, options))
        if capture == "sequential":
            _advance(model, layer, streams, batch_size)
    return {
        "method": method,
        "sparsity": rho,
        "layers": layers,
        "capture": capture,
        "n_calibration": int(calib_ids.shape[0]),
        "seq_len": int(calib_ids.shape[1]),
        "n_validation": 0 if validation_ids is None else int(validation_ids.shape[0]),
        "options": settings,
        "per_layer": rows,
        "sparsity_summary": sparsity_summary(model, layers),
        "seconds": time.perf_counter() - start,
    }


def _prune_one(model, layer, inputs, streams, method, rho, batch_size, problem_options, options) -> dict:
    tic = time.perf_counter()
    cos, sin = streams["calibration"][1]["position_embeddings"]
    problem = layer_problem(model, layer, inputs["calibration"], cos, sin, **{"batch_size": batch_size, **problem_options})
    validation = None
    if "validation" in inputs and method == "ours":
        v_cos, v_sin = streams["validation"][1]["position_embeddings"]
        validation = layer_problem(model, layer, inputs["validation"], v_cos, v_sin, batch_size=batch_size)
    Wq, Wk = prune_layer(problem, method, rho, validation=validation, **options)
    set_qk_weights(model, {layer: (Wq, Wk)})
    return {
        "layer": layer,
        "fit_error": problem.relative_error(Wq, Wk),
        "sparsity_q": sparsity_of(Wq),
        "sparsity_k": sparsity_of(Wk),
        "seconds": time.perf_counter() - tic,
    }


def _advance(model: nn.Module, layer: int, streams: dict, batch_size: int) -> None:
    for name, (hidden, kwargs) in streams.items():
        streams[name] = (run_layer(model, layer, hidden, kwargs, batch_size=batch_size), kwargs)


# -- per-layer attention error of pruned weights ---------------------------------------------------
def layer_errors(model: nn.Module, ids: Tensor, candidates: dict[str, QKWeights], *,
                 batch_size: int = 8) -> pd.DataFrame:
    """The relative attention error of each candidate's pruned q/k weights, layer by layer, on
    the inputs X_ℓ of the *dense* model (``model`` must hold its dense weights) for ``ids``.

    Every candidate is measured on the same X_ℓ and the same dense target, so the numbers isolate
    each layer's own error. Rows: layer, candidate, error.
    """
    ids = check_input_ids(ids)
    layers = sorted({i for weights in candidates.values() for i in weights})
    hidden, kwargs = layer_inputs(model, ids, batch_size=batch_size)
    cos, sin = kwargs["position_embeddings"]
    rows = []
    for layer in range(max(layers) + 1):
        if layer in layers:
            problem = layer_problem(model, layer, attention_input(model, layer, hidden), cos, sin, batch_size=batch_size)
            for name, weights in candidates.items():
                if layer in weights:
                    rows.append({"layer": layer, "candidate": name, "error": problem.relative_error(*weights[layer])})
        if layer < max(layers):
            hidden = run_layer(model, layer, hidden, kwargs, batch_size=batch_size)
    return pd.DataFrame(rows, columns=["layer", "candidate", "error"])
