"""The theory of the paper's Section 4: our constants, stated and proved in the book, and the formulas that check it.

**Lipschitz gradient** (the book's Proposition "Lipschitz gradient"): for all M₁, M₂,

    ‖∇L(M₁) − ∇L(M₂)‖_F ≤ L_bound ‖M₁ − M₂‖_F,
    L_bound = (5/4)·‖W‖²_max·‖X‖₂⁴ + λ.

Proof sketch. L(M) = φ(A(M)) + (λ/2)‖M‖² with the linear map A(M) = X(M∘W)Xᵀ and
φ(S) = ½‖softmax(S) − F₀‖², a sum over rows. The Hessian of one row is J² + Σ_k g_k ∇²σ_k
(J = diag σ − σσᵀ, g = σ − f₀). Its quadratic form at a unit v is ‖Jv‖² + Σ_k σ_k u_k² (g_k − ḡ)
with u = v − (σᵀv)1 and ḡ = σᵀg; here Σ_k σ_k u_k² = vᵀJv ≤ ‖J‖ ≤ 1/2 (Popoviciu) and
|g_k − ḡ| ≤ 2 (g_k ∈ [−1, 1]), so the row Hessian has norm ≤ 1/4 + 1 = 5/4. Rows are independent
(block-diagonal Hessian), and ‖A‖ ≤ ‖X‖₂²‖W‖_max. (An earlier version bounded the curvature term
by Σ_k |g_k|·‖∇²σ_k‖ ≤ 2, giving 9/4: also valid, but looser.)

With a batch of sequences sharing one mask the ‖X_b‖₂⁴ add up; with a batch of matrices (heads)
each has its own mask, and the largest ‖W_h‖_max is taken.

**PL inequality** (ξ-optimal, after Frei and Gu 2021): ‖∇L(M)‖² ≥ (μ/2)(L(M) − ξ). At a point
with L(M) > ξ the largest μ that works there is 2‖∇L(M)‖²/(L(M) − ξ) (:func:`pl_ratios`).

**Convergence** (Theorem 4.1): with η = 1/L_bound the descent lemma gives
L(M_{t+1}) ≤ L(M_t) − (η/2)‖∇L(M_t)‖², and with the PL inequality
L(M_t) − ξ ≤ (1 − μ/(4L_bound))ᵗ (L(M₀) − ξ) (:func:`pl_predicted_steps`).

This module holds the constants and the formulas (no solver runs); :mod:`attnprune.experiments.probes`
measures them on instances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, linalg

from .checks import check_nonnegative, check_positive, check_positive_int, check_tensor
from .trace import Trace

SOFTMAX_CURVATURE = 5.0 / 4.0


# -- the bound ---------------------------------------------------------------------------------
def lipschitz_bound_from_norms(x_norm: float, w_max: float, lam: float = 0.0) -> float:
    """L_bound(‖X‖₂, ‖W‖_max, λ) = (5/4)·‖W‖²_max·‖X‖₂⁴ + λ (one sequence, one matrix)."""
    check_nonnegative("x_norm", x_norm)
    check_nonnegative("w_max", w_max)
    check_nonnegative("lam", lam)
    return SOFTMAX_CURVATURE * w_max**2 * x_norm**4 + lam


def lipschitz_bound(X: Tensor, W: Tensor, lam: float = 0.0) -> float:
    """L_bound = (5/4)·‖W‖²_max·Σ_b ‖X_b‖₂⁴ + λ, a Lipschitz constant of ∇L."""
    check_nonnegative("lam", lam)
    x_norm4 = linalg.matrix_norm(X.reshape(-1, *X.shape[-2:]), ord=2).pow(4).sum()
    w_max = W.abs().amax()
    return float(SOFTMAX_CURVATURE * w_max**2 * x_norm4) + lam


def linear_map_norm_sq(X: Tensor, W: Tensor, iters: int = 200, seed: int = 0) -> float:
    """‖A‖₂² for A(M) = X(M∘W)Xᵀ (one X, one W), by power iteration on A*A(M) = W∘(G(M∘W)G),
    G = XᵀX. The proof bounds it by ‖X‖₂⁴‖W‖²_max; (5/4)‖A‖² + λ is the sharper constant the
    same proof gives. Power iteration approaches ‖A‖² from below."""
    check_tensor("X", X)
    check_tensor("W", W)
    if X.ndim != 2 or W.ndim != 2:
        raise ValueError(f"X and W must be single matrices (n × d, d × d), got {tuple(X.shape)}, {tuple(W.shape)}")
    check_positive_int("iters", iters)
    G = X.T @ X
    V = torch.randn(W.shape, generator=torch.Generator().manual_seed(seed), dtype=W.dtype)
    V = V / V.norm()
    value = 0.0
    for _ in range(iters):
        U = W * (G @ (V * W) @ G)
        value = float(U.norm())
        if value == 0.0:
            return 0.0
        V = U / value
    return value


# -- PL inequality ---------------------------------------------------------------------------------
def pl_ratios(losses: Sequence[float], grad_norms: Sequence[float], xi: float, gap_floor: float = 0.0) -> np.ndarray:
    """2‖∇L(M)‖²/(L(M) − ξ) at each point: the largest μ with ‖∇L‖² ≥ (μ/2)(L − ξ) there.

    Points with L(M) − ξ ≤ ``gap_floor`` satisfy the inequality for every μ (or sit at the
    rounding level) and give NaN.
    """
    check_nonnegative("gap_floor", gap_floor)
    loss = np.asarray(losses, dtype=float)
    grad = np.asarray(grad_norms, dtype=float)
    if loss.shape != grad.shape:
        raise ValueError(f"losses and grad_norms must have the same length, got {loss.shape} and {grad.shape}")
    gap = loss - xi
    out = np.full(loss.shape, np.nan)
    keep = gap > gap_floor
    out[keep] = 2.0 * grad[keep] ** 2 / gap[keep]
    return out


def pl_constant(losses: Sequence[float], grad_norms: Sequence[float], xi: float, gap_floor: float = 0.0) -> float:
    """The largest μ for which the ξ-optimal PL inequality holds at every given point (the
    smallest of :func:`pl_ratios`; ``inf`` when no point lies above ξ + gap_floor)."""
    ratios = pl_ratios(losses, grad_norms, xi, gap_floor)
    return float(np.nanmin(ratios)) if np.isfinite(ratios).any() else math.inf


# -- convergence -----------------------------------------------------------------------------------
def descent_lemma_slack(trace: Trace, final_loss: float) -> np.ndarray:
    """L(M_t) − (η_t/2)‖∇L(M_t)‖² − L(M_{t+1}) for every step t: ≥ 0 where the descent lemma
    (or the Armijo condition, which is the same inequality) holds. ``final_loss`` is L(M_T)."""
    loss = np.asarray([*trace.loss, final_loss], dtype=float)
    eta = np.asarray(trace.step_size, dtype=float)
    grad = np.asarray(trace.grad_norm, dtype=float)
    return loss[:-1] - 0.5 * eta * grad**2 - loss[1:]


def descent_lemma_violations(trace: Trace, final_loss: float, rtol: float = 1e-12) -> int:
    """The number of steps whose slack is below −rtol·max(1, L(M_t)) (rounding allowed for)."""
    slack = descent_lemma_slack(trace, final_loss)
    loss = np.asarray(trace.loss, dtype=float)
    return int((slack < -rtol * np.maximum(1.0, np.abs(loss))).sum())


def steps_to_reach(losses: Sequence[float], targets: Sequence[float]) -> list[int | None]:
    """For each target, the first t with L(M_t) ≤ target (``None`` if never)."""
    loss = np.asarray(losses, dtype=float)
    out: list[int | None] = []
    for target in targets:
        hit = np.flatnonzero(loss <= target)
        out.append(int(hit[0]) if hit.size else None)
    return out


def pl_predicted_steps(gap0: float, eps: float, mu: float, L: float) -> float:
    """Steps after which L(M_t) − ξ ≤ ε is guaranteed by the descent lemma (η = 1/L) and the PL
    inequality with μ: the smallest t with (1 − μ/(4L))ᵗ (L(M₀) − ξ) ≤ ε."""
    check_positive("eps", eps)
    check_positive("mu", mu)
    check_positive("L", L)
    if mu > 4 * L:
        raise ValueError(f"mu must be ≤ 4L (PL and smoothness force it), got mu={mu}, L={L}")
    if gap0 <= eps:
        return 0.0
    if mu == 4 * L:
        return 1.0
    return float(math.ceil(math.log(gap0 / eps) / -math.log1p(-mu / (4 * L))))


def fit_exponents(ns: Sequence[float], ds: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """Least squares of log t = a·log n + b·log d + c; returns (a, b)."""
    n, d, t = (np.asarray(v, dtype=float) for v in (ns, ds, seconds))
    if not (n.shape == d.shape == t.shape) or n.size < 3:
        raise ValueError("ns, ds and seconds must have the same length, at least 3")
    design = np.column_stack([np.log(n), np.log(d), np.ones_like(n)])
    (a, b, _), *_ = np.linalg.lstsq(design, np.log(t), rcond=None)
    return float(a), float(b)
