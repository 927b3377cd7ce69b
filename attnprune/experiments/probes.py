"""Numerical probes of the theory (:mod:`attnprune.core.theory`) on concrete instances.

Random and worst-case instances of Definition 1.2; difference quotients of ∇L over random pairs
and along descent paths; the Hessian norm by power iteration on autograd Hessian-vector products,
and an ascent over M that looks for the largest one; restarts of Algorithm 1 that give ξ; PL
ratios at path points, random points and along rays; the time of one step. The chapters
"Lipschitz gradient", "PL inequality" and "Convergence" are built from these.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..core.checks import check_positive, check_positive_int, check_same_shape
from ..core.objective import PruningProblem
from ..core.solver import Trace, prune
from ..core.theory import SOFTMAX_CURVATURE, linear_map_norm_sq, lipschitz_bound, pl_constant, pl_ratios


# -- instances ---------------------------------------------------------------------------------
def gaussian_problem(
    n: int,
    d: int,
    *,
    x_scale: float = 1.0,
    w_scale: float = 1.0,
    lam: float = 0.0,
    causal: bool = False,
    seed: int = 0,
) -> PruningProblem:
    """A random instance of Definition 1.2 (3.2 when ``causal``), in float64.

    X_ij ~ N(0, x_scale²) and W_ij ~ N(0, (w_scale/d)²), so an off-diagonal logit of
    S = XWXᵀ has standard deviation x_scale²·w_scale (the *logit scale*). ‖X‖₂ grows like
    x_scale·(√n + √d) and ‖W‖_max like (w_scale/d)·√(2 ln d²).
    """
    check_positive_int("n", n)
    check_positive_int("d", d)
    check_positive("x_scale", x_scale)
    check_positive("w_scale", w_scale)
    gen = torch.Generator().manual_seed(seed)
    W = (w_scale / d) * torch.randn(d, d, generator=gen, dtype=torch.float64)
    X = x_scale * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return PruningProblem(X, W, lam, causal)


def worst_case_problem(n: int, d: int, *, lam: float = 0.0, seed: int = 0) -> PruningProblem:
    """An instance built to bring the bound close: X = [I_n 0] (n ≤ d) and W_ij = ±1.

    Then ‖X‖₂ = 1, ‖W‖_max = 1, L_bound = 5/4 + λ, and each logit S_ij = M_ij W_ij is set by its
    own mask entry, so nothing of the curvature is averaged away across tokens.
    """
    check_positive_int("n", n)
    check_positive_int("d", d)
    if n > d:
        raise ValueError(f"n must be ≤ d for the worst-case instance (X = [I_n 0]), got n={n}, d={d}")
    gen = torch.Generator().manual_seed(seed)
    W = torch.where(torch.rand(d, d, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    X = torch.zeros(n, d, dtype=torch.float64)
    X[:, :n] = torch.eye(n, dtype=torch.float64)
    return PruningProblem(X, W, lam, False)


def random_masks(shape: Sequence[int], count: int, scale: float, seed: int) -> list[Tensor]:
    """``count`` masks M = scale·Z with Z_ij ~ N(0, 1), in float64, from ``seed``."""
    check_positive_int("count", count)
    check_positive("scale", scale)
    gen = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(count)]


# -- Lipschitz: difference quotients ---------------------------------------------------------------
def gradient_ratio(problem: PruningProblem, M1: Tensor, M2: Tensor) -> float:
    """‖∇L(M₁) − ∇L(M₂)‖_F / ‖M₁ − M₂‖_F, a lower bound on the Lipschitz constant of ∇L."""
    check_same_shape("M2", M2, "M1", M1)
    gap = float((M1 - M2).norm())
    if gap == 0.0:
        raise ValueError("M1 and M2 must differ (their difference quotient is undefined)")
    return float((problem.gradient(M1) - problem.gradient(M2)).norm()) / gap


def random_pair_ratios(
    problem: PruningProblem, pairs: int, scale: float, distance: float | None = None, seed: int = 0
) -> list[float]:
    """Difference quotients over random pairs: M₁ = scale·Z₁ and M₂ = scale·Z₂ (far pairs), or
    M₂ = M₁ + distance·Z₂/‖Z₂‖_F when ``distance`` is given (near pairs, ‖M₁ − M₂‖_F = distance)."""
    firsts = random_masks(problem.W.shape, pairs, scale, seed)
    seconds = random_masks(problem.W.shape, pairs, 1.0 if distance else scale, seed + 1)
    if distance is not None:
        check_positive("distance", distance)
        seconds = [M + distance * Z / Z.norm() for M, Z in zip(firsts, seconds, strict=True)]
    return [gradient_ratio(problem, M1, M2) for M1, M2 in zip(firsts, seconds, strict=True)]


def descent_path(
    problem: PruningProblem, steps: int, step_size: float | str = "armijo", M0: Tensor | None = None
) -> list[Tensor]:
    """The iterates M₀, M₁, …, M_T of Algorithm 1 without pruning (ρ = 0, plain variant), one
    :func:`attnprune.core.solver.prune` step at a time (so an Armijo search restarts at every step
    from the scale-free trial η = ‖M‖_F/‖∇L‖_F)."""
    check_positive_int("steps", steps)
    M = torch.ones_like(problem.W) if M0 is None else M0.clone()
    path = [M]
    for _ in range(steps):
        M = prune(problem, 0.0, variant="plain", steps=1, step_size=step_size, M0=M).M
        path.append(M)
    return path


def path_ratios(problem: PruningProblem, path: Sequence[Tensor]) -> list[float]:
    """Difference quotients of consecutive iterates of a descent path (equal neighbours skipped)."""
    return [gradient_ratio(problem, a, b) for a, b in itertools.pairwise(path) if not torch.equal(a, b)]


# -- Lipschitz: the Hessian -----------------------------------------------------------------------
def hessian_vector_product(problem: PruningProblem, M: Tensor, V: Tensor) -> Tensor:
    """∇²L(M)·V by double backward through :meth:`PruningProblem.loss` (autograd)."""
    check_same_shape("V", V, "M", M)
    M = M.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.loss(M), M, create_graph=True)
    (product,) = torch.autograd.grad(grad, M, V)
    return product


def hessian_norm(problem: PruningProblem, M: Tensor, iters: int = 20, seed: int = 0) -> tuple[float, Tensor]:
    """‖∇²L(M)‖₂ by power iteration on Hessian-vector products; returns the estimate and the
    last (unit) direction v. The estimate is ‖∇²L(M) v‖ for a unit v, so it never exceeds the
    true norm, and by the mean value theorem never exceeds a Lipschitz constant of ∇L."""
    check_positive_int("iters", iters)
    Mg = M.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.loss(Mg), Mg, create_graph=True)
    V = torch.randn(M.shape, generator=torch.Generator().manual_seed(seed), dtype=M.dtype)
    V = V / V.norm()
    value = 0.0
    for _ in range(iters):
        (HV,) = torch.autograd.grad(grad, Mg, V, retain_graph=True)
        value = float(HV.norm())
        if value == 0.0:
            break
        V = HV / value
    return value, V.detach()


def maximise_hessian_norm(
    problem: PruningProblem, M0: Tensor, steps: int = 10, iters: int = 10, lr: float = 1.0
) -> float:
    """The largest ‖∇²L(M)‖₂ found by ascent over M from M₀.

    Alternates power iteration (direction v) with a normalised gradient step on
    q(M) = vᵀ∇²L(M)v (third derivatives by autograd), moving every entry of M by about ``lr``;
    a step that does not increase the norm is refused and ``lr`` halved.
    """
    check_positive_int("steps", steps)
    check_positive("lr", lr)
    best, V = hessian_norm(problem, M0, iters)
    M = M0.detach().clone()
    for _ in range(steps):
        Mg = M.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(problem.loss(Mg), Mg, create_graph=True)
        (HV,) = torch.autograd.grad(grad, Mg, V, create_graph=True)
        q = (HV * V).sum()
        (dq,) = torch.autograd.grad(q, Mg)
        if float(dq.norm()) == 0.0:
            break
        sign = 1.0 if float(q.detach()) >= 0 else -1.0
        candidate = M + sign * lr * math.sqrt(M.numel()) * dq / dq.norm()
        value, V_new = hessian_norm(problem, candidate, iters)
        if value > best:
            best, M, V = value, candidate, V_new
        else:
            lr /= 2
    return best


def row_hessian(s: Tensor, f0: Tensor) -> Tensor:
    """The Hessian of s ↦ ½‖softmax(s) − f₀‖² for a batch of rows (B × k → B × k × k), in closed
    form: J² + Σ_k g_k σ_k[(e_k − σ)(e_k − σ)ᵀ − J], J = diag σ − σσᵀ, g = σ − f₀."""
    check_same_shape("f0", f0, "s", s)
    sigma = torch.softmax(s, -1)
    J = torch.diag_embed(sigma) - sigma.unsqueeze(-1) * sigma.unsqueeze(-2)
    weight = (sigma - f0) * sigma
    D = torch.eye(s.shape[-1], dtype=s.dtype) - sigma.unsqueeze(-2)  # row k: e_k − σ
    curvature = torch.einsum("bk,bki,bkj->bij", weight, D, D) - weight.sum(-1)[:, None, None] * J
    return J @ J + curvature


def max_row_hessian_norm(ks: Sequence[int], scales: Sequence[float], samples: int = 20000, seed: int = 0) -> float:
    """The largest row-Hessian norm found over random logits s = c·Z and targets (random
    softmax rows and one-hot rows), for every row length k and scale c: a lower bound on the
    best constant of the row lemma (the proof gives 5/4)."""
    check_positive_int("samples", samples)
    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    for k in ks:
        check_positive_int("k", k)
        for c in scales:
            s = c * torch.randn(samples, k, generator=gen, dtype=torch.float64)
            soft = torch.softmax(2 * c * torch.randn(samples, k, generator=gen, dtype=torch.float64), -1)
            hot = torch.nn.functional.one_hot(torch.randint(0, k, (samples,), generator=gen), k).double()
            for f0 in (soft, hot):
                best = max(best, float(torch.linalg.matrix_norm(row_hessian(s, f0), ord=2).max()))
    return best


def lipschitz_measurements(
    problem: PruningProblem,
    *,
    pairs: int = 8,
    path_steps: int = 20,
    power_iters: int = 20,
    ascent_steps: int = 5,
    scales: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    seed: int = 0,
) -> dict[str, float]:
    """Every empirical Lipschitz estimate of one instance, and the bound.

    - ``far``: the largest difference quotient over random pairs M = s·Z (each scale s);
    - ``near``: the same with ‖M₁ − M₂‖_F = 10⁻³ (a local, directional curvature);
    - ``path``: consecutive iterates of an Armijo descent path from M₀ = 1 (0 when the path does
      not move: with λ = 0, M₀ = 1 is a global minimiser);
    - ``hessian``: power iteration on ∇²L at M = 1, at the random points, at the path's end,
      then ascent over M from the best of them (:func:`maximise_hessian_norm`);
    - ``empirical``: the largest of these; ``bound``: L_bound; ``refined``: (5/4)‖A‖² + λ.
    """
    far, near, candidates = [], [], [torch.ones_like(problem.W)]
    for k, scale in enumerate(scales):
        far += random_pair_ratios(problem, pairs, scale, seed=seed + 10 * k)
        near += random_pair_ratios(problem, pairs, scale, distance=1e-3, seed=seed + 10 * k + 5)
        candidates += random_masks(problem.W.shape, 2, scale, seed + 10 * k + 7)
    path = descent_path(problem, path_steps)
    candidates.append(path[-1])
    along = path_ratios(problem, path)
    norms = [hessian_norm(problem, M, power_iters, seed)[0] for M in candidates]
    start = candidates[int(np.argmax(norms))]
    hess = max(max(norms), maximise_hessian_norm(problem, start, ascent_steps, power_iters // 2 or 1))
    row = {"far": max(far), "near": max(near), "path": max(along, default=0.0), "hessian": hess}
    row["empirical"] = max(row.values())
    row["bound"] = lipschitz_bound(problem.X, problem.W, problem.lam)
    if problem.X.ndim == 2 and problem.W.ndim == 2:
        row["refined"] = SOFTMAX_CURVATURE * linear_map_norm_sq(problem.X, problem.W) + problem.lam
    return row


# -- PL inequality ---------------------------------------------------------------------------------
def loss_and_grad_norms(problem: PruningProblem, masks: Sequence[Tensor]) -> tuple[list[float], list[float]]:
    """L(M) and ‖∇L(M)‖_F at each mask."""
    values = [problem.loss_and_gradient(M) for M in masks]
    return [float(v[0]) for v in values], [float(v[1].norm()) for v in values]


@dataclass
class Restarts:
    """Runs of Algorithm 1 without pruning from several starts: their traces and end points."""

    traces: list[Trace]
    finals: list[float]
    final_grad_norms: list[float]

    @property
    def xi(self) -> float:
        """ξ: the best loss found."""
        return min(self.finals)

    @property
    def spread(self) -> float:
        """The worst final loss minus the best."""
        return max(self.finals) - min(self.finals)


def restarts(
    problem: PruningProblem, count: int = 5, steps: int = 300, start_scale: float = 1.0, seed: int = 0
) -> Restarts:
    """Run Algorithm 1 (ρ = 0, plain, Armijo steps) from M₀ = 1 and from ``count − 1`` random
    starts M₀ = 1 + start_scale·Z; ξ is the best final loss."""
    check_positive_int("count", count)
    starts = [torch.ones_like(problem.W)]
    if count > 1:
        starts += [1.0 + M for M in random_masks(problem.W.shape, count - 1, start_scale, seed)]
    traces, finals, grads = [], [], []
    for M0 in starts:
        result = prune(problem, 0.0, variant="plain", steps=steps, step_size="armijo", M0=M0)
        loss, grad = problem.loss_and_gradient(result.M)
        traces.append(result.trace)
        finals.append(float(loss))
        grads.append(float(grad.norm()))
    return Restarts(traces, finals, grads)


def ray_ratios(problem: PruningProblem, direction: Tensor, ts: Sequence[float], xi: float) -> np.ndarray:
    """PL ratios 2‖∇L‖²/(L − ξ) at the points t·direction (NaN where L ≤ ξ). As t grows the
    softmax saturates: with λ = 0 the gradient dies while the loss does not, and the ratio → 0;
    with λ > 0 the regulariser dominates and the ratio → 4λ."""
    losses, grads = loss_and_grad_norms(problem, [t * direction for t in ts])
    return pl_ratios(losses, grads, xi)


def pl_measurements(
    problem: PruningProblem,
    *,
    count: int = 5,
    steps: int = 300,
    point_scales: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0),
    per_scale: int = 4,
    ray_ts: Sequence[float] = (1.0, 4.0, 16.0, 64.0),
    rays: int = 2,
    gap_floor: float = 1e-8,
    seed: int = 0,
) -> dict[str, float]:
    """The PL constant of one instance, estimated three ways, with ξ = the best of ``count`` runs.

    - ``mu_path``: over the points of every run's trace (``gap_floor`` relative to L(M₀) − ξ);
    - ``mu_random``: at random points M = s·Z for each s in ``point_scales``;
    - ``mu_ray``: at t·R for t in ``ray_ts`` along ``rays`` random directions R and along R = 1;
      ``ray_far``: the smallest ratio at the largest t;
    - ``mu``: the smallest of the three; ``spread``: worst minus best final loss of the runs, and
      ``stuck_grad``: the final gradient norm of the worst run.
    """
    runs = restarts(problem, count, steps, seed=seed)
    xi = runs.xi
    scale = max(max(t.loss[0] for t in runs.traces) - xi, 1e-300)
    mu_path = min(pl_constant(t.loss, t.grad_norm, xi, gap_floor * scale) for t in runs.traces)
    points = [
        M for k, s in enumerate(point_scales) for M in random_masks(problem.W.shape, per_scale, s, seed + 100 + k)
    ]
    mu_random = pl_constant(*loss_and_grad_norms(problem, points), xi)
    directions = [torch.ones_like(problem.W), *random_masks(problem.W.shape, rays, 1.0, seed + 200)]
    along = np.array([ray_ratios(problem, R, ray_ts, xi) for R in directions])
    worst = int(np.argmax(runs.finals))
    return {
        "xi": xi,
        "spread": runs.spread,
        "stuck_grad": runs.final_grad_norms[worst],
        "mu_path": mu_path,
        "mu_random": mu_random,
        "mu_ray": float(np.nanmin(along)) if np.isfinite(along).any() else math.inf,
        "ray_far": float(np.nanmin(along[:, -1])) if np.isfinite(along[:, -1]).any() else math.inf,
        "mu": min(mu_path, mu_random, float(np.nanmin(along)) if np.isfinite(along).any() else math.inf),
    }


# -- cost of a step ------------------------------------------------------------------------------
def time_per_step(problem: PruningProblem, repeats: int = 5) -> float:
    """The fastest of ``repeats`` timings of one step at M = 1 (loss and gradient, then the
    update M − η∇L), in seconds; the minimum is the timing least disturbed by other work."""
    check_positive_int("repeats", repeats)
    M = torch.ones_like(problem.W)
    problem.loss_and_gradient(M)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        _, grad = problem.loss_and_gradient(M)
        M - 1e-3 * grad
        best = min(best, time.perf_counter() - start)
    return best


def step_timings(ns: Sequence[int], ds: Sequence[int], repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """Time per step for every (n, d), with the work n²d + nd² of one gradient."""
    rows = []
    for n in ns:
        for d in ds:
            problem = gaussian_problem(n, d, lam=0.1, seed=seed)
            rows.append({"n": n, "d": d, "work": n * n * d + n * d * d, "seconds": time_per_step(problem, repeats)})
    return pd.DataFrame(rows)
