"""The "linear pruning" baselines the paper compares with: magnitude, Wanda and SparseGPT.

Each prunes one weight in ``torch.nn.Linear`` layout (out × in, the map x ↦ W x) at an exact
sparsity ρ: every output row keeps ``in − round(ρ·in)`` entries (Wanda's comparison group, used
for all three so they are comparable). The calibration input X is tokens × in, or
(..., tokens, in), flattened over its leading dimensions. They minimise, each in its own way, the
*linear* reconstruction error ‖X Wᵀ − X Ŵᵀ‖_F, never the attention matrix of Definition 1.2.

- Magnitude: keep the largest |W_ij| in each row.
- Wanda (Sun et al. 2023): keep the largest |W_ij|·‖X_{:,j}‖₂ in each row; kept weights unchanged.
- SparseGPT (Frantar and Alistarh 2023): H = XᵀX with 1% of its mean diagonal added, U the upper
  Cholesky factor of H⁻¹; columns are processed left to right in blocks; each pruned weight's
  error is propagated to the columns not yet processed (the optimal-brain-surgeon update). Mask
  selection, per row and adaptive as in the reference: on entering a block, every column not yet
  processed is scored w_j²/U_jj² with the current (already updated) weights, each row places the
  zeros it still owes at its lowest scores, and those that fall in the block are pruned now (the
  later ones are scored again on entering their block). Every row ends with exactly round(ρ·in)
  zeros; with one block (blocksize ≥ in) this is the reference's first-pass score, per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import check_choice, check_nonnegative, check_positive_int, check_sparsity, check_tensor
from .masks import hard_mask, n_pruned, sparsity_of


@dataclass(frozen=True)
class LinearPruneResult:
    """A pruned ``nn.Linear`` weight (out × in, the dtype of the input) and its 0/1 mask, which has
    exactly round(ρ·in) zeros in every output row. For SparseGPT the kept weights are updated, so
    ``weight`` is not ``mask * W``."""

    weight: Tensor
    mask: Tensor


def magnitude_prune(W: Tensor, sparsity: float) -> LinearPruneResult:
    """Keep the (1−ρ) fraction of largest |W_ij| in every output row of W (out × in)."""
    W = _check_weight(W)
    mask = hard_mask(W.abs(), check_sparsity("sparsity", sparsity), group="row")
    return LinearPruneResult(W * mask, mask)


def wanda_prune(W: Tensor, X: Tensor, sparsity: float) -> LinearPruneResult:
    """Wanda: keep the largest |W_ij|·‖X_{:,j}‖₂ in every output row; kept weights unchanged."""
    W = _check_weight(W)
    X = _flat_input(X, W)
    rho = check_sparsity("sparsity", sparsity)
    column_norms = X.to(torch.float64).norm(dim=0).to(W.dtype)
    mask = hard_mask(W.abs() * column_norms, rho, group="row")
    return LinearPruneResult(W * mask, mask)


def hessian(X: Tensor, W: Tensor) -> Tensor:
    """H = XᵀX (in × in, float64), summed over every token of X (tokens × in or ..., tokens, in)."""
    X = _flat_input(X, W).to(torch.float64)
    return X.T @ X


def sparsegpt_prune(
    W: Tensor,
    X: Tensor | None,
    sparsity: float,
    *,
    H: Tensor | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> LinearPruneResult:
    """SparseGPT (Frantar and Alistarh 2023, Algorithm 1) at exact per-row sparsity ρ.

    Give the calibration input X (tokens × in) or the precomputed H = XᵀX (in × in, summed over
    tokens), not both. ``percdamp`` · mean(diag H) is added to the diagonal of H; ``blocksize``
    columns are pruned per mask selection (see the module docstring). Computed in float64,
    returned in the dtype of W. Input features that never fire (a zero column of X, so H_jj = 0)
    have H_jj set to 1 as in the reference, and are pruned first (score 0) since they cost nothing
    on the calibration data.
    """
    W = _check_weight(W)
    rho = check_sparsity("sparsity", sparsity)
    check_positive_int("blocksize", blocksize)
    check_nonnegative("percdamp", percdamp)
    H = _hessian_from(W, X, H)
    columns = W.shape[1]

    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    H += percdamp * torch.diagonal(H).mean() * torch.eye(columns, dtype=H.dtype, device=H.device)
    Hinv = _upper_cholesky_of_inverse(H)

    work = W.to(torch.float64).clone()
    mask = torch.ones_like(work)
    total = n_pruned(columns, rho)
    saliency_scale = torch.diagonal(Hinv).square()
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        still_to_prune = total - (mask[:, :i1] == 0).sum(dim=1)
        score = work[:, i1:].square() / saliency_scale[i1:]
        score[:, dead[i1:]] = 0.0
        mask[:, i1:i2] = _keep_above_rank(score, still_to_prune)[:, : i2 - i1]
        errors = _prune_block(work, mask, Hinv[i1:i2, i1:i2], i1, i2)
        work[:, i2:] -= errors @ Hinv[i1:i2, i2:]
    return LinearPruneResult((work * mask).to(W.dtype), mask.to(W.dtype))


# -- the registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Baseline:
    """A linear baseline: its name, the label the book prints, and ``prune(W, X, ρ, H)`` on one
    ``nn.Linear`` weight W (out × in) with input X (tokens × in); H = XᵀX may be given (SparseGPT
    uses it, so two weights that read the same X share one H)."""

    name: str
    label: str
    prune: Callable[[Tensor, Tensor, float, Tensor | None], LinearPruneResult]


BASELINES: dict[str, Baseline] = {
    "magnitude": Baseline("magnitude", "Magnitude", lambda W, X, rho, H: magnitude_prune(W, rho)),
    "wanda": Baseline("wanda", "Wanda", lambda W, X, rho, H: wanda_prune(W, X, rho)),
    "sparsegpt": Baseline(
        "sparsegpt",
        "SparseGPT",
        lambda W, X, rho, H: sparsegpt_prune(W, None, rho, H=hessian(X, W) if H is None else H),
    ),
}
LINEAR = tuple(BASELINES)
"""The names of the linear baselines, in the book's order."""
APPLICATIONS = ("factors", "fused")
"""Where a baseline is applied to attention: the factors W_Q, W_K, or the fused W = W_Q W_Kᵀ."""


