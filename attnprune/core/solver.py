"""Algorithm 1: gradient descent on a real-valued mask M, then a hard mask (chapter 05).

    M₀ = 1;  M_{t+1} = M_t − η ∇L(M_t);  B = top-(1−ρ) entries of the score;  output B∘W or B∘M∘W

Variants (the paper does not say how its hard mask is taken, so both are offered):

- ``"plain"``: T steps of descent, then one hard mask at the end (the literal reading);
- ``"projected"`` (default): after every step, keep the top entries by score and zero the rest,
  with the target sparsity rising linearly from 0 to ρ over the first ``ramp`` fraction of the
  steps, then held at ρ: iterative hard thresholding on the non-linear loss.

Step size η: ``"bound"`` is 1/L_bound (the Lipschitz constant of :mod:`attnprune.core.theory`, for which
the descent lemma guarantees progress), ``"armijo"`` backtracks from twice the last accepted
step until L(M − η∇L) ≤ L(M) − (η/2)‖∇L‖², and a float is used as it is.

Every projected descent of the library is the one loop :func:`descend`: an objective gives the
loss and the gradients of a list of parameters (the closed form of Definition 3.2 here, autograd
for a layer of a real model), a step rule moves them in place (:class:`FixedStep`,
:class:`Armijo`, :class:`Adam` with a schedule of :func:`step_size`), a projection
(:class:`HardThreshold`) keeps the top entries, and a :class:`~attnprune.core.trace.Trace`
records each step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .checks import (
    check_choice,
    check_positive,
    check_positive_int,
    check_same_shape,
    check_sparsity,
    check_tensor,
)
from .masks import GROUPS, hard_mask
from .objective import PruningProblem
from .theory import lipschitz_bound
from .trace import Trace

VARIANTS = ("plain", "projected")
SCORES = ("magnitude", "mask")
OUTPUTS = ("mask-only", "reweighted")
SCHEDULES = ("constant", "cosine", "final-decay")
ARMIJO_SHRINK = 0.5
ARMIJO_MAX_HALVINGS = 60

Objective = Callable[[list[Tensor], int], tuple[Tensor | float, list[Tensor]]]
"""objective(params, t) → (L at params, [∇L for each parameter]) on step t's data."""


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


def check_ramp(ramp: float) -> float:
    """The fraction of the steps over which ρ_t rises to ρ: in (0, 1]."""
    if not 0.0 < ramp <= 1.0:
        raise ValueError(f"ramp must lie in (0, 1], got {ramp}")
    return ramp


def joint_norm(tensors: Sequence[Tensor]) -> float:
    """‖(T₁, …, T_n)‖_F, the Frobenius norm of all the tensors together (one tensor: its norm)."""
    return math.hypot(*(float(t.norm()) for t in tensors))


def zero_fraction(tensors: Sequence[Tensor]) -> float:
    """The fraction of exact zeros over all the tensors together."""
    return sum(int((t == 0).sum()) for t in tensors) / sum(t.numel() for t in tensors)


# -- step rules: move the parameters in place, return the step size taken --------------------------
class StepRule(Protocol):
    def step(self, params: list[Tensor], grads: list[Tensor], loss: Tensor | float, t: int, steps: int) -> float:
        """Update ``params`` in place from their gradients at step t of T; return the η taken."""
        ...


class FixedStep:
    """M ← M − η∇L with one η throughout: a float, or 1/L_bound (the ``"bound"`` step of Algorithm 1)."""

    def __init__(self, eta: float) -> None:
        self.eta = check_positive("step_size", eta)

    def step(self, params: list[Tensor], grads: list[Tensor], loss: Tensor | float, t: int, steps: int) -> float:
        for M, grad in zip(params, grads, strict=True):
            M.sub_(self.eta * grad)
        return self.eta


