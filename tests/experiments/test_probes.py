"""Numerical probes of the theory: instances, Hessian norms, restarts, PL ratios, timings."""

import itertools
import math

import numpy as np
import pytest
import torch

from attnprune import autograd_gradient
from attnprune.core.theory import lipschitz_bound
from attnprune.experiments import probes as pr


def test_gaussian_problem_is_seeded_and_has_the_stated_logit_scale():
    a = pr.gaussian_problem(200, 32, x_scale=2.0, w_scale=0.5, lam=0.1, causal=True, seed=3)
    b = pr.gaussian_problem(200, 32, x_scale=2.0, w_scale=0.5, lam=0.1, causal=True, seed=3)
    assert torch.equal(a.X, b.X) and torch.equal(a.W, b.W)
    assert a.X.dtype == torch.float64 and a.causal and a.lam == 0.1
    S = a.X @ a.W @ a.X.T
    off = S[~torch.eye(200, dtype=torch.bool)]
    assert float(off.std()) == pytest.approx(2.0**2 * 0.5, rel=0.15)


def test_gaussian_problem_validates():
    with pytest.raises(ValueError, match="n must"):
        pr.gaussian_problem(0, 4)
    with pytest.raises(ValueError, match="x_scale"):
        pr.gaussian_problem(4, 4, x_scale=0.0)


def test_worst_case_problem():
    p = pr.worst_case_problem(3, 5, lam=0.2)
    assert lipschitz_bound(p.X, p.W, p.lam) == pytest.approx(1.25 + 0.2)
    assert set(p.W.unique().tolist()) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="n must be ≤ d"):
        pr.worst_case_problem(6, 5)


def test_hessian_vector_product_matches_differences_of_the_gradient():
    p = pr.gaussian_problem(9, 4, w_scale=3.0, lam=0.3, causal=True, seed=1)
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    V = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    h = 1e-5
    central = (p.gradient(M + h * V) - p.gradient(M - h * V)) / (2 * h)
    hv = pr.hessian_vector_product(p, M, V)
    assert float((hv - central).norm() / central.norm()) < 1e-7


def test_hessian_norm_matches_the_dense_hessian_and_stays_below_the_bound():
    p = pr.gaussian_problem(6, 3, w_scale=4.0, lam=0.1, seed=2)
    M = torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    H = torch.autograd.functional.hessian(lambda m: p.loss(m.reshape(3, 3)), M.reshape(-1))
    exact = float(torch.linalg.matrix_norm(H, ord=2))
    estimate, V = pr.hessian_norm(p, M, iters=300)
    assert estimate == pytest.approx(exact, rel=1e-6)
    assert float(V.norm()) == pytest.approx(1.0)
    assert estimate <= lipschitz_bound(p.X, p.W, p.lam)


def test_ascent_never_lowers_the_hessian_norm_and_stays_below_the_bound():
    p = pr.worst_case_problem(3, 4)
    M0 = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start, _ = pr.hessian_norm(p, M0, iters=10)
    best = pr.maximise_hessian_norm(p, M0, steps=8, iters=10)
    assert start <= best <= lipschitz_bound(p.X, p.W, p.lam)


def test_gradient_ratio_and_random_pairs():
    p = pr.gaussian_problem(8, 4, lam=0.5, seed=0)
    M = torch.ones(4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="must differ"):
        pr.gradient_ratio(p, M, M)
    near = pr.random_pair_ratios(p, 3, 1.0, distance=1e-3, seed=0)
    far = pr.random_pair_ratios(p, 3, 1.0, seed=0)
    assert len(near) == len(far) == 3
    # λ‖ΔM‖ alone is a lower bound up to the softmax part, which is bounded by L_bound − λ
    bound = lipschitz_bound(p.X, p.W, p.lam)
    assert all(0.0 < r <= bound for r in near + far)