def linear_prune(method: str, W: Tensor, X: Tensor, sparsity: float, H: Tensor | None = None) -> LinearPruneResult:
    """The baseline ``method`` on one weight W (out × in) with input X; ``H`` = XᵀX may be given."""
    check_choice("method", method, LINEAR)
    return BASELINES[method].prune(W, X, sparsity, H)


def linear_pair(
    method: str, Wq: Tensor, Wk: Tensor, X: Tensor, sparsity: float
) -> tuple[LinearPruneResult, LinearPruneResult]:
    """The baseline on W_q and on W_k, which read the same X (SparseGPT's H = XᵀX is built once)."""
    check_choice("method", method, LINEAR)
    H = hessian(X, Wq) if method == "sparsegpt" else None
    return linear_prune(method, Wq, X, sparsity, H), linear_prune(method, Wk, X, sparsity, H)


def prune_attention(
    method: str,
    application: str,
    Wq: Tensor,
    Wk: Tensor,
    X: Tensor,
    sparsity: float,
    fuse: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, float]:
    """A linear baseline applied to attention: the pruned fused weight(s) W̃ and the fraction of
    zeros in what was pruned.

    W_q, W_k are the factors in ``nn.Linear`` layout (out × d) and ``fuse(W_q, W_k)`` gives the fused
    weight(s) (..., d, d). ``"factors"`` prunes W_q and W_k as the linear layers they are and fuses
    the result; ``"fused"`` prunes the linear map x ↦ x W (``nn.Linear`` weight Wᵀ, input X), with
    several fused weights stacked as the rows of one layer.
    """
    check_choice("application", application, APPLICATIONS)
    if application == "factors":
        q, k = (result.weight for result in linear_pair(method, Wq, Wk, X, sparsity))
        return fuse(q, k), sparsity_of(torch.cat([q, k]))
    W = fuse(Wq, Wk)  # (..., d, d)
    stacked = W.transpose(-1, -2).reshape(-1, W.shape[-1])  # (... · d, d): the rows of every Wᵀ
    pruned = linear_prune(method, stacked, X, sparsity).weight
    return pruned.reshape(W.shape).transpose(-1, -2), sparsity_of(pruned)


