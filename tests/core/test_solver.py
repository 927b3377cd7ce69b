"""Algorithm 1 and its variants (spec §3)."""

import pytest
import torch

from attnprune.core.masks import n_pruned
from attnprune.core.objective import PruningProblem
from attnprune.core.solver import prune, target_sparsity
from attnprune.core.theory import lipschitz_bound


def make_problem(n=24, d=8, lam=0.01, causal=False, scale=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = scale * torch.randn(d, d, generator=g, dtype=torch.float64)
    return PruningProblem(X, W, lam, causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("step_size", ["bound", "armijo"])
def test_plain_descent_never_increases_the_loss(step_size, causal):
    result = prune(make_problem(lam=0.05, causal=causal), 0.5, variant="plain", steps=40,
                   step_size=step_size)
    losses = result.trace.loss + [result.final_loss]
    assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:]))
    assert losses[-1] < losses[0]


def test_bound_step_satisfies_the_descent_lemma():
    p = make_problem(lam=0.05)
    eta = 1.0 / lipschitz_bound(p.X, p.W, p.lam)
    result = prune(p, 0.5, variant="plain", steps=30, step_size="bound")
    t = result.trace
    losses = t.loss + [result.final_loss]
    for k in range(30):
        assert t.step_size[k] == pytest.approx(eta)
        assert losses[k + 1] <= losses[k] - 0.5 * eta * t.grad_norm[k] ** 2 + 1e-12


@pytest.mark.parametrize("group", ["matrix", "row"])
@pytest.mark.parametrize("rho", [0.3, 0.5, 0.75])
def test_final_mask_has_the_exact_sparsity(rho, group):
    p = make_problem(d=10)
    for variant in ("plain", "projected"):
        result = prune(p, rho, variant=variant, steps=10, group=group)
        zeros = (result.mask == 0).sum(-1) if group == "row" else (result.mask == 0).sum()
        size = 10 if group == "row" else 100
        assert (zeros == n_pruned(size, rho)).all()
        assert set(result.mask.unique().tolist()) <= {0.0, 1.0}


def test_projected_descent_keeps_the_constraint_after_the_ramp():
    steps, ramp, rho = 20, 0.5, 0.6
    result = prune(make_problem(d=10), rho, variant="projected", steps=steps, ramp=ramp)
    for t in range(steps):
        expected = n_pruned(100, target_sparsity(t, steps, rho, ramp)) / 100
        assert result.trace.sparsity[t] >= expected - 1e-12
        if t + 1 >= ramp * steps:
            assert result.trace.sparsity[t] >= rho - 1e-12
    assert (result.M[result.mask == 0] == 0).all()


def test_sparsity_schedule_rises_linearly_then_holds():
    values = [target_sparsity(t, 10, 0.5, 0.4) for t in range(10)]
    assert values[:4] == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert values[4:] == [0.5] * 6


def test_outputs_mask_only_and_reweighted():
    p = make_problem()
    result = prune(p, 0.5, steps=15)
    assert torch.equal(result.pruned_weight("mask-only"), result.mask * p.W)
    assert torch.equal(result.pruned_weight("reweighted"), result.mask * result.M * p.W)
    assert result.relative_error("mask-only") == p.relative_error(result.mask * p.W)


def test_projected_mask_fits_better_than_magnitude_on_the_fitted_input():
    p = make_problem(n=32, d=8, lam=0.0, scale=0.6)
    magnitude = p.relative_error((p.W.abs() > p.W.abs().flatten().median()).double() * p.W)
    ours = prune(p, 0.5, variant="projected", steps=60).relative_error("reweighted")
    assert ours < magnitude


def test_reruns_give_the_same_mask_and_trace():
    first = prune(make_problem(causal=True), 0.5, steps=20)
    second = prune(make_problem(causal=True), 0.5, steps=20)
    assert torch.equal(first.mask, second.mask) and torch.equal(first.M, second.M)
    assert first.trace == second.trace


def test_score_mask_keeps_the_largest_entries_of_M():
    result = prune(make_problem(), 0.5, variant="plain", steps=5, score="mask")
    kept, dropped = result.M[result.mask == 1], result.M[result.mask == 0]
    assert kept.min() >= dropped.max()


def test_float32_problems_run():
    p = make_problem()
    p32 = PruningProblem(p.X.float(), p.W.float(), p.lam)
    result = prune(p32, 0.5, steps=5)
    assert result.mask.dtype == torch.float32


def test_starting_mask_is_used():
    p = make_problem()
    result = prune(p, 0.0, variant="plain", steps=1, step_size=1e-12, M0=torch.full_like(p.W, 0.5))
    assert torch.allclose(result.M, torch.full_like(p.W, 0.5))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.2}, "sparsity"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": -1.0}, "step_size"),
        ({"step_size": "newton"}, "step_size"),
        ({"steps": 0}, "steps"),
        ({"variant": "greedy"}, "variant"),
        ({"score": "random"}, "score"),
        ({"group": "column"}, "group"),
        ({"ramp": 0.0}, "ramp"),
        ({"M0": torch.ones(3, 3, dtype=torch.float64)}, "M0"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    args = {"sparsity": 0.5, **kwargs}
    with pytest.raises(ValueError, match=name):
        prune(make_problem(), args.pop("sparsity"), **args)
