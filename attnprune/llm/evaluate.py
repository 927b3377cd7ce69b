"""Evaluating pruned q/k weights: perplexity, and the per-layer attention error.

Perplexity is the end-to-end judge of a pruned model on held-out text. For N sequences of T
tokens, the model predicts each token t ≥ 1 from tokens < t; the perplexity is exp of the mean
negative log-likelihood over all N·(T − 1) predicted tokens (the protocol of Wanda and
SparseGPT, on the windows of :func:`attnprune.llm.data.evaluation_sequences`).
:func:`layer_errors` isolates each layer: the relative attention error of its pruned weights on
the dense model's inputs. Pruned weights (layer → (W_q, W_k), as
:func:`attnprune.llm.prune.prune_model` returns them) are passed in: the model is never changed.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm import tqdm

from .batches import batches, check_input_ids, model_device
from .capture import attention_input, layer_inputs, run_layer
from .prune import QKWeights, layer_problem, qk_overrides


@torch.no_grad()
def window_nll(
    model: nn.Module,
    input_ids: Tensor,
    *,
    batch_size: int = 1,
    progress: bool = False,
    weights: QKWeights | None = None,
) -> Tensor:
    """The summed token NLL (nats) of each sequence of ``input_ids`` (N, T) under ``model`` (with
    ``weights`` in place of its q/k weights if given): a float64 tensor (N,), each entry the sum
    over the T − 1 predicted tokens of its window. Per window, so that a perplexity can be given
    an uncertainty by resampling windows (:mod:`attnprune.records.noise`)."""
    input_ids = check_input_ids(input_ids, model)  # ids in the vocabulary, T within the context length
    if input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must hold sequences of at least 2 tokens, got shape {tuple(input_ids.shape)}")
    overrides = qk_overrides(model, weights) if weights else {}
    sums = []
    slices = list(batches(input_ids.shape[0], batch_size))
    for rows in tqdm(slices, desc="perplexity", unit="batch", disable=not progress):
        ids = input_ids[rows].to(model_device(model))
        if overrides:
            out = functional_call(model, overrides, (ids,), {"use_cache": False})
        else:
            out = model(ids, use_cache=False)
        logits = out.logits[:, :-1]
        targets = ids[:, 1:]
        # (B·(T−1), vocab) against (B·(T−1),), then back to (B, T−1) to sum each window
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
        sums.append(nll.view(targets.shape).double().sum(dim=1).cpu())
    return torch.cat(sums)


def negative_log_likelihood(
    model: nn.Module,
    input_ids: Tensor,
    *,
    batch_size: int = 1,
    progress: bool = False,
    weights: QKWeights | None = None,
) -> tuple[float, int]:
    """The summed token NLL (nats) of ``input_ids`` (N, T) under ``model`` (with ``weights`` in
    place of its q/k weights if given), and the number of predicted tokens N·(T − 1); the sum of
    :func:`window_nll`, accumulated in float64."""
    sums = window_nll(model, input_ids, batch_size=batch_size, progress=progress, weights=weights)
    return float(sums.sum()), sums.numel() * (input_ids.shape[1] - 1)


def perplexity(
    model: nn.Module,
    input_ids: Tensor,
    *,
    batch_size: int = 1,
    progress: bool = False,
    weights: QKWeights | None = None,
) -> float:
    """exp(mean token NLL) of ``model`` over the (N, T) sequences ``input_ids``, without grad.

    ``weights`` (layer → (W_q, W_k)) replace the model's q/k weights for this evaluation only
    (:func:`torch.func.functional_call`; the model is not changed). ``progress=True`` shows a
    tqdm bar (never in a chapter: its output must repeat under nbval).
    """
    total, count = negative_log_likelihood(model, input_ids, batch_size=batch_size, progress=progress, weights=weights)
    return math.exp(total / count)


# -- per-layer attention error of pruned weights ---------------------------------------------------
def layer_errors(
    model: nn.Module, ids: Tensor, candidates: dict[str, QKWeights], *, batch_size: int = 8
) -> pd.DataFrame:
    """The relative attention error of each candidate's pruned q/k weights, layer by layer, on
    the inputs X_ℓ of the *dense* model (``model`` holds its dense weights) for ``ids``.

    Every candidate is measured on the same X_ℓ and the same dense target, so the numbers isolate
    each layer's own error. Rows: layer, candidate, error.
    """
    ids = check_input_ids(ids, model)
    layers = sorted({i for weights in candidates.values() for i in weights})
    hidden, kwargs = layer_inputs(model, ids, batch_size=batch_size)
    cos, sin = kwargs["position_embeddings"]
    rows = []
    for layer in range(max(layers) + 1):
        if layer in layers:
            X = attention_input(model, layer, hidden)
            problem = layer_problem(model, layer, X, cos, sin, batch_size=batch_size)
            for name, weights in candidates.items():
                if layer in weights:
                    rows.append({"layer": layer, "candidate": name, "error": problem.relative_error(*weights[layer])})
        if layer < max(layers):
            hidden = run_layer(model, layer, hidden, kwargs, batch_size=batch_size)
    return pd.DataFrame(rows, columns=["layer", "candidate", "error"])
