"""The objectives of attention-aware reconstruction on one decoder layer of a small seeded Llama
(4 query heads sharing 2 KV heads): their values against transformers and the paper's objective,
their gradients against finite differences (float64), and the inputs of every linear layer."""

from __future__ import annotations

import copy

import pytest
import torch

from attnprune.core.baselines import wanda_prune
from attnprune.llm import prune as pipeline
from attnprune.llm.capture import attention_input, run_layer
from attnprune.llm.objectives import MODULES, OBJECTIVES, LayerWindow, objective_for

SEQ = 12


@pytest.fixture(scope="module")
def model(small_llama):
    return small_llama()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 512, (4, SEQ), generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def window(model, ids, make_window):
    return make_window(model, ids)


def pruned_qk(window, rho=0.5):
    return {name: wanda_prune(window.dense(name), window.X, rho).weight for name in ("q", "k")}


def test_every_objective_is_zero_at_the_dense_weights_and_positive_when_pruned(window):
    for name in OBJECTIVES:
        objective = objective_for(name, window)
        assert objective.relative_error({}) == 0.0
        assert objective.relative_error(pruned_qk(window)) > 1e-6


def test_frobenius_is_the_relative_error_of_the_papers_layer_objective(model, window):
    cos, sin = window.kwargs["position_embeddings"]
    problem = pipeline.layer_problem(model, 1, window.X, cos, sin, batch_size=2)
    weights = pruned_qk(window)
    expected = problem.relative_error(weights["q"], weights["k"])
    assert objective_for("frobenius", window).relative_error(weights, batch_size=3) == pytest.approx(expected, rel=1e-5)


def test_kl_is_the_mean_row_divergence_computed_directly(small_llama, ids, make_window):
    # in float64 throughout: the divergence of two nearby rows is second order in their difference,
    # while float32 rounds each log-probability at first order (about 1e-4 of it, varying by host)
    window = make_window(copy.deepcopy(small_llama()).double(), ids)
    weights = pruned_qk(window)
    rows = torch.arange(window.n_sequences)
    from attnprune.llm.qk_objective import probabilities_from

    dense = probabilities_from(*window.queries_keys({}, rows), window.shape)  # (N, h, T, T)
    pruned = probabilities_from(*window.queries_keys(weights, rows), window.shape)
    assert dense.dtype == torch.float64
    kept = dense > 0
    terms = torch.where(kept, dense * (dense.clamp_min(1e-300).log() - pruned.clamp_min(1e-300).log()), 0.0)
    expected = float(terms.sum()) / (window.n_sequences * window.shape.heads * SEQ)
    assert expected > 1e-6
    assert objective_for("kl", window).relative_error(weights) == pytest.approx(expected, rel=1e-9)


def test_attention_and_block_outputs_are_those_of_transformers(model, window):
    rows = torch.arange(window.n_sequences)
    seen = {}
    handle = window.layer.self_attn.register_forward_hook(lambda m, a, out: seen.update(o=out[0]))
    try:
        block = run_layer(model, 1, window.hidden, window.kwargs, batch_size=4)
    finally:
        handle.remove()
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
    with torch.no_grad():
        close(window.attention_output({}, rows), seen["o"])
        close(window.block_output({}, rows), block)
    torch.testing.assert_close(window.X, attention_input(model, 1, window.hidden))


def test_linear_inputs_are_what_each_layer_reads(window):
    inputs = window.linear_inputs({}, MODULES)
    torch.testing.assert_close(inputs["q"], window.X)
    mlp = window.layer.mlp
    torch.testing.assert_close(inputs["down"], mlp.act_fn(mlp.gate_proj(inputs["gate"])) * mlp.up_proj(inputs["up"]))
    assert inputs["o"].shape == (4, SEQ, window.shape.heads * window.shape.head_dim)


