"""Algorithm 1: gradient descent on a real-valued mask M, then a hard mask (spec §3).

    M₀ = 1;  M_{t+1} = M_t − η ∇L(M_t);  B = top-(1−ρ) entries of the score;  output B∘W or B∘M∘W

Variants (the paper does not say how its hard mask is taken, so both are offered):

- ``"plain"``: T steps of descent, then one hard mask at the end (the literal reading);
- ``"projected"`` (default): after every step, keep the top entries by score and zero the rest,
  with the target sparsity rising linearly from 0 to ρ over the first ``ramp`` fraction of the
  steps, then held at ρ: iterative hard thresholding on the non-linear loss.

Step size η: ``"bound"`` is 1/L_bound (the Lipschitz constant of :mod:`attnprune.core.theory`, for which
the descent lemma guarantees progress), ``"armijo"`` backtracks from twice the last accepted
step until L(M − η∇L) ≤ L(M) − (η/2)‖∇L‖², and a float is used as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .masks import GROUPS, hard_mask, sparsity_of
from .objective import PruningProblem
from .theory import lipschitz_bound
from .trace import Trace
from .checks import (
    check_choice,
    check_positive,
    check_positive_int,
    check_same_shape,
    check_sparsity,
    check_tensor,
)

VARIANTS = ("plain", "projected")
SCORES = ("magnitude", "mask")
OUTPUTS = ("mask-only", "reweighted")
SCHEDULES = ("constant", "cosine", "final-decay")
ARMIJO_SHRINK = 0.5
ARMIJO_MAX_HALVINGS = 60


@dataclass
class PruneResult:
    """The outcome of Algorithm 1: the hard mask B, the learned real mask M and the trace."""

    problem: PruningProblem
    mask: Tensor
    M: Tensor
    sparsity: float
    trace: Trace
    final_loss: float

    def pruned_weight(self, output: str = "mask-only") -> Tensor:
        """B∘W (``"mask-only"``, kept weights untouched, like Wanda) or B∘M∘W (``"reweighted"``,
        kept weights keep their learned scale, like SparseGPT's update)."""
        check_choice("output", output, OUTPUTS)
        scale = self.mask if output == "mask-only" else self.mask * self.M
        return scale * self.problem.W

    def relative_error(self, output: str = "mask-only") -> float:
        """‖Att(W̃) − Att(W)‖²_F / ‖Att(W)‖²_F of the pruned weight on the fitted X."""
        return self.problem.relative_error(self.pruned_weight(output))


def score_of(M: Tensor, W: Tensor, score: str) -> Tensor:
    """The hard-mask score: |M∘W| (``"magnitude"``) or M itself (``"mask"``)."""
    return (M * W).abs() if score == "magnitude" else M


def target_sparsity(step: int, steps: int, sparsity: float, ramp: float) -> float:
    """ρ_t of the projected variant: linear from 0 at t = 0 to ρ at t = ramp·T, then ρ."""
    ramp_steps = max(1, round(ramp * steps))
    return sparsity * min(1.0, (step + 1) / ramp_steps)


def step_size(lr: float, step: int, steps: int, schedule: str) -> float:
    """Adam's step size at step t: ``lr`` throughout ("constant"), lr·½(1 + cos(πt/T)) ("cosine"),
    or ``lr`` then a linear decay to 0 over the last quarter of the steps ("final-decay")."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
    return lr * min(1.0, 4.0 * (steps - step) / steps)


def armijo_step(
    problem: PruningProblem, M: Tensor, loss: Tensor, grad: Tensor, eta: float
) -> tuple[float, Tensor]:
    """Backtrack η ← η/2 until L(M − η∇L) ≤ L(M) − (η/2)‖∇L‖²; return η and the new M."""
    g2 = float(grad.square().sum())
    for _ in range(ARMIJO_MAX_HALVINGS):
        candidate = M - eta * grad
        if float(problem.loss(candidate)) <= float(loss) - 0.5 * eta * g2:
            return eta, candidate
        eta *= ARMIJO_SHRINK
    return 0.0, M


def prune(
    problem: PruningProblem,
    sparsity: float,
    *,
    variant: str = "projected",
    steps: int = 100,
    step_size: float | str = "armijo",
    score: str = "magnitude",
    group: str = "matrix",
    ramp: float = 0.5,
    M0: Tensor | None = None,
) -> PruneResult:
    """Run Algorithm 1 on ``problem`` and return the hard mask at exact sparsity ρ.

    ``variant``: ``"plain"`` or ``"projected"``; ``step_size``: ``"bound"``, ``"armijo"`` or a
    float η > 0; ``score``: ``"magnitude"`` (|M∘W|) or ``"mask"`` (M); ``group``: ``"matrix"`` or
    ``"row"``; ``ramp``: the fraction of the steps over which the projected variant raises its
    target sparsity; ``M0``: the starting mask (default all ones, the dense model).
    """
    rho = check_sparsity("sparsity", sparsity)
    check_choice("variant", variant, VARIANTS)
    check_choice("score", score, SCORES)
    check_choice("group", group, GROUPS)
    check_positive_int("steps", steps)
    if not 0.0 < ramp <= 1.0:
        raise ValueError(f"ramp must lie in (0, 1], got {ramp}")
    M = _initial_mask(problem, M0)
    eta = _initial_step(problem, step_size)
    scaled = False  # Armijo: has the scale-free first trial been taken yet?

    trace = Trace()
    for t in range(steps):
        loss, grad = problem.loss_and_gradient(M)
        if step_size == "armijo":
            trial = 2.0 * eta if scaled else _armijo_first_trial(M, grad, eta)
            scaled = scaled or bool(grad.norm() > 0)
            taken, M = armijo_step(problem, M, loss, grad, trial)
            eta = taken if taken > 0 else eta
        else:
            taken, M = eta, M - eta * grad
        if variant == "projected":
            rho_t = target_sparsity(t, steps, rho, ramp)
            M = M * hard_mask(score_of(M, problem.W, score), rho_t, group)
        trace.record(float(loss), float(grad.norm()), taken, sparsity_of(M))

    mask = hard_mask(score_of(M, problem.W, score), rho, group)
    return PruneResult(problem, mask, M, rho, trace, float(problem.loss(M)))


def _initial_step(problem: PruningProblem, step_size: float | str) -> float:
    if isinstance(step_size, str):
        check_choice("step_size", step_size, ("bound", "armijo"))
        return 1.0 / lipschitz_bound(problem.X, problem.W, problem.lam)
    return check_positive("step_size", step_size)


def _armijo_first_trial(M: Tensor, grad: Tensor, fallback: float) -> float:
    """The first Armijo trial moves M by its own norm: η = ‖M‖_F / ‖∇L‖_F (scale-free).

    It is taken at the first step with a nonzero gradient (at M₀ = 1 with λ = 0 the gradient is
    exactly zero, and the projected variant only moves M away from there by its projection)."""
    g = float(grad.norm())
    return float(M.norm()) / g if g > 0 else fallback


def _initial_mask(problem: PruningProblem, M0: Tensor | None) -> Tensor:
    if M0 is None:
        return torch.ones_like(problem.W)
    check_tensor("M0", M0)
    check_same_shape("M0", M0, "W", problem.W)
    return M0.to(problem.W.dtype).clone()
