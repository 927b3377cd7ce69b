"""The attention-weight pruning objective (Definitions 1.2 and 3.2) and its closed-form gradient.

    L(M) = ½‖Att(M∘W) − Att(W)‖²_F + (λ/2)‖M‖²_F

    ∇L(M) = W ∘ (Xᵀ P X) + λM,   P = F∘G − diag((F∘G)·1)·F,
    F = Att(M∘W), F₀ = Att(W), G = F − F₀                                   (chapter 02)

Each row of P is the softmax Jacobian diag(f) − f fᵀ of that row applied to the row of G. The
same formula holds with the causal mask. One gradient costs O(n²d + nd²).

With batch dimensions (X: ... × n × d, W and M: ... × d × d) the loss is the sum over the batch,
and the gradient is summed over the dimensions along which M is shared (for example over
several calibration sequences that share one mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .attention import attention_matrix, row_softmax, scores
from .checks import check_nonnegative, check_same_shape, check_tensor


@dataclass(frozen=True)
class PruningProblem:
    """One instance of Definition 1.2 (``causal=False``) or 3.2 (``causal=True``).

    X is n × d calibration input, W the fused d × d weight (W_Q W_Kᵀ), λ ≥ 0 the regulariser.
    The dense attention F₀ = Att(W) is computed once and kept.
    """

    X: Tensor
    W: Tensor
    lam: float = 0.0
    causal: bool = False
    target: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_nonnegative("lam", self.lam)
        if self.X.dtype != self.W.dtype:
            raise ValueError(f"X ({self.X.dtype}) and W ({self.W.dtype}) must share a dtype")
        object.__setattr__(self, "target", attention_matrix(self.X, self.W, self.causal))

    # -- the objective -----------------------------------------------------------------------
    def attention(self, M: Tensor) -> Tensor:
        """F = Att(M∘W)."""
        self._check_mask(M)
        return row_softmax(scores(self.X, M * self.W), self.causal)

    def loss(self, M: Tensor) -> Tensor:
        """L(M) of Definition 1.2 / 3.2, a scalar tensor."""
        return self._loss_from(M, self.attention(M))

    def gradient(self, M: Tensor) -> Tensor:
        """∇L(M) = W ∘ (Xᵀ P X) + λM, the closed form derived in chapter 02."""
        return self.loss_and_gradient(M)[1]

    def loss_and_gradient(self, M: Tensor) -> tuple[Tensor, Tensor]:
        """L(M) and ∇L(M) from one forward pass (the attention F is shared)."""
        F = self.attention(M)
        G = F - self.target
        FG = F * G
        P = FG - FG.sum(-1, keepdim=True) * F
        XtPX = self.X.transpose(-1, -2) @ P @ self.X
        grad = (self.W * XtPX).sum_to_size(M.shape) + self.lam * M
        return self._loss_from(M, F), grad

    def relative_error(self, W_pruned: Tensor) -> float:
        """‖Att(W̃) − Att(W)‖²_F / ‖Att(W)‖²_F for any pruned weight W̃ on this problem's X."""
        check_tensor("W_pruned", W_pruned)
        check_same_shape("W_pruned", W_pruned, "W", self.W)
        F = row_softmax(scores(self.X, W_pruned), self.causal)
        return float((F - self.target).square().sum() / self.target.square().sum())

    # -- helpers -----------------------------------------------------------------------------
    def _loss_from(self, M: Tensor, F: Tensor) -> Tensor:
        return 0.5 * (F - self.target).square().sum() + 0.5 * self.lam * M.square().sum()

    def _check_mask(self, M: Tensor) -> None:
        check_tensor("M", M)
        check_same_shape("M", M, "W", self.W)
        if M.dtype != self.W.dtype:
            raise ValueError(f"M ({M.dtype}) must have the dtype of W ({self.W.dtype})")


def loss(M: Tensor, X: Tensor, W: Tensor, lam: float = 0.0, causal: bool = False) -> Tensor:
    """L(M) of Definition 1.2 (3.2 when ``causal``); see :class:`PruningProblem`."""
    return PruningProblem(X, W, lam, causal).loss(M)


def gradient(M: Tensor, X: Tensor, W: Tensor, lam: float = 0.0, causal: bool = False) -> Tensor:
    """∇L(M) in closed form (chapter 02); see :class:`PruningProblem`."""
    return PruningProblem(X, W, lam, causal).gradient(M)


def autograd_gradient(problem: PruningProblem, M: Tensor) -> Tensor:
    """∇L(M) by automatic differentiation of :meth:`PruningProblem.loss` (a reference)."""
    M = M.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.loss(M), M)
    return grad


def finite_difference_gradient(problem: PruningProblem, M: Tensor, eps: float = 1e-6) -> Tensor:
    """∇L(M) by central differences, (L(M + εE_ij) − L(M − εE_ij)) / 2ε for every entry (a check).

    Costs 2·size loss evaluations: for small problems only. Use float64.
    """
    grad = torch.empty_like(M)
    flat_M, flat_grad = M.reshape(-1), grad.view(-1)
    for index in range(flat_M.numel()):
        step = torch.zeros_like(flat_M)
        step[index] = eps
        up = problem.loss((flat_M + step).view_as(M))
        down = problem.loss((flat_M - step).view_as(M))
        flat_grad[index] = (up - down) / (2 * eps)
    return grad
