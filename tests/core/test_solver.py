"""Algorithm 1 and its variants (spec §3)."""

import itertools
import math

import pytest
import torch

from attnprune.core.masks import n_pruned
from attnprune.core.objective import PruningProblem
from attnprune.core.solver import (
    Adam,
    Armijo,
    FixedStep,
    HardThreshold,
    descend,
    prune,
    prune_with,
    step_size,
    target_sparsity,
)
from attnprune.core.theory import lipschitz_bound


def make_problem(n=24, d=8, lam=0.01, causal=False, scale=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = scale * torch.randn(d, d, generator=g, dtype=torch.float64)
    return PruningProblem(X, W, lam, causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("step_size", ["bound", "armijo"])
def test_plain_descent_never_increases_the_loss(step_size, causal):
    result = prune(make_problem(lam=0.05, causal=causal), 0.5, variant="plain", steps=40, step_size=step_size)
    losses = [*result.trace.loss, result.final_loss]
    assert all(b <= a + 1e-10 * abs(a) for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0]


def test_bound_step_satisfies_the_descent_lemma():
    p = make_problem(lam=0.05)
    eta = 1.0 / lipschitz_bound(p.X, p.W, p.lam)
    result = prune(p, 0.5, variant="plain", steps=30, step_size="bound")
    t = result.trace
    losses = [*t.loss, result.final_loss]
    for k in range(30):
        assert t.step_size[k] == pytest.approx(eta)
        assert losses[k + 1] <= losses[k] - 0.5 * eta * t.grad_norm[k] ** 2 + 1e-10 * max(1.0, losses[k])


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


# -- the one loop and its step rules ---------------------------------------------------------------
def quadratic(center):
    """f(x) = ½‖x − c‖² and its gradient x − c, as an objective of ``descend``."""

    def objective(params, t):
        (x,) = params
        return 0.5 * (x - center).square().sum(), [x - center]

    return objective


def test_fixed_step_follows_the_closed_form_on_a_quadratic():
    center = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    x = torch.zeros(2, 2, dtype=torch.float64)
    trace = descend([x], quadratic(center), FixedStep(0.25), 6)
    expected = center * (1 - 0.75**6)  # x_t − c = (1 − η)^t (x₀ − c)
    torch.testing.assert_close(x, expected, rtol=1e-10, atol=0)
    assert trace.step_size == [0.25] * 6
    gaps = [float(center.norm()) * 0.75**t for t in range(6)]
    assert trace.grad_norm == pytest.approx(gaps, rel=1e-10)
    assert trace.loss == pytest.approx([0.5 * g**2 for g in gaps], rel=1e-10)


def test_armijo_first_trial_is_scale_free_then_doubles():
    """On ½‖x‖², the first trial η = ‖x‖/‖∇‖ = 1 lands on the minimum and is accepted."""
    x = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    rule = Armijo(lambda params: 0.5 * params[0].square().sum(), eta=123.0)
    loss = 0.5 * x.square().sum()
    assert rule.step([x], [x.clone()], loss, 0, 2) == 1.0
    assert torch.equal(x, torch.zeros_like(x)) and rule.eta == 1.0
    y = torch.tensor([[1.0, 1.0]], dtype=torch.float64)  # next trial 2η = 2 overshoots: halved to 1
    assert rule.step([y], [y.clone()], 0.5 * y.square().sum(), 1, 2) == 1.0


def test_armijo_falls_back_while_the_gradient_is_zero():
    x = torch.ones(2, 2, dtype=torch.float64)
    rule = Armijo(lambda params: params[0].sum() * 0, eta=0.125)
    assert rule.step([x], [torch.zeros_like(x)], torch.tensor(0.0), 0, 1) == 0.125
    assert not rule.scaled and torch.equal(x, torch.ones_like(x))


@pytest.mark.parametrize("schedule", ["constant", "cosine", "final-decay"])
def test_adam_rule_matches_torch_adam_with_the_schedule(schedule):
    center = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3)
    x = torch.zeros(2, 3, dtype=torch.float64)
    trace = descend([x], quadratic(center), Adam(0.1, schedule), 8)
    ref = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([ref], lr=0.1)
    for t in range(8):
        optimizer.param_groups[0]["lr"] = step_size(0.1, t, 8, schedule)
        ref.grad = (ref - center).detach()
        optimizer.step()
    torch.testing.assert_close(x, ref.detach(), rtol=1e-10, atol=1e-12)
    assert trace.step_size == [step_size(0.1, t, 8, schedule) for t in range(8)]


def test_descend_projects_and_records_all_parameters_together():
    g = torch.Generator().manual_seed(0)
    W = [torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(2, 5, generator=g, dtype=torch.float64)]
    params = [torch.ones_like(w) for w in W]
    threshold = HardThreshold(W, 0.4, 4, ramp=0.5, group="row")
    seen = []

    def objective(params, t):
        grads = [0.1 * (M - 2.0) for M in params]
        return float(sum(float(M.sum()) for M in params)), grads

    trace = descend(
        params,
        objective,
        FixedStep(0.5),
        4,
        project=threshold,
        after_step=lambda t, params, trace: seen.append((t, len(trace.loss))),
    )
    assert seen == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert trace.sparsity == pytest.approx([n_pruned(5, 0.2) / 5] + [n_pruned(5, 0.4) / 5] * 3)
    for M, B in zip(params, threshold.last, strict=True):
        assert torch.all((B == 0).sum(-1) == n_pruned(5, 0.4)) and torch.all(M[B == 0] == 0)
    joint = math.sqrt(sum(float((0.1 * (torch.ones_like(w) - 2.0)).square().sum()) for w in W))
    assert trace.grad_norm[0] == pytest.approx(joint, rel=1e-10)
    assert trace.validation == []


def test_hard_threshold_with_a_support_keeps_it():
    W = torch.randn(3, 4, dtype=torch.float64)
    support = (torch.rand(3, 4) > 0.5).double()
    M = torch.full_like(W, 2.0)
    threshold = HardThreshold([W], 0.5, 10, support=[support])
    threshold([M], 9)
    assert threshold.last[0] is support and torch.equal(M, 2.0 * support)


def test_prune_with_a_rule_is_prune_with_that_step():
    p = make_problem(causal=True)
    for step, rule in ((0.05, FixedStep(0.05)), ("bound", FixedStep(1.0 / lipschitz_bound(p.X, p.W, p.lam)))):
        a = prune(p, 0.5, steps=8, step_size=step)
        b = prune_with(p, 0.5, rule, steps=8)
        assert torch.equal(a.mask, b.mask) and torch.equal(a.M, b.M) and a.trace == b.trace


def test_adam_prune_on_algorithm_1_follows_the_float64_reference():
    """Adam steps in float32 track the float64 run of the same descent (ρ = 0: no projection ties)."""
    p = make_problem(lam=0.05, causal=True)
    p32 = PruningProblem(p.X.float(), p.W.float(), p.lam, causal=True)
    r64 = prune_with(p, 0.0, Adam(0.02, "cosine"), steps=10)
    r32 = prune_with(p32, 0.0, Adam(0.02, "cosine"), steps=10)
    torch.testing.assert_close(r32.M.double(), r64.M, rtol=1e-5, atol=1e-5)
    assert r32.trace.loss == pytest.approx(r64.trace.loss, rel=1e-4)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: Adam(0.0), "lr"),
        (lambda: Adam(0.1, "linear"), "schedule"),
        (lambda: FixedStep(-1.0), "step_size"),
        (lambda: descend([torch.ones(2, 2)], quadratic(torch.zeros(2, 2)), FixedStep(0.1), 0), "steps"),
        (lambda: prune_with(make_problem(), 0.5, FixedStep(0.1), ramp=1.5), "ramp"),
    ],
)
def test_rules_and_loop_reject_bad_arguments(make, name):
    with pytest.raises(ValueError, match=name):
        make()
