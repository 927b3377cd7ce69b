"""The constants and formulas of attnprune.core.theory: the Lipschitz bound, PL ratios, convergence."""

import math

import numpy as np
import pytest
import torch

from attnprune import PruningProblem, prune
from attnprune.core.solver import Trace
from attnprune.core.theory import (
    SOFTMAX_CURVATURE,
    descent_lemma_slack,
    descent_lemma_violations,
    fit_exponents,
    linear_map_norm_sq,
    lipschitz_bound,
    lipschitz_bound_from_norms,
    pl_constant,
    pl_predicted_steps,
    pl_ratios,
    steps_to_reach,
)


def problem(n=6, d=4, lam=0.1, causal=False, w=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    W = w * torch.randn(d, d, generator=gen, dtype=torch.float64) / d
    return PruningProblem(X, W, lam, causal)


# -- the bound ---------------------------------------------------------------------------------
def test_bound_is_the_stated_formula():
    p = problem()
    x_norm = float(torch.linalg.matrix_norm(p.X, ord=2))
    w_max = float(p.W.abs().max())
    expected = 1.25 * w_max**2 * x_norm**4 + 0.1
    # ‖X‖₂ from an SVD (LAPACK-dependent in the last bits), then raised to the 4th power
    assert lipschitz_bound(p.X, p.W, 0.1) == pytest.approx(expected, rel=1e-10)
    assert lipschitz_bound_from_norms(x_norm, w_max, 0.1) == pytest.approx(expected, rel=1e-10)


def test_bound_adds_the_sequences_of_a_batch():
    p = problem()
    X2 = torch.stack([p.X, 2 * p.X])
    single = lipschitz_bound(p.X, p.W) / 1.0
    assert lipschitz_bound(X2, p.W) == pytest.approx(single * (1 + 16), rel=1e-10)  # a batched SVD


def test_bound_refuses_a_negative_lambda():
    p = problem()
    with pytest.raises(ValueError, match="lam"):
        lipschitz_bound(p.X, p.W, -1.0)
    with pytest.raises(ValueError, match="x_norm"):
        lipschitz_bound_from_norms(-1.0, 1.0)


def row_hessian(s, f0):
    """The Hessian of s ↦ ½‖softmax(s) − f₀‖² by autograd."""
    return torch.autograd.functional.hessian(lambda v: 0.5 * (torch.softmax(v, 0) - f0).square().sum(), s)


@pytest.mark.parametrize("k", [2, 3, 5, 12])
def test_row_hessian_norm_is_at_most_five_quarters(k):
    """The lemma behind the bound: every row Hessian has spectral norm ≤ 5/4, for logits and
    targets from diffuse to one-hot."""
    gen = torch.Generator().manual_seed(k)
    worst = 0.0
    for scale in (0.1, 1.0, 3.0, 10.0, 30.0):
        for _ in range(20):
            s = scale * torch.randn(k, generator=gen, dtype=torch.float64)
            f0 = torch.softmax(scale * torch.randn(k, generator=gen, dtype=torch.float64), 0)
            H = row_hessian(s, f0)
            worst = max(worst, float(torch.linalg.matrix_norm(H, ord=2)))
    assert 0.0 < worst <= SOFTMAX_CURVATURE


def test_difference_quotients_stay_below_the_bound():
    for causal in (False, True):
        p = problem(n=10, d=5, causal=causal, w=4.0)
        bound = lipschitz_bound(p.X, p.W, p.lam)
        gen = torch.Generator().manual_seed(1)
        for _ in range(20):
            M1 = 2 * torch.randn(5, 5, generator=gen, dtype=torch.float64)
            M2 = M1 + 0.01 * torch.randn(5, 5, generator=gen, dtype=torch.float64)
            ratio = (p.gradient(M1) - p.gradient(M2)).norm() / (M1 - M2).norm()
            assert float(ratio) <= bound


def test_linear_map_norm_matches_the_dense_operator():
    p = problem(n=7, d=3)
    w = p.W.reshape(-1)
    # vec(X(M∘W)Xᵀ) = (X ⊗ X) diag(vec W) vec(M) for row-major vec
    A = torch.kron(p.X, p.X) @ torch.diag(w)
    exact = float(torch.linalg.matrix_norm(A, ord=2)) ** 2
    assert linear_map_norm_sq(p.X, p.W, iters=500) == pytest.approx(exact, rel=1e-8)
    crude = float(torch.linalg.matrix_norm(p.X, ord=2)) ** 4 * float(p.W.abs().max()) ** 2
    assert exact <= crude * (1 + 1e-12)


def test_linear_map_norm_refuses_batches():
    p = problem()
    with pytest.raises(ValueError, match="single matrices"):
        linear_map_norm_sq(torch.stack([p.X, p.X]), p.W)


# -- PL ---------------------------------------------------------------------------------------
def test_pl_ratios_are_the_largest_mu_at_each_point():
    ratios = pl_ratios([3.0, 1.5, 1.0, 0.5], [2.0, 1.0, 0.0, 1.0], xi=1.0)
    assert ratios[0] == pytest.approx(2 * 4.0 / 2.0)
    assert ratios[1] == pytest.approx(2 * 1.0 / 0.5)
    assert np.isnan(ratios[2]) and np.isnan(ratios[3])  # at or below ξ: no constraint
    # the inequality holds with that μ, and fails with any larger one
    loss, grad, mu = 3.0, 2.0, ratios[0]
    assert grad**2 >= mu / 2 * (loss - 1.0) - 1e-12
    assert grad**2 < 1.01 * mu / 2 * (loss - 1.0)


def test_pl_constant_is_the_smallest_ratio_above_the_floor():
    assert pl_constant([3.0, 1.5, 1.0 + 1e-12], [2.0, 1.0, 1e-9], 1.0, gap_floor=1e-9) == pytest.approx(4.0)
    assert pl_constant([0.5], [1.0], 1.0) == math.inf


def test_pl_ratios_validate_their_input():
    with pytest.raises(ValueError, match="same length"):
        pl_ratios([1.0, 2.0], [1.0], 0.0)
    with pytest.raises(ValueError, match="gap_floor"):
        pl_ratios([1.0], [1.0], 0.0, gap_floor=-1.0)


# -- convergence ------------------------------------------------------------------------------
def test_pl_predicted_steps_is_the_geometric_rate():
    # (1 − μ/(4L))^t · gap0 ≤ ε  with μ/(4L) = 1/2: halve each step, 2^-10 ≤ 1e-3
    assert pl_predicted_steps(1.0, 1e-3, mu=2.0, L=1.0) == 10
    assert pl_predicted_steps(1.0, 2.0, mu=2.0, L=1.0) == 0
    with pytest.raises(ValueError, match="mu must be ≤ 4L"):
        pl_predicted_steps(1.0, 1e-3, mu=5.0, L=1.0)
    with pytest.raises(ValueError, match="eps"):
        pl_predicted_steps(1.0, 0.0, mu=1.0, L=1.0)


def test_descent_lemma_slack_from_a_trace():
    trace = Trace()
    trace.record(10.0, 2.0, 0.5, 0.0)  # needs L₁ ≤ 10 − 1 = 9
    trace.record(8.0, 2.0, 0.5, 0.0)  # needs L₂ ≤ 7
    slack = descent_lemma_slack(trace, final_loss=7.5)
    assert slack.tolist() == pytest.approx([1.0, -0.5])
    assert descent_lemma_violations(trace, 7.5) == 1
    assert descent_lemma_violations(trace, 7.0) == 0


def test_gradient_descent_with_the_bound_never_violates_the_descent_lemma():
    p = problem(n=12, d=6, lam=0.5, w=3.0)
    result = prune(p, 0.0, variant="plain", steps=50, step_size="bound")
    assert descent_lemma_violations(result.trace, result.final_loss) == 0
    rounding = 1e-10 * np.maximum(1.0, np.abs(result.trace.loss))  # float64 sums, relative to L(M_t)
    assert (descent_lemma_slack(result.trace, result.final_loss) >= -rounding).all()


def test_steps_to_reach():
    assert steps_to_reach([5.0, 3.0, 2.0, 1.0], [4.0, 2.0, 0.5]) == [1, 2, None]


def test_fit_exponents_recovers_a_power_law():
    ns, ds = np.meshgrid([16.0, 32.0, 64.0], [4.0, 8.0])
    seconds = 3e-9 * ns**2 * ds
    a, b = fit_exponents(ns.ravel(), ds.ravel(), seconds.ravel())
    assert a == pytest.approx(2.0) and b == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 3"):
        fit_exponents([1.0, 2.0], [1.0, 2.0], [1.0, 2.0])