def _prune_block(work: Tensor, mask: Tensor, block_hinv: Tensor, i1: int, i2: int) -> Tensor:
    """Columns i1..i2 one at a time: zero the pruned entries, spread each error (w − q)/[H⁻¹]_ii
    over the later columns of the block with row i of the Cholesky factor; return the errors."""
    block = work[:, i1:i2]
    errors = torch.zeros_like(block)
    for i in range(i2 - i1):
        w = block[:, i]
        err = (w - w * mask[:, i1 + i]) / block_hinv[i, i]
        block[:, i:] -= err[:, None] * block_hinv[i, i:][None, :]
        errors[:, i] = err
    return errors


def _keep_above_rank(score: Tensor, count: Tensor) -> Tensor:
    """A 0/1 mask that drops, in each row r, the ``count[r]`` lowest scores (ties: first column
    first) and keeps the rest."""
    order = torch.argsort(score, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order).contiguous())
    return (ranks >= count[:, None]).to(score.dtype)


def _upper_cholesky_of_inverse(H: Tensor) -> Tensor:
    """The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), as in the reference implementation."""
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(H))
        return torch.linalg.cholesky(inverse, upper=True)
    except torch.linalg.LinAlgError as error:
        raise ValueError(
            f"H + damping is not positive definite ({error}); raise percdamp or give more calibration tokens"
        ) from None


def _hessian_from(W: Tensor, X: Tensor | None, H: Tensor | None) -> Tensor:
    """H (in × in, float64, a fresh copy) from exactly one of X and H."""
    if (X is None) == (H is None):
        raise ValueError("give exactly one of X (tokens × in) and H (= XᵀX, in × in) to sparsegpt_prune")
    if X is not None:
        return hessian(X, W)
    check_tensor("H", H)
    if H.shape != (W.shape[1], W.shape[1]):
        raise ValueError(
            f"H must be in × in = {(W.shape[1], W.shape[1])} for W of shape {tuple(W.shape)}, got {tuple(H.shape)}"
        )
    if not H.any():
        raise ValueError("H is all zeros (X is all zeros): SparseGPT's scores carry no information; use magnitude")
    return H.to(torch.float64).clone()


def _check_weight(W: Tensor) -> Tensor:
    check_tensor("W", W)
    if W.ndim != 2:
        raise ValueError(f"W must be one nn.Linear weight (out × in), got shape {tuple(W.shape)}")
    return W


def _flat_input(X: Tensor, W: Tensor) -> Tensor:
    """X as tokens × in (leading dimensions flattened); its features must match W's inputs."""
    check_tensor("X", X)
    if X.shape[-1] != W.shape[1]:
        raise ValueError(
            f"X has {X.shape[-1]} features (shape {tuple(X.shape)}) but W (out × in = "
            f"{tuple(W.shape)}) takes {W.shape[1]}; X must be tokens × in"
        )
    X = X.reshape(-1, X.shape[-1])  # (tokens, in)
    if not X.any():
        raise ValueError(
            "X is all zeros: every input feature has norm 0, so Wanda's and SparseGPT's scores carry no "
            "information (they would prune the first columns of every row); give calibration inputs that "
            "reach the layer, or use magnitude pruning, which needs none"
        )
    return X