def test_descent_path_descends():
    p = pr.gaussian_problem(8, 4, lam=0.2, seed=0)
    path = pr.descent_path(p, 6)
    assert len(path) == 7 and torch.equal(path[0], torch.ones(4, 4, dtype=torch.float64))
    losses = [float(p.loss(M)) for M in path]
    assert all(b <= a for a, b in itertools.pairwise(losses))
    assert len(pr.path_ratios(p, path)) == 6


def test_lipschitz_measurements_stay_below_the_bound():
    p = pr.gaussian_problem(10, 4, w_scale=4.0, lam=0.1, causal=True, seed=0)
    row = pr.lipschitz_measurements(p, pairs=2, path_steps=4, power_iters=6, ascent_steps=2, scales=(1.0,))
    assert row["empirical"] == max(row["far"], row["near"], row["path"], row["hessian"])
    assert 0.0 < row["empirical"] <= row["refined"] <= row["bound"] * (1 + 1e-9)


def test_restarts_give_the_best_loss():
    p = pr.gaussian_problem(8, 4, lam=0.1, seed=0)
    runs = pr.restarts(p, count=3, steps=40)
    assert len(runs.traces) == len(runs.finals) == 3
    assert runs.xi == min(runs.finals) and runs.spread >= 0.0
    assert runs.xi < runs.traces[0].loss[0]


def test_ray_ratios_die_without_the_regulariser_and_tend_to_four_lambda_with_it():
    direction = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flat = pr.gaussian_problem(8, 4, w_scale=2.0, lam=0.0, seed=0)
    ratios = pr.ray_ratios(flat, direction, [1.0, 100.0, 1000.0], xi=0.0)
    assert ratios[-1] < 1e-8 * ratios[0]
    lam = 0.3
    ridge = pr.gaussian_problem(8, 4, w_scale=2.0, lam=lam, seed=0)
    far = pr.ray_ratios(ridge, direction, [1e3], xi=0.0)[0]
    assert far == pytest.approx(4 * lam, rel=1e-3)


def test_pl_measurements():
    p = pr.gaussian_problem(8, 4, lam=0.1, seed=0)
    row = pr.pl_measurements(p, count=2, steps=60, point_scales=(1.0,), per_scale=2, ray_ts=(1.0, 1e3), rays=1)
    assert row["mu"] == min(row["mu_path"], row["mu_random"], row["mu_ray"])
    assert 0.0 < row["mu"] <= 4 * 0.1 * (1 + 1e-3)
    assert row["ray_far"] == pytest.approx(0.4, rel=1e-3)
    assert not math.isnan(row["xi"])


def test_step_timings():
    table = pr.step_timings([16, 32], [4], repeats=2)
    assert list(table.columns) == ["n", "d", "work", "seconds"]
    assert table["work"].tolist() == [16 * 16 * 4 + 16 * 4 * 4, 32 * 32 * 4 + 32 * 4 * 4]
    assert (table["seconds"] > 0).all()
    assert np.isfinite(table["seconds"]).all()


def test_autograd_agrees_with_the_closed_form_on_probe_instances():
    p = pr.gaussian_problem(7, 3, w_scale=2.0, lam=0.2, causal=True, seed=4)
    M = torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(p.gradient(M), autograd_gradient(p, M), rtol=1e-10, atol=1e-12)


def test_row_hessian_matches_autograd():
    gen = torch.Generator().manual_seed(0)
    s = 3 * torch.randn(4, 5, generator=gen, dtype=torch.float64)
    f0 = torch.softmax(torch.randn(4, 5, generator=gen, dtype=torch.float64), -1)
    closed = pr.row_hessian(s, f0)
    for b in range(4):
        auto = torch.autograd.functional.hessian(
            lambda v, b=b: 0.5 * (torch.softmax(v, 0) - f0[b]).square().sum(), s[b]
        )
        assert torch.allclose(closed[b], auto, rtol=1e-10, atol=1e-12)  # entries ≤ 5/4, float64


def test_max_row_hessian_norm_is_below_five_quarters():
    best = pr.max_row_hessian_norm([2, 5], [0.5, 2.0, 8.0], samples=2000)
    assert 0.1 < best <= 1.25
