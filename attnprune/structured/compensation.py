"""Compensation of the kept weights of ``o_proj`` and ``down_proj`` (spec §3 and §4).

Convention. The spec writes X·W with W ∈ ℝ^{D×D'} and speaks of the kept *rows* S of W (its input
channels). Here every weight is an ``nn.Linear`` ``weight`` (D' × D) = Wᵀ, so the spec's kept rows
are the kept *input columns* ``weight[:, S]``; each function below states its formula in the
spec's notation and applies it transposed. H = XᵀX (D × D), P = the pruned channels.

- :func:`refit_kept` (the paper's Theorem 3, as a least-squares refit, Remark 5):
  W'_S = W_S + (H_SS + γI)⁻¹ H_SP W_P, the minimiser of ‖XW − X_S W'_S‖² + γ‖W'_S − W_S‖².
- :func:`lagrangian_update`: the paper's Lagrangian form δW* = −(H⁻¹)_{:,P} ((H⁻¹)_{PP})⁻¹ W_P, of
  which (W + δW*)_S is the same refit (and (W + δW*)_P = 0), with H + γI in place of H.
- :func:`bias_compensation` (FLAP): b' = b + W_Pᵀ x̄_P, the mean contribution of the pruned channels.

**[choice]** γ = ``damping`` · mean(diag H), ``damping`` = 0.01 by default (SparseGPT's percdamp);
every solve in float64; the inputs are the dense ones of :mod:`~attnprune.structured.stats`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.checks import check_choice, check_nonnegative, check_tensor
from .allocation import Allocation
from .layers import llama_layers
from .stats import LayerStats

COMPENSATIONS = ("none", "refit", "bias")
"""What :func:`compensate` can do to the kept columns: nothing, the least-squares refit, or FLAP's bias."""


def damped(H: Tensor, damping: float) -> Tensor:
    """H + γI with γ = ``damping`` · mean(diag H), in float64."""
    H = H.to(torch.float64)
    gamma = check_nonnegative("damping", damping) * H.diagonal().mean()
    return H + gamma * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)


def pruned_of(kept: Tensor, width: int) -> Tensor:
    """The complement P of the kept channels S in range(width), sorted."""
    mask = torch.ones(width, dtype=torch.bool, device=kept.device)
    mask[kept] = False
    return torch.nonzero(mask).reshape(-1)


def refit_kept(weight: Tensor, H: Tensor, kept: Tensor, *, damping: float = 0.01) -> Tensor:
    """The refit kept columns, (D' × |S|) in the dtype of ``weight``: in the spec's layout
    W'_S = W_S + (H_SS + γI)⁻¹ H_SP W_P, i.e. ``weight[:, S] + weight[:, P] @ ((H_SS + γI)⁻¹ H_SP)ᵀ``."""
    weight, kept = _check(weight, H, kept, "kept")
    pruned = pruned_of(kept, weight.shape[1])
    Hd = damped(H, damping)
    W = weight.to(torch.float64)
    correction = torch.linalg.solve(Hd[kept][:, kept], H.to(torch.float64)[kept][:, pruned])  # (|S|, |P|)
    return (W[:, kept] + W[:, pruned] @ correction.T).to(weight.dtype)


def lagrangian_update(weight: Tensor, H: Tensor, pruned: Tensor, *, damping: float = 0.0) -> Tensor:
    """The paper's Lagrangian solution δW* = −(H⁻¹)_{:,P} ((H⁻¹)_{PP})⁻¹ W_P (with H + γI), in
    ``nn.Linear`` layout (D' × D, float64): ``weight + δ`` is zero on P and the refit on S."""
    weight, pruned = _check(weight, H, pruned, "pruned")
    inverse = torch.linalg.inv(damped(H, damping))
    W_P = weight.to(torch.float64)[:, pruned].T  # (|P|, D'): the pruned rows, spec layout
    delta = -inverse[:, pruned] @ torch.linalg.solve(inverse[pruned][:, pruned], W_P)  # (D, D')
    return delta.T


