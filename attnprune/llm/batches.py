"""Running a model over N token sequences (N, T) a batch at a time."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..core.checks import check_positive_int


def check_input_ids(input_ids: Tensor) -> Tensor:
    """``input_ids`` must be a non-empty (N, T) LongTensor of token ids."""
    if not isinstance(input_ids, Tensor) or input_ids.dtype != torch.long or input_ids.ndim != 2:
        raise ValueError(
            "input_ids must be a (N, T) torch.LongTensor of token ids, e.g. from "
            f"data.token_sequences; got {getattr(input_ids, 'dtype', type(input_ids).__name__)} "
            f"of shape {tuple(getattr(input_ids, 'shape', ()))}"
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must hold at least one token, got shape {tuple(input_ids.shape)}")
    return input_ids


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` rows covering ``range(n)``."""
    check_positive_int("batch_size", batch_size)
    return (slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size))


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's (first) parameters: where its inputs must go."""
    return next(model.parameters()).device
