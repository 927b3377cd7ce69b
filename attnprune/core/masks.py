"""Hard masks at an exact sparsity ρ (Algorithm 1; chapter 05).

A hard mask B ∈ {0,1} keeps the (1−ρ) fraction of entries with the largest score and zeroes
exactly ``n_pruned(size, ρ) = round(ρ·size)`` entries in every group. A group is the whole
d×d matrix (``group="matrix"``; each matrix of a batch on its own) or each row (``group="row"``).
Ties are broken by position: among entries equal to the k-th smallest score, the lowest-index
ones are dropped first, exactly the first k entries of a stable sort, so the mask is
deterministic. The k-th smallest score is found by selection (``kthvalue``, linear time), not
by sorting the group: 3–5× faster, and the same mask bit for bit.
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
    flat = score.flatten(-2) if group == "matrix" else score  # (..., size) per group
    k = n_pruned(flat.shape[-1], sparsity)
    if k == 0:
        return torch.ones_like(score)
    return (~lowest(flat, k)).to(score.dtype).reshape(score.shape)


def lowest(flat: Tensor, k: int) -> Tensor:
    """The k lowest entries of each group (last dimension) of ``flat``, as a bool tensor: every
    entry below the k-th smallest value v, then the lowest-index entries equal to v until k are
    taken (the first k of a stable sort)."""
    v = flat.kthvalue(k, dim=-1, keepdim=True).values  # (..., 1)
    dropped = flat <= v
    if bool((dropped.sum(-1) == k).all()):  # no other entry ties with v: the common case
        return dropped
    below = flat < v
    at = dropped & ~below
    quota = k - below.sum(-1, keepdim=True)  # how many entries equal to v are dropped
    return below | (at & (at.cumsum(-1) <= quota))


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