def bias_compensation(weight: Tensor, mean: Tensor, kept: Tensor, bias: Tensor | None = None) -> Tensor:
    """FLAP's bias: b' = b + Σ_{j∈P} x̄_j W_{j,:} (``bias + weight[:, P] @ mean[P]``), (D',), in the
    dtype of ``weight``; ``mean`` is the mean input over the calibration tokens, (D,)."""
    weight = check_tensor("weight", weight)
    pruned = pruned_of(_check_indices("kept", kept, weight.shape[1]), weight.shape[1])
    added = weight.to(torch.float64)[:, pruned] @ mean.to(torch.float64)[pruned]
    base = torch.zeros_like(added) if bias is None else bias.to(torch.float64)
    return (base + added).to(weight.dtype)


def compensate(
    linear: nn.Linear, H: Tensor, mean: Tensor, kept: Tensor, method: str, *, damping: float = 0.01
) -> tuple[Tensor, Tensor | None]:
    """The new (weight, bias) of a row-pruned ``linear`` keeping input columns ``kept``: sliced only
    (``"none"``), refit (``"refit"``), or sliced with FLAP's bias (``"bias"``)."""
    check_choice("compensation", method, COMPENSATIONS)
    weight, bias = linear.weight.detach(), None if linear.bias is None else linear.bias.detach()
    if method == "refit":
        return refit_kept(weight, H, kept, damping=damping), bias
    if method == "bias":
        return weight[:, kept].clone(), bias_compensation(weight, mean, kept, bias)
    return weight[:, kept].clone(), bias


def head_columns(heads: Tensor, head_dim: int) -> Tensor:
    """The o_proj input columns of the query heads ``heads``: head j owns columns j·k .. j·k + k − 1."""
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)).reshape(-1)  # (|heads|·k,)


@torch.no_grad()
def compensate_model(
    model: nn.Module, stats: list[LayerStats], allocation: Allocation, method: str, *, damping: float = 0.01
) -> list[dict[str, tuple[Tensor, Tensor | None]]]:
    """For every layer, the new (weight, bias) of ``self_attn.o_proj`` and ``mlp.down_proj`` on the
    columns ``allocation`` keeps: pass the result to :func:`~attnprune.structured.slicing.slice_model`.
    The model is not changed."""
    check_choice("compensation", method, COMPENSATIONS)
    layers = llama_layers(model)
    if not len(layers) == len(stats) == len(allocation.heads):
        raise ValueError(f"stats and allocation must describe the model's {len(layers)} layers")
    out = []
    for layer, layer_stats, heads, channels in zip(layers, stats, allocation.heads, allocation.channels, strict=True):
        o_columns = head_columns(heads, layer.self_attn.head_dim)
        attention, mlp = layer_stats.attention, layer_stats.mlp
        out.append(
            {
                "self_attn.o_proj": compensate(
                    layer.self_attn.o_proj, attention.H, attention.mean, o_columns, method, damping=damping
                ),
                "mlp.down_proj": compensate(layer.mlp.down_proj, mlp.H, mlp.mean, channels, method, damping=damping),
            }
        )
    return out


def _check(weight: Tensor, H: Tensor, indices: Tensor, name: str) -> tuple[Tensor, Tensor]:
    weight = check_tensor("weight", weight)
    H = check_tensor("H", H)
    D = weight.shape[1]
    if H.shape != (D, D):
        raise ValueError(f"H must be D × D = {D} × {D} (weight has {D} input columns), got {tuple(H.shape)}")
    return weight, _check_indices(name, indices, D)


def _check_indices(name: str, indices: Tensor, width: int) -> Tensor:
    if not isinstance(indices, Tensor) or indices.dtype != torch.long or indices.ndim != 1:
        raise ValueError(f"{name} must be a 1-D LongTensor of channel indices, got {indices!r}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= width):
        raise ValueError(f"{name} must hold channel indices in [0, {width}), got {indices.tolist()}")
    if indices.unique().numel() != indices.numel():
        raise ValueError(f"{name} must not repeat a channel, got {indices.tolist()}")
    return indices