class Armijo:
    """Backtracking (the ``"armijo"`` step of Algorithm 1): η ← η/2 until
    L(M − η∇L) ≤ L(M) − (η/2)‖∇L‖². The first trial, at the first nonzero gradient, is scale-free,
    η = ‖M‖_F/‖∇L‖_F (at M₀ = 1 with λ = 0 the gradient is exactly zero, and the projected variant
    only moves M away from there by its projection); later trials start at twice the last
    accepted η. ``loss(params)`` evaluates L; ``eta`` is the fallback before any scaling."""

    def __init__(self, loss: Callable[[list[Tensor]], Tensor], eta: float) -> None:
        self.loss = loss
        self.eta = eta
        self.scaled = False  # has the scale-free first trial been taken yet?

    def step(self, params: list[Tensor], grads: list[Tensor], loss: Tensor | float, t: int, steps: int) -> float:
        g = joint_norm(grads)
        trial = 2.0 * self.eta if self.scaled else (joint_norm(params) / g if g > 0 else self.eta)
        self.scaled = self.scaled or g > 0
        taken = self.search(params, grads, float(loss), trial)
        self.eta = taken if taken > 0 else self.eta
        return taken

    def search(self, params: list[Tensor], grads: list[Tensor], loss: float, eta: float) -> float:
        """Halve η from ``eta`` until the sufficient decrease holds; move params; return η (0: none)."""
        g2 = sum(float(grad.square().sum()) for grad in grads)
        for _ in range(ARMIJO_MAX_HALVINGS):
            candidate = [M - eta * grad for M, grad in zip(params, grads, strict=True)]
            if float(self.loss(candidate)) <= loss - 0.5 * eta * g2:
                for M, new in zip(params, candidate, strict=True):
                    M.copy_(new)
                return eta
            eta *= ARMIJO_SHRINK
        return 0.0


class Adam:
    """Adam's per-entry steps (``torch.optim.Adam``, created at the first step) with the step size
    lr_t = :func:`step_size` (lr, t, T, ``schedule``). The multi-tensor ("foreach") implementation:
    the same numbers as the per-tensor loop, bit for bit, in a third of its time on a CPU."""

    def __init__(self, lr: float, schedule: str = "constant") -> None:
        self.lr = check_positive("lr", lr)
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
        self.optimizer: torch.optim.Adam | None = None

    def step(self, params: list[Tensor], grads: list[Tensor], loss: Tensor | float, t: int, steps: int) -> float:
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(params, lr=self.lr, foreach=True)  # all tensors in one pass
        group = self.optimizer.param_groups[0]
        group["lr"] = step_size(self.lr, t, steps, self.schedule)
        for M, grad in zip(params, grads, strict=True):
            M.grad = grad
        self.optimizer.step()
        return group["lr"]


# -- the projection: iterative hard thresholding ---------------------------------------------------
class HardThreshold:
    """The projection of the projected variant (iterative hard thresholding): after step t, each
    mask M keeps its top entries by score (|M∘W| or M, :func:`score_of`) at the target sparsity
    ρ_t of :func:`target_sparsity` and the rest is zeroed, M ← M∘B_t. ``bases`` are the W each
    mask multiplies; ``support`` fixes the masks B instead (refit of a given support).
    ``last`` holds the masks B_t of the last :meth:`select`."""

    def __init__(
        self,
        bases: list[Tensor],
        sparsity: float,
        steps: int,
        *,
        ramp: float = 0.5,
        score: str = "magnitude",
        group: str = "matrix",
        support: list[Tensor] | None = None,
    ) -> None:
        self.bases, self.sparsity, self.steps, self.ramp = bases, sparsity, steps, ramp
        self.score, self.group, self.support = score, group, support
        self.last: list[Tensor] = []

    def masks(self, params: list[Tensor], sparsity: float) -> list[Tensor]:
        """The hard masks B at ``sparsity`` (exact count per group, :func:`hard_mask`), or the support."""
        if self.support is not None:
            return list(self.support)
        with torch.no_grad():
            return [
                hard_mask(score_of(M, W, self.score), sparsity, self.group)
                for M, W in zip(params, self.bases, strict=True)
            ]

    def select(self, params: list[Tensor], t: int) -> list[Tensor]:
        """B_t, the hard masks at ρ_t (kept in :attr:`last`)."""
        self.last = self.masks(params, target_sparsity(t, self.steps, self.sparsity, self.ramp))
        return self.last

    def __call__(self, params: list[Tensor], t: int) -> None:
        with torch.no_grad():
            for M, B in zip(params, self.select(params, t), strict=True):
                M.mul_(B)


