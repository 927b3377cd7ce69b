"""Running a model over N token sequences (N, T) a batch at a time."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..core.checks import check_positive_int


def check_input_ids(input_ids: Tensor, model: nn.Module | None = None) -> Tensor:
    """``input_ids`` must be a non-empty (N, T) LongTensor of token ids; with a ``model``, ids in
    [0, vocabulary size) of its input embedding and T at most its context length
    (``max_position_embeddings``), which it was not trained beyond."""
    if not isinstance(input_ids, Tensor) or input_ids.dtype != torch.long or input_ids.ndim != 2:
        raise ValueError(
            "input_ids must be a (N, T) torch.LongTensor of token ids, e.g. from "
            f"data.token_sequences; got {getattr(input_ids, 'dtype', type(input_ids).__name__)} "
            f"of shape {tuple(getattr(input_ids, 'shape', ()))}"
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must hold at least one token, got shape {tuple(input_ids.shape)}")
    if model is not None:
        _check_against(input_ids, model)
    return input_ids


def _check_against(input_ids: Tensor, model: nn.Module) -> None:
    vocab = model.get_input_embeddings().num_embeddings
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(
            f"input_ids must be token ids in [0, {vocab}) (the model's vocabulary), got ids from {low} to {high}; "
            "was the text tokenised with another model's tokenizer?"
        )
    context = context_length(model)
    if context is not None and input_ids.shape[1] > context:
        raise ValueError(
            f"input_ids hold sequences of {input_ids.shape[1]} tokens, more than the model's context length "
            f"(max_position_embeddings={context}); use sequences of at most {context} tokens"
        )


def context_length(model_or_config) -> int | None:
    """The longest sequence the model was made for (``max_position_embeddings``), or None."""
    config = getattr(model_or_config, "config", model_or_config)
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` rows covering ``range(n)``."""
    check_positive_int("batch_size", batch_size)
    return (slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size))


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's (first) parameters: where its inputs must go."""
    return next(model.parameters()).device
