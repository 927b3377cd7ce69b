"""The deployable objective (true attention of q_proj/k_proj), on the tiny randomly initialised
Llama-3.2-shaped model (rope_type llama3, grouped-query attention). Whole-model pruning is in
test_prune.py."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from attnprune.core.baselines import sparsegpt_prune
from attnprune.core.masks import n_pruned
from attnprune.llm import models
from attnprune.llm import prune as pipeline
from attnprune.llm.capture import capture_attention_inputs, layer_inputs
from attnprune.llm.models import AttentionShape, attention_shape
from attnprune.llm.qk_objective import (
    LayerProblem,
    _chunk_order,
    attention_probabilities,
    fit_qk,
    probabilities_from,
    probability_error,
    queries_keys,
    query_halves,
)

SEQ = 24


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1000, 50000, (4, SEQ), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def layer1(tiny_llama, ids):
    """The problem of layer 1 on 4 sequences, 2 per chunk."""
    X = capture_attention_inputs(tiny_llama, ids, [1])[1]
    cos, sin = layer_inputs(tiny_llama, ids[:1])[1]["position_embeddings"]
    return pipeline.layer_problem(tiny_llama, 1, X, cos, sin, batch_size=2)


def test_probabilities_match_the_eager_attention_of_transformers(tiny_llama, ids):
    model = copy.deepcopy(tiny_llama)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        reference = model(ids, output_attentions=True).attentions
    X = capture_attention_inputs(model, ids)
    cos, sin = layer_inputs(model, ids[:1])[1]["position_embeddings"]
    for layer in (0, 1):
        q, k = models.qk_modules(model, layer)
        P = attention_probabilities(X[layer], q.weight, k.weight, cos, sin, attention_shape(model))
        assert P.shape == (4, 8, SEQ, SEQ)
        torch.testing.assert_close(P, reference[layer], atol=1e-5, rtol=1e-5)
        assert torch.all(P.triu(1) == 0)


def test_dense_weights_have_zero_error_and_the_target_is_chunked_consistently(layer1):
    assert layer1.n_chunks == 2
    assert layer1.relative_error(layer1.Wq, layer1.Wk) == 0.0
    full = attention_probabilities(layer1.X, layer1.Wq, layer1.Wk, layer1.cos, layer1.sin, layer1.shape)
    torch.testing.assert_close(torch.cat([layer1.target(0), layer1.target(1)]), full)
    assert layer1.target_norm() == pytest.approx(float(full.square().sum()), rel=1e-5)


def test_the_target_is_recomputed_when_too_large_to_keep(layer1, monkeypatch):
    import attnprune.llm.qk_objective as deployable

    monkeypatch.setattr(deployable, "CACHE_ELEMENTS", 1)
    small = LayerProblem(layer1.X, layer1.Wq, layer1.Wk, layer1.cos, layer1.sin, layer1.shape, batch_size=2)
    assert isinstance(small._dense[0], tuple)
    torch.testing.assert_close(small.target(1), layer1.target(1))


def test_fit_gives_exact_sparsity_and_beats_magnitude_on_the_fitted_inputs(layer1):
    rho = 0.5
    fit = fit_qk(layer1, rho, steps=30, lr=0.05)
    for B, W in ((fit.mask_q, fit.weight_q), (fit.mask_k, fit.weight_k)):
        assert torch.all((B == 0).sum(1) == n_pruned(B.shape[1], rho))
        assert torch.all(W[B == 0] == 0)
    assert fit.trace.sparsity[-1] == pytest.approx(rho, abs=1e-3)
    assert fit.trace.sparsity[0] < fit.trace.sparsity[5] < rho  # the ramp
    magnitude = pipeline.prune_layer(layer1, "magnitude", rho)
    assert layer1.relative_error(fit.weight_q, fit.weight_k) < layer1.relative_error(*magnitude)


def test_matrix_groups_count_zeros_per_weight(layer1):
    fit = fit_qk(layer1, 0.3, steps=3, group="matrix")
    for B in (fit.mask_q, fit.mask_k):
        assert int((B == 0).sum()) == n_pruned(B.numel(), 0.3)


def test_step_size_schedules():
    from attnprune.core.solver import step_size

    assert step_size(0.1, 7, 10, "constant") == 0.1
    assert step_size(0.1, 0, 10, "cosine") == pytest.approx(0.1)
    assert step_size(0.1, 5, 10, "cosine") == pytest.approx(0.05)
    assert step_size(0.1, 5, 8, "final-decay") == pytest.approx(0.1)
    assert step_size(0.1, 7, 8, "final-decay") == pytest.approx(0.05)


def test_outputs_and_selections(layer1):
    reweighted = fit_qk(layer1, 0.5, steps=6)
    torch.testing.assert_close(reweighted.weight_q, reweighted.mask_q * reweighted.Mq * layer1.Wq)
    mask_only = fit_qk(layer1, 0.5, steps=6, output="mask-only", selection="straight-through")
    torch.testing.assert_close(mask_only.weight_q, mask_only.mask_q * layer1.Wq)
    assert mask_only.trace.sparsity[-1] == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="straight-through"):
        fit_qk(layer1, 0.5, steps=2, selection="straight-through")
    with pytest.raises(ValueError, match="output"):
        fit_qk(layer1, 0.5, output="both")


def test_support_refit_keeps_the_linear_support_and_improves_its_fit(layer1):
    support = (sparsegpt_prune(layer1.Wq, layer1.X, 0.5), sparsegpt_prune(layer1.Wk, layer1.X, 0.5))
    fit = fit_qk(layer1, 0.5, steps=20, lr=0.01, support=support, query_rows="all")  # REFIT_DEFAULTS' rows
    assert torch.equal(fit.mask_q, support[0].mask) and torch.equal(fit.mask_k, support[1].mask)
    before = layer1.relative_error(support[0].weight, support[1].weight)
    assert layer1.relative_error(fit.weight_q, fit.weight_k) < before


def test_early_stopping_returns_the_best_checked_step(layer1):
    fit = fit_qk(layer1, 0.5, steps=12, ramp=0.5, validation=layer1, check_every=2)
    steps = [s for s, _ in fit.trace.validation]
    assert steps == [6, 8, 10, 12]
    best = min(fit.trace.validation, key=lambda item: item[1])
    assert fit.step == best[0]
    assert layer1.relative_error(fit.weight_q, fit.weight_k) == pytest.approx(best[1], rel=1e-5)


def test_fit_trace_records_every_step_of_the_shared_loop(layer1):
    from attnprune.core.solver import step_size
    from attnprune.core.trace import Trace

    fit = fit_qk(layer1, 0.5, steps=8, lr=0.05, schedule="final-decay")
    assert isinstance(fit.trace, Trace) and fit.trace.validation == [] and fit.step == 8
    assert fit.trace.step_size == [step_size(0.05, t, 8, "final-decay") for t in range(8)]
    assert len(fit.trace.grad_norm) == len(fit.trace.loss) == 8
    assert fit.trace.grad_norm[-1] > 0  # (at M = 1 with λ = μ = 0 the fit term is at its minimum)
    assert not fit.Mq.requires_grad and not fit.weight_q.requires_grad


def test_stochastic_steps_cycle_through_every_chunk():
    order = _chunk_order(4, steps=6, per_step=2, seed=0)
    assert sorted(order[0] + order[1]) == [0, 1, 2, 3]
    assert _chunk_order(3, steps=2, per_step=None, seed=0) == [[0, 1, 2], [0, 1, 2]]


def test_penalties(layer1):
    ones = torch.ones_like(layer1.Wq), torch.ones_like(layer1.Wk)
    anchored = LayerProblem(layer1.X, layer1.Wq, layer1.Wk, layer1.cos, layer1.sin, layer1.shape, anchor=2.0, lam=0.5)
    assert float(anchored.penalty(*ones)) == pytest.approx(0.25)  # (λ/2)·mean(1) + (μ/2)·0
    assert float(anchored.penalty(torch.zeros_like(ones[0]), torch.zeros_like(ones[1]))) == pytest.approx(1.0)


def test_bad_inputs_name_the_argument(layer1):
    with pytest.raises(ValueError, match="X must be N × T × d"):
        LayerProblem(layer1.X[..., :10], layer1.Wq, layer1.Wk, layer1.cos, layer1.sin, layer1.shape)
    with pytest.raises(ValueError, match="Wq must be"):
        LayerProblem(layer1.X, layer1.Wk, layer1.Wk, layer1.cos, layer1.sin, layer1.shape)
    with pytest.raises(ValueError, match="cos and sin"):
        LayerProblem(layer1.X, layer1.Wq, layer1.Wk, layer1.cos[:, :3], layer1.sin[:, :3], layer1.shape)
    with pytest.raises(ValueError, match="sparsity"):
        fit_qk(layer1, 1.0)
    with pytest.raises(ValueError, match="Wq"):
        layer1.relative_error(layer1.Wk, layer1.Wk)


@pytest.mark.parametrize("T", [1, 3, 6, 17])
def test_the_probability_error_and_its_closed_form_gradient_match_autograd_in_float64(T):
    shape = AttentionShape(layers=1, heads=6, kv_heads=2, head_dim=8, hidden=48)
    generator = torch.Generator().manual_seed(T)
    q = torch.randn(2, 6, T, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    k = torch.randn(2, 2, T, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    with torch.no_grad():
        target = probabilities_from(1.3 * q, 0.7 * k, shape)
    grouped = q.reshape(2, 2, 3, T, 8)  # the plain formula, through autograd
    S = (grouped @ k.unsqueeze(2).transpose(-1, -2)).reshape(2, 6, T, T) / math.sqrt(8)
    P = torch.softmax(S.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")), dim=-1)
    reference = (P - target).square().sum()
    fused = probability_error(q, k, target, shape)
    torch.testing.assert_close(fused, reference, rtol=1e-12, atol=1e-14)
    for ours, theirs in zip(torch.autograd.grad(fused, (q, k)), torch.autograd.grad(reference, (q, k)), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-13)
    assert torch.equal(probabilities_from(q, k, shape), probabilities_from(q, k, shape).tril())  # causal: exact zeros


@pytest.mark.parametrize("T", range(1, 20))
def test_the_query_halves_split_the_rows_once_each_into_equal_causal_work(T):
    halves = query_halves(T)
    rows = sorted(r for half in halves for start, stop in half for r in range(start, stop))
    assert rows == list(range(T))  # every row in exactly one half
    assert all(list(half) == sorted(half) for half in halves)
    assert len(halves) == (2 if T >= 3 else 1)


def test_the_query_halves_of_512_rows_pair_the_first_block_with_the_last():
    assert query_halves(512) == [((0, 128), (384, 512)), ((128, 256), (256, 384))]
    work = [sum((stop - start) * stop for start, stop in half) for half in query_halves(512)]
    assert work[0] == pytest.approx(work[1], rel=0.01)  # 1 + 4 against 2 + 3 blocks of keys


def test_the_halves_add_up_to_the_error_and_gradient_of_all_rows_in_float64(layer1):
    """The half-row steps: the errors, target norms and gradients of the two halves sum to
    those of all rows (float64 throughout, so agreement to rounding)."""
    problem = LayerProblem(
        *(t.double() for t in (layer1.X, layer1.Wq, layer1.Wk, layer1.cos, layer1.sin)), layer1.shape, batch_size=2
    )
    generator = torch.Generator().manual_seed(0)
    Mq = (0.5 + torch.rand(problem.Wq.shape, generator=generator, dtype=torch.float64)).requires_grad_()
    Mk = (0.5 + torch.rand(problem.Wk.shape, generator=generator, dtype=torch.float64)).requires_grad_()
    assert problem.n_halves == 2
    whole = problem.squared_error(Mq * problem.Wq, Mk * problem.Wk, 1)
    parts = [problem.squared_error(Mq * problem.Wq, Mk * problem.Wk, 1, half) for half in (0, 1)]
    values = [float(e.detach()) for e in (whole, *parts)]
    assert values[1] + values[2] == pytest.approx(values[0], rel=1e-10)
    assert all(0 < v < values[0] for v in values[1:])
    expected = torch.autograd.grad(whole, (Mq, Mk))
    for got, want in zip(torch.autograd.grad(sum(parts), (Mq, Mk)), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-14)
    norms = [problem.target_norm([0, 1], half) for half in (0, 1)]
    assert sum(norms) == pytest.approx(problem.target_norm(), rel=1e-12)


def test_queries_of_a_row_subset_are_those_rows_of_all_queries(layer1):
    rows = torch.tensor([0, 5, 6, 20])
    args = (layer1.X, layer1.Wq, layer1.Wk, layer1.cos, layer1.sin, layer1.shape)
    q_all, k_all = queries_keys(*args)
    q_rows, k_rows = queries_keys(*args, rows=rows)
    torch.testing.assert_close(q_rows, q_all[:, :, rows], rtol=1e-5, atol=1e-6)
    assert torch.equal(k_rows, k_all)


def test_half_row_steps_fit_at_exact_sparsity_and_beat_magnitude(layer1):
    fit = fit_qk(layer1, 0.5, steps=30, lr=0.05, query_rows="half")
    for B in (fit.mask_q, fit.mask_k):
        assert torch.all((B == 0).sum(1) == n_pruned(B.shape[1], 0.5))
    magnitude = pipeline.prune_layer(layer1, "magnitude", 0.5)
    assert layer1.relative_error(fit.weight_q, fit.weight_k) < layer1.relative_error(*magnitude)
    again = fit_qk(layer1, 0.5, steps=30, lr=0.05, query_rows="half")
    assert torch.equal(again.mask_q, fit.mask_q) and torch.equal(again.weight_k, fit.weight_k)  # deterministic
    with pytest.raises(ValueError, match="query_rows"):
        fit_qk(layer1, 0.5, steps=2, query_rows="third")
