"""Calibration statistics of the two row-pruned projections of every layer (spec §1-§4).

The method scores and compensates only ``o_proj`` (input: the concatenated head outputs, D = h·k)
and ``down_proj`` (input: silu(gate)·up, D = m). Everything it needs from their inputs X (N × D,
N calibration tokens) is three sums, accumulated batch by batch in float64 so that X itself is
never stored: H = XᵀX (D × D), the column sums 1ᵀX (D,) and N.

**[choice]** The statistics come from one *dense* pass of the unpruned model (forward pre-hooks on
every ``o_proj`` and ``down_proj``), so one global ranking is made from one set of inputs, as FLAP
does; a sequential variant is not provided here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.checks import check_tensor
from ..llm.batches import batches, check_input_ids, model_device
from .layers import llama_layers


@dataclass(frozen=True)
class InputStats:
    """Sufficient statistics of the input X (N × D) of one linear layer, float64:
    ``H`` = XᵀX (D × D), ``total`` = 1ᵀX (D,) and ``count`` = N."""

    H: Tensor
    total: Tensor
    count: int

    @classmethod
    def of(cls, X: Tensor) -> InputStats:
        """The statistics of X (tokens × D, or (..., tokens, D), flattened over its leading dims)."""
        X = check_tensor("X", X).reshape(-1, X.shape[-1]).to(torch.float64)
        return cls(X.T @ X, X.sum(dim=0), X.shape[0])

    def __add__(self, other: InputStats) -> InputStats:
        """The statistics of the two inputs stacked along the tokens."""
        return InputStats(self.H + other.H, self.total + other.total, self.count + other.count)

    @property
    def width(self) -> int:
        """D, the number of input channels."""
        return self.H.shape[0]

    @property
    def mean(self) -> Tensor:
        """The mean of each input channel over the tokens, (D,)."""
        return self.total / self.count

    @property
    def squared_norms(self) -> Tensor:
        """‖X_{:,j}‖² for each channel j: the diagonal of H, (D,)."""
        return self.H.diagonal()

    @property
    def variance(self) -> Tensor:
        """The sample variance of each input channel over the tokens (FLAP's "fluctuation"), (D,)."""
        if self.count < 2:
            return torch.zeros_like(self.total)
        centred = self.squared_norms - self.count * self.mean**2  # Σ (x − x̄)² = Σ x² − N x̄²
        return centred.clamp_min(0.0) / (self.count - 1)


@dataclass(frozen=True)
class LayerStats:
    """The input statistics of one decoder layer: ``attention`` (input of o_proj, D = h·k,
    head-major: column j·k + t is dimension t of query head j) and ``mlp`` (input of down_proj)."""

    attention: InputStats
    mlp: InputStats

    def __add__(self, other: LayerStats) -> LayerStats:
        """The statistics of the two sets of calibration sequences together."""
        return LayerStats(self.attention + other.attention, self.mlp + other.mlp)


class _Accumulator:
    """Sums the statistics of what a forward pre-hook sees, one batch at a time."""

    def __init__(self) -> None:
        self.stats: InputStats | None = None

    def __call__(self, module: nn.Module, args: tuple) -> None:
        batch = InputStats.of(args[0].detach())
        self.stats = batch if self.stats is None else self.stats + batch


@torch.no_grad()
def capture_layer_stats(model: nn.Module, input_ids: Tensor, *, batch_size: int = 1) -> list[LayerStats]:
    """The input statistics of every layer's ``o_proj`` and ``down_proj``, from forward passes of
    ``model`` as it is on the (N, T) token ids ``input_ids``, ``batch_size`` sequences at a time."""
    input_ids = check_input_ids(input_ids, model)
    layers = llama_layers(model)
    sums = [(_Accumulator(), _Accumulator()) for _ in layers]
    handles = []
    for layer, (attention, mlp) in zip(layers, sums, strict=True):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(attention))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(mlp))
    try:
        for rows in batches(input_ids.shape[0], batch_size):
            model(input_ids[rows].to(model_device(model)), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [LayerStats(attention.stats, mlp.stats) for attention, mlp in sums]
