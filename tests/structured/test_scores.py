"""The scores (spec §2 and §4): Newton's one step = T steps = the closed form, the A⁻¹1 ranking, the
baselines, and the registry on whole models."""

from __future__ import annotations

import math

import pytest
import torch

from attnprune.structured import scores as sc
from attnprune.structured.stats import InputStats, capture_layer_stats


def _problem(D: int = 24, D_out: int = 16, N: int = 200, seed: int = 0):
    """A random layer: weight (D_out × D, float64) and X (N × D) with correlated columns."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=g, dtype=torch.float64) @ torch.randn(D, D, generator=g, dtype=torch.float64)
    weight = torch.randn(D_out, D, generator=g, dtype=torch.float64)
    return weight, X


def test_newton_converges_in_one_step_to_the_closed_form():
    weight, X = _problem()
    A = sc.relaxed_matrix(weight, X.T @ X, damping=1e-8)
    lam = sc.absolute_lambda(A, 10.0)
    z0 = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    one = sc.newton_mask(A, lam, 0.4, steps=1, z0=z0)
    fifty = sc.newton_mask(A, lam, 0.4, steps=50, z0=z0)
    closed = sc.closed_form_mask(A, lam, 0.4)
    torch.testing.assert_close(one, closed, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fifty, closed, rtol=1e-9, atol=1e-9)


def test_the_gradient_vanishes_at_the_closed_form():
    weight, X = _problem(seed=2)
    A = sc.relaxed_matrix(weight, X.T @ X)
    lam, rho = sc.absolute_lambda(A, 3.0), 0.3
    z = sc.closed_form_mask(A, lam, rho)
    gradient = A @ (z - 1) + lam * (z.sum() - (1 - rho) * A.shape[0])
    assert gradient.abs().max() < 1e-9 * A.diagonal().mean()


def test_the_ranking_is_that_of_A_inverse_one_whatever_lambda_and_rho():
    weight, X = _problem(seed=3)
    A = sc.relaxed_matrix(weight, X.T @ X)
    u = torch.linalg.solve(A, torch.ones(A.shape[0], dtype=torch.float64))
    expected = torch.argsort(-u)  # large entries of A⁻¹1 are pruned first: they have the lowest z
    for lam in (0.1, 10.0, math.inf):
        for rho in (0.2, 0.7):
            z = sc.closed_form_mask(A, lam if lam == math.inf else sc.absolute_lambda(A, lam), rho)
            assert torch.equal(torch.argsort(z), expected)


def test_infinite_lambda_enforces_the_constraint_and_is_the_limit():
    weight, X = _problem(seed=4)
    A = sc.relaxed_matrix(weight, X.T @ X)
    D, rho = A.shape[0], 0.25
    exact = sc.closed_form_mask(A, math.inf, rho)
    assert exact.sum().item() == pytest.approx((1 - rho) * D, rel=1e-12)
    large = sc.closed_form_mask(A, sc.absolute_lambda(A, 1e9), rho)
    torch.testing.assert_close(large, exact, rtol=1e-6, atol=1e-6)


def test_diagonal_A_reduces_the_ranking_to_wanda_sp():
    """With orthogonal input columns, XᵀX and so A are diagonal: ranking of A⁻¹1 = Wanda-sp's."""
    g = torch.Generator().manual_seed(5)
    D = 20
    Q, _ = torch.linalg.qr(torch.randn(100, D, generator=g, dtype=torch.float64))
    X = Q * torch.rand(D, generator=g, dtype=torch.float64).add(0.5) * 10  # orthogonal columns
    weight = torch.randn(12, D, generator=g, dtype=torch.float64)
    stats, options = InputStats.of(X), sc.ScoreOptions(damping=0.0)
    numerical = sc.numerical_score(weight, stats, options)
    assert torch.equal(torch.argsort(numerical), torch.argsort(sc.wanda_sp_score(weight, stats, options)))


def test_numerical_and_newton_scores_agree_on_a_float32_layer():
    weight, X = _problem(D=32, seed=6)
    stats, options = InputStats.of(X.float()), sc.ScoreOptions(ratio=0.5, lam=50.0, newton_steps=5)
    closed = sc.channel_scores("numerical", weight.float(), stats, options)
    newton = sc.channel_scores("newton", weight.float(), stats, options)
    assert closed.dtype == newton.dtype == torch.float64
    torch.testing.assert_close(newton, closed, rtol=1e-7, atol=1e-7)