# -- the loop ---------------------------------------------------------------------------------------
def descend(
    params: list[Tensor],
    objective: Objective,
    rule: StepRule,
    steps: int,
    *,
    project: Callable[[list[Tensor], int], None] | None = None,
    sparsity: Callable[[list[Tensor]], float] = zero_fraction,
    after_step: Callable[[int, list[Tensor], Trace], None] | None = None,
) -> Trace:
    """Projected descent (Algorithm 1; iterative hard thresholding when ``project`` is given):
    for t = 0, …, T−1

        L_t, ∇L_t = objective(params, t);  params ← rule(params, ∇L_t);  project(params, t)

    moving ``params`` in place. The trace records L_t, ‖∇L_t‖_F (all parameters together), the η
    the rule took and ``sparsity(params)`` (default: their fraction of exact zeros) after the step;
    ``after_step(t, params, trace)`` runs last (a validation check, a checkpoint)."""
    check_positive_int("steps", steps)
    trace = Trace()
    for t in range(steps):
        loss, grads = objective(params, t)
        with torch.no_grad():
            taken = rule.step(params, grads, loss, t, steps)
            if project is not None:
                project(params, t)
        trace.record(float(loss), joint_norm(grads), taken, sparsity(params))
        if after_step is not None:
            after_step(t, params, trace)
    return trace


# -- Algorithm 1 ------------------------------------------------------------------------------------
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
    rho = _check_algorithm_1(sparsity, variant, score, group, steps, ramp)
    M = _initial_mask(problem, M0)
    return _algorithm_1(problem, rho, M, step_rule(problem, step_size), steps, variant, score, group, ramp)


def prune_with(
    problem: PruningProblem,
    sparsity: float,
    rule: StepRule,
    *,
    variant: str = "projected",
    steps: int = 100,
    score: str = "magnitude",
    group: str = "matrix",
    ramp: float = 0.5,
    M0: Tensor | None = None,
) -> PruneResult:
    """Algorithm 1 as :func:`prune`, with any step rule (e.g. :class:`Adam`)."""
    rho = _check_algorithm_1(sparsity, variant, score, group, steps, ramp)
    M = _initial_mask(problem, M0)
    return _algorithm_1(problem, rho, M, rule, steps, variant, score, group, ramp)


def step_rule(problem: PruningProblem, step_size: float | str) -> StepRule:
    """The rule of :func:`prune`'s ``step_size``: ``"bound"`` (η = 1/L_bound), ``"armijo"``
    (falling back to 1/L_bound while the gradient is zero) or a float η > 0."""
    if not isinstance(step_size, str):
        return FixedStep(step_size)
    check_choice("step_size", step_size, ("bound", "armijo"))
    eta = 1.0 / lipschitz_bound(problem.X, problem.W, problem.lam)
    if step_size == "bound":
        return FixedStep(eta)
    return Armijo(lambda params: problem.loss(params[0]), eta)


def _algorithm_1(
    problem: PruningProblem,
    rho: float,
    M: Tensor,
    rule: StepRule,
    steps: int,
    variant: str,
    score: str,
    group: str,
    ramp: float,
) -> PruneResult:
    """The loop of Algorithm 1 on the closed-form L(M), ∇L(M) of Definition 3.2, then B at ρ."""
    threshold = HardThreshold([problem.W], rho, steps, ramp=ramp, score=score, group=group)

    def objective(params: list[Tensor], t: int) -> tuple[Tensor, list[Tensor]]:
        loss, grad = problem.loss_and_gradient(params[0])
        return loss, [grad]

    project = threshold if variant == "projected" else None
    trace = descend([M], objective, rule, steps, project=project)
    (mask,) = threshold.masks([M], rho)
    return PruneResult(problem, mask, M, rho, trace, float(problem.loss(M)))


def _check_algorithm_1(sparsity: float, variant: str, score: str, group: str, steps: int, ramp: float) -> float:
    rho = check_sparsity("sparsity", sparsity)
    check_choice("variant", variant, VARIANTS)
    check_choice("score", score, SCORES)
    check_choice("group", group, GROUPS)
    check_positive_int("steps", steps)
    check_ramp(ramp)
    return rho


def _initial_mask(problem: PruningProblem, M0: Tensor | None) -> Tensor:
    if M0 is None:
        return torch.ones_like(problem.W)
    check_tensor("M0", M0)
    check_same_shape("M0", M0, "W", problem.W)
    return M0.to(problem.W.dtype).clone()
