"""Perplexity, the end-to-end judge of a pruned model on held-out text.

For N sequences of T tokens, the model predicts each token t ≥ 1 from tokens < t; the
perplexity is exp of the mean negative log-likelihood over all N·(T − 1) predicted tokens
(the protocol of Wanda and SparseGPT, on the windows of :func:`attnprune.llm.data.evaluation_sequences`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .batches import batches, check_input_ids, model_device


@torch.no_grad()
def negative_log_likelihood(model: nn.Module, input_ids: Tensor, *, batch_size: int = 1,
                            progress: bool = False) -> tuple[float, int]:
    """The summed token NLL (nats) of ``input_ids`` (N, T) under ``model``, and the number of
    predicted tokens N·(T − 1); each batch's sum is accumulated in float64."""
    input_ids = check_input_ids(input_ids)
    if input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must hold sequences of at least 2 tokens, got shape {tuple(input_ids.shape)}")
    total, count = 0.0, 0
    slices = list(batches(input_ids.shape[0], batch_size))
    for rows in tqdm(slices, desc="perplexity", unit="batch", disable=not progress):
        ids = input_ids[rows].to(model_device(model))
        logits = model(ids, use_cache=False).logits[:, :-1]
        targets = ids[:, 1:]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="sum")
        total += float(nll.double())
        count += targets.numel()
    return total, count


def perplexity(model: nn.Module, input_ids: Tensor, *, batch_size: int = 1, progress: bool = False) -> float:
    """exp(mean token NLL) of ``model`` over the (N, T) sequences ``input_ids``, without grad.

    ``progress=True`` shows a tqdm bar (never in a chapter: its output must repeat under nbval).
    """
    total, count = negative_log_likelihood(model, input_ids, batch_size=batch_size, progress=progress)
    return math.exp(total / count)