@pytest.mark.parametrize(("name", "moved"), [("frobenius", "q"), ("kl", "k"), ("output", "v"), ("block", "down")])
def test_gradients_match_finite_differences_in_float64(small_llama, ids, make_window, name, moved):
    model = copy.deepcopy(small_llama()).double()
    window = make_window(model, ids[:2, :6], index=0)
    objective = objective_for(name, window)
    rows = torch.arange(2)
    W = window.dense(moved).clone()
    W[:, ::2] = 0.0  # away from W⁰, where every error is at its minimum and its gradient is zero
    W = W[:8].clone().requires_grad_(True)  # a block of 8 rows: 8 × in entries checked
    rest = window.dense(moved)[8:]
    error = lambda part: objective.error({moved: torch.cat([part, rest])}, rows)
    assert torch.autograd.gradcheck(error, (W,), eps=1e-6, atol=1e-8, rtol=1e-5)


def test_each_objective_reads_what_moves_it(window):
    weights = {"v": wanda_prune(window.dense("v"), window.X, 0.5).weight}
    for name in OBJECTIVES:
        moved = objective_for(name, window).relative_error(weights) > 0
        assert moved == ("v" in OBJECTIVES[name].reads)


def test_bad_names_are_refused(window, model):
    with pytest.raises(ValueError, match="objective must be one of"):
        objective_for("mse", window)
    with pytest.raises(ValueError, match="hidden must be N × T × d"):
        LayerWindow.of(model, 0, torch.zeros(2, 3), window.kwargs)
    with pytest.raises(ValueError, match="reference must have the shape of hidden"):
        LayerWindow.of(model, 1, window.hidden, window.kwargs, window.hidden[:1])


def drifted(model, window):
    """The window fed a perturbed input H (as if the layers below were pruned), with the dense
    model's input H⁰ as its reference."""
    noise = torch.randn(window.hidden.shape, generator=torch.Generator().manual_seed(5))
    hidden = window.hidden + 0.1 * window.hidden.std() * noise
    return LayerWindow.of(model, 1, hidden, window.kwargs, window.hidden)


def test_a_reference_equal_to_the_input_changes_no_objective(model, window):
    same = LayerWindow.of(model, 1, window.hidden, window.kwargs, window.hidden)
    weights = pruned_qk(window)
    for name in OBJECTIVES:
        expected = objective_for(name, window).relative_error(weights)
        assert objective_for(name, same).relative_error(weights) == pytest.approx(expected, rel=1e-6)


def test_with_a_reference_the_targets_are_the_dense_models_activations(model, window):
    moved = drifted(model, window)
    rows = torch.arange(window.n_sequences)
    for name in OBJECTIVES:  # the normalisers are the dense layer's own, on H⁰
        torch.testing.assert_close(objective_for(name, moved)._scales, objective_for(name, window)._scales)
    output = objective_for("output", moved)
    expected = window.attention_output({}, rows) + window.hidden - moved.hidden  # O(W⁰; X⁰) + H⁰ − H
    torch.testing.assert_close(output._target, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(objective_for("block", moved)._target, window.block_output({}, rows))
    # the dense weights no longer score zero: they do not undo the drift
    assert all(objective_for(name, moved).relative_error({}) > 0 for name in OBJECTIVES)
    from attnprune.llm.qk_objective import probabilities_from

    P0 = probabilities_from(*window.queries_keys({}, rows), window.shape)  # on H⁰
    P = probabilities_from(*moved.queries_keys({}, rows), window.shape)  # on H
    direct = float((P - P0).double().square().sum() / P0.double().square().sum())
    assert objective_for("frobenius", moved).relative_error({}) == pytest.approx(direct, rel=1e-4)


def test_the_fused_attention_output_equals_the_product_of_the_probabilities_and_the_values(window):
    from attnprune.llm.qk_objective import probabilities_from

    rows = torch.arange(window.n_sequences)
    weights = pruned_qk(window)
    P = probabilities_from(*window.queries_keys(weights, rows), window.shape).double()  # (N, h, T, T)
    s = window.shape
    V = (window.X @ window.dense("v").T).double().view(4, SEQ, s.kv_heads, s.head_dim).transpose(1, 2)
    V = V.repeat_interleave(s.group_size, dim=1)  # (N, h, T, k): query head i reads KV head i // (h/g)
    context = (P @ V).transpose(1, 2).reshape(4, SEQ, s.heads * s.head_dim)
    expected = context @ window.dense("o").T.double()
    with torch.no_grad():
        found = window.attention_output(weights, rows).double()  # float32, against a float64 reference
        torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
