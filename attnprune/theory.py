"""Constants of the theory (spec §4), stated and proved in the book.

Lipschitz gradient (the book's Proposition "Lipschitz gradient"): for M₁, M₂,

    ‖∇L(M₁) − ∇L(M₂)‖_F ≤ L_bound ‖M₁ − M₂‖_F,
    L_bound = (9/4)·‖W‖²_max·‖X‖₂⁴ + λ.

The factor 9/4 bounds the Hessian of S ↦ ½‖softmax(S) − F₀‖² row by row: 1/4 from the squared
softmax Jacobian (‖J‖₂ ≤ 1/2) and 2 from the curvature of the softmax weighted by G (|G_ij| ≤ 1).
With a batch of sequences sharing one mask the ‖X_b‖₂⁴ add up; with a batch of matrices (heads)
each has its own mask, and the largest ‖W_h‖_max is taken.
"""

from __future__ import annotations

from torch import Tensor, linalg

from .validation import check_nonnegative

SOFTMAX_CURVATURE = 9.0 / 4.0


def lipschitz_bound(X: Tensor, W: Tensor, lam: float = 0.0) -> float:
    """L_bound = (9/4)·‖W‖²_max·Σ_b ‖X_b‖₂⁴ + λ, a Lipschitz constant of ∇L."""
    check_nonnegative("lam", lam)
    x_norm4 = linalg.matrix_norm(X.reshape(-1, *X.shape[-2:]), ord=2).pow(4).sum()
    w_max = W.abs().amax()
    return float(SOFTMAX_CURVATURE * w_max**2 * x_norm4) + lam
