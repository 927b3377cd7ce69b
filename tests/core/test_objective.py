"""Definitions 1.2 / 3.2 and the closed-form gradient of spec §2."""

import pytest
import torch

from attnprune.core.objective import (
    PruningProblem,
    autograd_gradient,
    finite_difference_gradient,
    gradient,
    loss,
)

SHAPES = [(5, 3), (12, 6), (30, 8), (7, 12)]


def problem(n, d, lam=0.1, causal=False, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = scale * torch.randn(d, d, generator=g, dtype=torch.float64)
    M = torch.rand(d, d, generator=g, dtype=torch.float64) * 2 - 0.5
    return PruningProblem(X, W, lam, causal), M


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n, d", SHAPES)
def test_closed_form_gradient_matches_autograd(n, d, causal):
    p, M = problem(n, d, causal=causal)
    assert rel(p.gradient(M), autograd_gradient(p, M)) < 1e-8


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n, d", SHAPES[:3])
def test_closed_form_gradient_matches_central_differences(n, d, causal):
    p, M = problem(n, d, causal=causal)
    # ε = 1e-5 balances truncation (∝ ε²) against float64 rounding (∝ 2e-16/ε): both ~1e-10 here; with
    # ε = 1e-6 the rounding noise alone reached 3e-9, a BLAS- and thread-dependent margin of only 3x
    assert rel(p.gradient(M), finite_difference_gradient(p, M, eps=1e-5)) < 1e-8


def test_gradient_without_regulariser_vanishes_at_the_dense_mask():
    p, _ = problem(10, 4, lam=0.0)
    M = torch.ones(4, 4, dtype=torch.float64)
    assert float(p.loss(M)) == 0.0
    assert float(p.gradient(M).abs().max()) == 0.0


def test_loss_is_half_squared_error_plus_ridge():
    p, M = problem(9, 4, lam=0.3)
    F = torch.softmax(p.X @ (M * p.W) @ p.X.T, dim=-1)
    expected = 0.5 * (F - p.target).square().sum() + 0.15 * M.square().sum()
    assert float(p.loss(M)) == pytest.approx(float(expected), rel=1e-10)


def test_batched_problem_is_the_sum_of_its_parts():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3, 1, 6, 4, generator=g, dtype=torch.float64)  # 3 sequences
    W = torch.randn(2, 4, 4, generator=g, dtype=torch.float64)  # 2 heads, one mask each
    M = torch.rand(2, 4, 4, generator=g, dtype=torch.float64)
    batched = PruningProblem(X, W, lam=0.2)
    loss_sum, grad_sum = 0.0, torch.zeros_like(M)
    for h in range(2):
        for b in range(3):
            single = PruningProblem(X[b, 0], W[h], lam=0.0)
            loss_sum += float(single.loss(M[h]))
            grad_sum[h] += single.gradient(M[h])
    loss_sum += 0.1 * float(M.square().sum())
    grad_sum += 0.2 * M
    value, grad = batched.loss_and_gradient(M)
    assert float(value) == pytest.approx(loss_sum, rel=1e-10)  # float64 sums in another order
    assert rel(grad, grad_sum) < 1e-10
    assert rel(grad, autograd_gradient(batched, M)) < 1e-10


def test_functional_wrappers_agree_with_the_problem():
    p, M = problem(8, 4)
    assert float(loss(M, p.X, p.W, p.lam)) == float(p.loss(M))
    assert torch.equal(gradient(M, p.X, p.W, p.lam), p.gradient(M))


def test_extreme_scores_keep_loss_and_gradient_finite():
    p, M = problem(10, 4, scale=200.0, causal=True)
    value, grad = p.loss_and_gradient(M)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_relative_error_of_the_dense_weight_is_zero():
    p, _ = problem(8, 4)
    assert p.relative_error(p.W) == 0.0


@pytest.mark.parametrize(
    "kwargs, name",
    [({"lam": -0.1}, "lam"), ({"lam": float("nan")}, "lam")],
)
def test_bad_regulariser(kwargs, name):
    X = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=name):
        PruningProblem(X, torch.eye(3, dtype=torch.float64), **kwargs)


def test_bad_masks_name_the_argument():
    p, _ = problem(6, 3)
    with pytest.raises(ValueError, match=r"\bM\b"):
        p.loss(torch.ones(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\bM\b"):
        p.loss(torch.full((3, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="W_pruned"):
        p.relative_error(torch.ones(2, 2, dtype=torch.float64))


def test_non_square_weight_is_refused():
    with pytest.raises(ValueError, match=r"\bW\b.*square"):
        PruningProblem(torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64))