def test_baselines_follow_their_formulas():
    weight, X = _problem(seed=7)
    stats, options = InputStats.of(X), sc.ScoreOptions()
    column_norms = weight.norm(dim=0)
    flap = sc.flap_score(weight, stats, options)
    raw = X.var(dim=0) * column_norms**2
    torch.testing.assert_close(flap, (raw - raw.mean()) / raw.std(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sc.wanda_sp_score(weight, stats, options), column_norms * X.norm(dim=0))
    torch.testing.assert_close(sc.magnitude_score(weight, stats, options), column_norms)


def test_random_is_seeded():
    weight, X = _problem(seed=8)
    stats = InputStats.of(X)
    first = sc.random_score(weight, stats, sc.ScoreOptions(seed=3))
    assert torch.equal(first, sc.random_score(weight, stats, sc.ScoreOptions(seed=3)))
    assert not torch.equal(first, sc.random_score(weight, stats, sc.ScoreOptions(seed=4)))


def test_input_stats_add_up_over_batches_and_give_the_variance():
    _, X = _problem(D=10, seed=9)
    whole, parts = InputStats.of(X), InputStats.of(X[:70]) + InputStats.of(X[70:])
    torch.testing.assert_close(parts.H, whole.H)
    assert parts.count == whole.count == 200
    torch.testing.assert_close(whole.variance, X.var(dim=0), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(whole.mean, X.mean(dim=0))


def test_head_score_is_the_mean_of_its_channels():
    channels = torch.arange(12, dtype=torch.float64)
    torch.testing.assert_close(sc.head_scores(channels, 4), torch.tensor([1.5, 5.5, 9.5], dtype=torch.float64))


def test_stats_capture_matches_the_inputs_of_o_proj_and_down_proj(llama_4to1, token_ids):
    seen = {}
    layer = llama_4to1.model.layers[1]
    hooks = [
        layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a: seen.setdefault("o", a[0].detach())),
        layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.setdefault("down", a[0].detach())),
    ]
    try:
        with torch.no_grad():
            llama_4to1(token_ids[:1])
    finally:
        for hook in hooks:
            hook.remove()
    stats = capture_layer_stats(llama_4to1, token_ids[:1])[1]
    for got, X in ((stats.attention, seen["o"]), (stats.mlp, seen["down"])):
        X = X.reshape(-1, X.shape[-1]).double()
        torch.testing.assert_close(got.H, X.T @ X, rtol=1e-10, atol=1e-10)
        assert got.count == token_ids.shape[1]


@pytest.fixture(scope="module")
def tiny_stats(tiny_llama):
    """The layer statistics of the tiny Llama-3.2-shaped model (4:1) on two sequences of 24 tokens."""
    return capture_layer_stats(tiny_llama, torch.randint(1000, (2, 24), generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", sorted(sc.SCORES))
def test_every_score_runs_on_every_layer_of_the_tiny_llama(tiny_llama, tiny_stats, name):
    scores = sc.score_model(tiny_llama, tiny_stats, name, sc.ScoreOptions(newton_steps=2))
    assert len(scores) == 2
    for layer in scores:
        assert layer.heads.shape == (8,) and layer.channels.shape == (1024,)
        assert torch.isfinite(layer.heads).all() and torch.isfinite(layer.channels).all()
    if name == "random":  # distinct seeds per layer and module
        assert not torch.equal(scores[0].channels, scores[1].channels)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"ratio": 1.0}, "ratio"), ({"ratio": -0.1}, "ratio"), ({"lam": 0.0}, "lam"), ({"damping": -1.0}, "damping"),
     ({"newton_steps": 0}, "newton_steps"), ({"seed": "0"}, "seed")],
)  # fmt: skip
def test_bad_options_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        sc.ScoreOptions(**kwargs)


def test_bad_score_inputs_name_the_argument(smol_3to1, model_stats):
    with pytest.raises(ValueError, match="score must be one of"):
        sc.score_model(smol_3to1, model_stats["3:1"], "obd")
    with pytest.raises(ValueError, match="lam must be finite"):
        sc.score_model(smol_3to1, model_stats["3:1"], "newton", sc.ScoreOptions(lam=math.inf))
    with pytest.raises(ValueError, match="stats must hold one LayerStats"):
        sc.score_model(smol_3to1, model_stats["3:1"][:1], "flap")
    with pytest.raises(ValueError, match="model must be a Llama-like"):
        sc.score_model(torch.nn.Linear(2, 2), model_stats["3:1"], "flap")
    weight = torch.zeros(4, 5)
    with pytest.raises(ValueError, match="stats describe 3 input channels"):
        sc.channel_scores("magnitude", weight, InputStats.of(torch.ones(2, 3)), sc.ScoreOptions())
