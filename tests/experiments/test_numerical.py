"""The numerical score examined (chapter 09): the relaxed problem's quadratic form, gradient and Hessian;
the closed form for every λ, ρ and scale of X; Newton's one step; the ranking of A⁻¹1 and its diagonal
approximation; Lemma 1's bounds and its worst case; Theorem 3 = the refit. Small float64 problems."""

from __future__ import annotations

import math

import pytest
import torch

from attnprune.experiments import numerical as nm
from attnprune.structured import scores as sc
from attnprune.structured.compensation import pruned_of
from attnprune.structured.layers import layer_shapes
from attnprune.structured.stats import InputStats, capture_layer_stats


def _layer(D: int = 20, D_out: int = 12, N: int = 150, seed: int = 0):
    """X (N × D, correlated columns) and weight (D_out × D), float64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=g, dtype=torch.float64) @ torch.randn(D, D, generator=g, dtype=torch.float64)
    return X, torch.randn(D_out, D, generator=g, dtype=torch.float64)


def _part(D: int = 24, head_dim: int | None = None, seed: int = 0) -> nm.Projection:
    X, weight = _layer(D=D, seed=seed)
    return nm.Projection(3, "o_proj" if head_dim else "down_proj", weight, InputStats.of(X), head_dim)


def test_the_definition_is_the_quadratic_form_in_A():
    X, weight = _layer()
    A = sc.relaxed_matrix(weight, X.T @ X)
    z = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    by_definition = float(nm.relaxed_objective_from_data(z, X, weight, 2.5, 0.4))
    assert nm.relaxed_objective(z, A, 2.5, 0.4) == pytest.approx(by_definition, rel=1e-10)


def test_gradient_and_hessian_are_those_of_the_definition():
    X, weight = _layer(seed=2)
    A = sc.relaxed_matrix(weight, X.T @ X)
    lam, rho = 3.0, 0.3
    z = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    f = lambda v: nm.relaxed_objective_from_data(v, X, weight, lam, rho)
    gradient = torch.autograd.functional.jacobian(f, z)
    hessian = torch.autograd.functional.hessian(f, z)
    torch.testing.assert_close(nm.relaxed_gradient(z, A, lam, rho), gradient, rtol=1e-9, atol=1e-9 * gradient.norm())
    torch.testing.assert_close(nm.relaxed_hessian(A, lam), hessian, rtol=1e-9, atol=1e-9 * hessian.norm())


@pytest.mark.parametrize("lam", [0.01, 5.0, math.inf])
@pytest.mark.parametrize("rho", [0.2, 0.6])
def test_the_solution_gives_the_library_closed_form(lam, rho):
    X, weight = _layer(seed=4)
    solution = nm.solve_relaxed(weight, X.T @ X, damping=1e-6)
    A = sc.relaxed_matrix(weight, X.T @ X, 1e-6)
    lam_abs = math.inf if lam == math.inf else sc.absolute_lambda(A, lam)
    assert solution.absolute(lam) == pytest.approx(lam_abs, rel=1e-12)
    torch.testing.assert_close(solution.mask(lam_abs, rho), sc.closed_form_mask(A, lam_abs, rho), rtol=1e-10, atol=0)


def test_the_closed_form_minimises_f():
    X, weight = _layer(seed=5)
    solution = nm.solve_relaxed(weight, X.T @ X, damping=0.0)
    A = sc.relaxed_matrix(weight, X.T @ X)
    lam, rho = 0.7, 0.5
    z = solution.mask(lam, rho)
    assert (
        nm.relaxed_gradient(z, A, lam, rho).norm() < 1e-9 * nm.relaxed_gradient(torch.ones_like(z), A, lam, rho).norm()
    )
    g = torch.Generator().manual_seed(6)
    for _ in range(5):
        other = z + 1e-3 * torch.randn(z.shape, generator=g, dtype=torch.float64)
        assert nm.relaxed_objective(other, A, lam, rho) > nm.relaxed_objective(z, A, lam, rho)


def test_newton_lands_in_one_step():
    X, weight = _layer(seed=7)
    check = nm.newton_check(weight, X.T @ X, lam=100.0, rho=0.5, steps=50, seed=1)
    assert check["step 1 vs z*"] < 1e-10 and check["step T vs z*"] < 1e-10 and check["step T vs step 1"] < 1e-10
    assert check["gradient at z*"] < 1e-10
    assert check["A positive definite"]


def test_the_relative_lambda_makes_z_independent_of_the_scale_of_X():
    X, weight = _layer(seed=8)
    raw = nm.solve_relaxed(weight, X.T @ X)
    scaled = nm.solve_relaxed(weight, X.T @ X, x_scale=10.0)
    torch.testing.assert_close(scaled.u, raw.u / 100.0, rtol=1e-10, atol=0)
    for lam in (0.1, 100.0):
        torch.testing.assert_close(
            scaled.mask(scaled.absolute(lam), 0.5), raw.mask(raw.absolute(lam), 0.5), rtol=1e-10, atol=1e-12
        )
    # an absolute λ on c·X is λ/c² on X
    torch.testing.assert_close(scaled.mask(3.0, 0.5), raw.mask(0.03, 0.5), rtol=1e-10, atol=1e-12)


def test_mask_range_residual_is_one_over_one_plus_lambda_s():
    X, weight = _layer(seed=9)
    solution = nm.solve_relaxed(weight, X.T @ X)
    for lam in (0.01, 1.0, 100.0):
        row = nm.mask_range(solution, lam, 0.4)
        assert row["constraint residual"] == pytest.approx(1.0 / (1.0 + row["lam_s"]), rel=1e-9)
    assert nm.mask_range(solution, math.inf, 0.4)["constraint residual"] == pytest.approx(0.0, abs=1e-12)


def test_same_ranking_detects_an_inversion():
    u = torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
    assert nm.same_ranking(1.0 - 0.1 * u, u)
    assert not nm.same_ranking(torch.tensor([0.7, 0.8, 0.9], dtype=torch.float64), u)


def test_every_library_score_ranks_as_A_inverse_one():
    part = _part(seed=10)
    solution = nm.solve_relaxed(part.weight, part.stats.H)
    check = nm.ranking_check(part, solution, [0.01, 1.0, math.inf], [0.3, 0.7])
    assert check["scores"] == 6 and check["ranked as −A⁻¹1"] == 6


def test_a_diagonal_A_makes_the_score_wanda_sp():
    """With orthogonal input channels (XᵀX diagonal), A is diagonal and A⁻¹1 ranks as Wanda-sp."""
    g = torch.Generator().manual_seed(11)
    D = 16
    Q, _ = torch.linalg.qr(torch.randn(40, D, generator=g, dtype=torch.float64))
    X = Q * torch.rand(D, generator=g, dtype=torch.float64)  # orthogonal columns of different norms
    part = nm.Projection(0, "down_proj", torch.randn(8, D, generator=g, dtype=torch.float64), InputStats.of(X))
    agreement = nm.wanda_agreement(part, nm.solve_relaxed(part.weight, part.stats.H, damping=0.0), 0.5)
    assert agreement["rank correlation"] == pytest.approx(1.0) and agreement["overlap"] == 1.0
    assert agreement["chance overlap"] == 0.5


def test_heads_are_scored_and_pruned_whole():
    part = _part(D=24, head_dim=4, seed=12)
    solution = nm.solve_relaxed(part.weight, part.stats.H)
    assert part.units == 6
    torch.testing.assert_close(part.unit_scores(-solution.u), (-solution.u).reshape(6, 4).mean(dim=1))
    for kind in nm.MASK_KINDS:
        pruned = nm.pruned_channels(part, solution, 0.5, kind)
        assert pruned.numel() == 12 and torch.equal(pruned.reshape(3, 4) % 4, torch.arange(4).expand(3, 4))
    weakest_heads = nm.weakest(part.unit_scores(-solution.u), 3)
    assert torch.equal(nm.pruned_channels(part, solution, 0.5, "numerical").reshape(3, 4)[:, 0] // 4, weakest_heads)


def test_column_errors_are_the_norms_of_the_pruned_outputs():
    X, weight = _layer(seed=13)
    pruned = torch.tensor([1, 4, 5, 11])
    M = torch.ones(X.shape[1], dtype=torch.float64)
    M[pruned] = 0.0
    direct = (X @ weight.T - X @ (M[None, :] * weight).T).norm(dim=0)  # ‖XW_{:,i} − X(M∘W_{:,i})‖ per output i
    torch.testing.assert_close(nm.column_errors(weight, X.T @ X, pruned), direct, rtol=1e-10, atol=0)


def test_operator_norms():
    X, _ = _layer(seed=14)
    assert nm.operator_norm(X.T @ X, "spectral") == pytest.approx(float(torch.linalg.matrix_norm(X, 2)), rel=1e-10)
    assert nm.operator_norm(X.T @ X, "frobenius") == pytest.approx(float(X.norm()), rel=1e-10)
    with pytest.raises(ValueError, match="norm"):
        nm.operator_norm(X.T @ X, "nuclear")


def test_lemma1_bounds_on_random_layers():
    """The tight bound R‖W_{:,i}‖ holds for every mask; the ratios scale as 1/ρ and 1/√|P|."""
    X, weight = _layer(D=30, seed=15)
    H = X.T @ X
    R = nm.operator_norm(H)
    for seed in range(5):
        pruned = torch.randperm(30, generator=torch.Generator().manual_seed(seed))[:12]
        ratios = nm.lemma1_ratios(weight, H, pruned, R=R)
        assert (ratios["tight"] <= 1 + 1e-12).all()
        torch.testing.assert_close(torch.tensor(ratios["paper"].to_numpy()), torch.tensor(ratios["tight"] / 0.4))
        torch.testing.assert_close(
            torch.tensor(ratios["corrected"].to_numpy()), torch.tensor(ratios["tight"] / math.sqrt(12))
        )


@pytest.mark.parametrize("rho", [0.25, 0.5])
def test_the_worst_case_breaks_the_papers_bound_by_one_over_rho(rho):
    weight, H, pruned = nm.lemma1_worst_case(16, rho, R=3.0)
    ratios = nm.lemma1_ratios(weight, H, pruned, R=nm.operator_norm(H))
    assert ratios["paper"].max() == pytest.approx(1 / rho, rel=1e-12)
    assert ratios["tight"].max() == pytest.approx(1.0, rel=1e-12)
    assert ratios["corrected"].max() == pytest.approx(1 / math.sqrt(pruned.numel()), rel=1e-12)
    # the numerical score prunes exactly these channels: the bound fails on the method's own mask
    part = nm.Projection(0, "down_proj", weight, InputStats(H, torch.zeros(16, dtype=torch.float64), 16))
    solution = nm.solve_relaxed(weight, H)
    assert torch.equal(nm.pruned_channels(part, solution, rho, "numerical"), pruned)


def test_the_worst_case_rows():
    row = nm.lemma1_worst_case_row(20, 0.5)
    assert row["method's own mask"] and row["pruned"] == 10 and row["above paper's bound"] == 0.5
    assert row["paper"] == pytest.approx(2.0) and row["tight"] == pytest.approx(1.0)
    assert row["paper, R = ‖X‖_F"] == pytest.approx(2.0 / math.sqrt(20))  # ‖R·I‖_F = R√D
    rank_one = nm.lemma1_worst_case_row(20, 0.25, kind="rank-one")
    assert rank_one["paper"] == pytest.approx(4.0) and rank_one["paper, R = ‖X‖_F"] == pytest.approx(4.0)
    assert rank_one["tight"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="round"):
        nm.lemma1_worst_case(4, 0.1)
    with pytest.raises(ValueError, match="kind"):
        nm.lemma1_worst_case(8, 0.5, kind="diagonal")


def test_lemma1_table_rows():
    parts = [_part(D=24, head_dim=4, seed=16), _part(D=20, seed=17)]
    solutions = [nm.solve_relaxed(p.weight, p.stats.H) for p in parts]
    table = nm.lemma1_table(parts, solutions, 0.5)
    assert len(table) == 2 * len(nm.MASK_KINDS) * len(nm.NORMS)
    assert (table["tight"] <= 1 + 1e-12).all()
    spectral = table[table["norm"] == "spectral"].set_index(["module", "mask"])
    frobenius = table[table["norm"] == "frobenius"].set_index(["module", "mask"])
    assert (frobenius["paper"] <= spectral["paper"] + 1e-12).all()  # a larger R, a looser bound


def test_compensation_lagrangian_equals_the_refit():
    X, weight = _layer(D=30, seed=18)
    kept = torch.randperm(30, generator=torch.Generator().manual_seed(0))[:18].sort().values
    check = nm.compensation_check(weight, X.T @ X, kept, damping=0.01, repeats=1)
    assert check["difference on S"] < 1e-10 and check["left on P"] < 1e-10
    assert check["kept"] == 18 and check["refit seconds"] > 0 and check["Lagrangian seconds"] > 0
    assert pruned_of(kept, 30).numel() == 12


def test_removed_fractions_on_a_model(tiny_llama):
    token_ids = torch.randint(1000, (2, 24), generator=torch.Generator().manual_seed(0))
    stats = capture_layer_stats(tiny_llama, token_ids, batch_size=2)
    layers = [0, 1]
    parts = nm.projections(tiny_llama, stats, layers)
    assert [(p.layer, p.module) for p in parts[:2]] == [(0, "o_proj"), (0, "down_proj")]
    solutions = [nm.solve_relaxed(p.weight, p.stats.H) for p in parts]
    shapes = layer_shapes(tiny_llama)
    table = nm.removed_fractions(parts, solutions, shapes, lam=100.0, rho=0.4)
    assert list(table["layer"]) == layers and table["ratio"].iloc[0] == pytest.approx(0.4, abs=0.05)
    assert table[["heads removed", "channels removed"]].stack().between(0, 1).all()
    scaled = [nm.solve_relaxed(p.weight, p.stats.H, x_scale=10.0) for p in parts]
    same = nm.removed_fractions(parts, scaled, shapes, lam=100.0, rho=0.4)
    assert same.equals(table)  # the relative λ: the scale of X does not matter
    lam = nm.typical_lambda(solutions, 100.0)
    absolute = nm.removed_fractions(parts, scaled, shapes, lam=lam, rho=0.4, relative=False)
    assert absolute.equals(nm.removed_fractions(parts, solutions, shapes, lam=lam / 100, rho=0.4, relative=False))
    with pytest.raises(ValueError, match="pair"):
        nm.removed_fractions(parts[:3], solutions[:3], shapes, lam=1.0, rho=0.4)
    settings = [("relative", 100.0, 1.0), ("relative", 100.0, 10.0), ("absolute", 1.0, 10.0), ("absolute", 0.01, 1.0)]
    sweep = nm.allocation_sweep(parts, {1.0: solutions, 10.0: scaled}, shapes, settings, rho=0.4, reference=lam)
    assert len(sweep) == len(settings) * len(layers)
    by = {
        key: group[["heads removed", "channels removed"]].reset_index(drop=True)
        for key, group in sweep.groupby(["kind", "value", "x_scale"])
    }
    assert by[("relative", 100.0, 1.0)].equals(by[("relative", 100.0, 10.0)])
    assert by[("absolute", 1.0, 10.0)].equals(by[("absolute", 0.01, 1.0)])
