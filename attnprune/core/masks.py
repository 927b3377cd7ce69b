"""Hard masks at an exact sparsity ρ (Algorithm 1; chapter 05).

A hard mask B ∈ {0,1} keeps the (1−ρ) fraction of entries with the largest score and zeroes
exactly ``n_pruned(size, ρ) = round(ρ·size)`` entries in every group. A group is the whole
d×d matrix (``group="matrix"``; each matrix of a batch on its own) or each row (``group="row"``).
Ties are broken by position (a stable sort), so the mask is deterministic.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import check_choice, check_sparsity

GROUPS = ("matrix", "row")


def n_pruned(size: int, sparsity: float) -> int:
    """The number of zeros in a group of ``size`` entries at sparsity ρ: round(ρ·size)."""
    return round(check_sparsity("sparsity", sparsity) * size)


def hard_mask(score: Tensor, sparsity: float, group: str = "matrix") -> Tensor:
    """B with exactly round(ρ·size) zeros per group: the lowest scores are dropped.

    ``score`` is ... × rows × cols; the result has its shape and dtype (0.0 / 1.0 entries).
    """
    check_choice("group", group, GROUPS)
    _check_score(score, group)
    flat = score.flatten(-2) if group == "matrix" else score
    k = n_pruned(flat.shape[-1], sparsity)
    mask = torch.ones_like(flat)
    if k > 0:
        order = torch.argsort(flat, dim=-1, stable=True)
        mask.scatter_(-1, order[..., :k], 0.0)
    return mask.reshape(score.shape)


def _check_score(score: object, group: str) -> None:
    """A score is a real tensor with one dimension per row (``"row"``) or two (``"matrix"``), no NaN."""
    if not isinstance(score, Tensor):
        raise ValueError(f"score must be a torch.Tensor, got {type(score).__name__}; wrap it with torch.tensor(...)")
    need = 2 if group == "matrix" else 1
    if score.ndim < need:
        raise ValueError(
            f"score must have at least {need} dimension(s) for group={group!r}, got shape {tuple(score.shape)}"
        )
    if score.is_complex() or score.dtype == torch.bool:
        raise ValueError(f"score must be a real tensor, got {score.dtype}")
    if score.is_floating_point() and torch.isnan(score).any():
        raise ValueError("score contains NaN: a NaN would be kept as if it were the largest score; clean it first")


def sparsity_of(tensor: Tensor) -> float:
    """The fraction of exact zeros in ``tensor``."""
    return float((tensor == 0).sum()) / tensor.numel()
