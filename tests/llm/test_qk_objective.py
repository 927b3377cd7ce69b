"""The deployable objective (true attention of q_proj/k_proj) and whole-model q/k pruning, on the
tiny randomly initialised Llama-3.2-shaped model (rope_type llama3, grouped-query attention)."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from attnprune.llm import models
from attnprune.llm import prune as pipeline
from attnprune.core.baselines import sparsegpt_prune
from attnprune.llm.capture import capture_attention_inputs, layer_inputs
from attnprune.llm.qk_objective import LayerProblem, _chunk_order, attention_probabilities, fit_qk
from attnprune.core.masks import n_pruned
from attnprune.llm.models import attention_shape, linear_weight_count

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
        torch.testing.assert_close(P, reference[layer], atol=1e-6, rtol=0)
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
    fit = fit_qk(layer1, 0.5, steps=20, lr=0.01, support=support)
    assert torch.equal(fit.mask_q, support[0].mask) and torch.equal(fit.mask_k, support[1].mask)
    before = layer1.relative_error(support[0].weight, support[1].weight)
    assert layer1.relative_error(fit.weight_q, fit.weight_k) < before


def test_early_stopping_returns_the_best_checked_step(layer1):
    fit = fit_qk(layer1, 0.5, steps=12, ramp=0.5, validation=layer1, check_every=2)
    steps = [s for s, _ in fit.trace.validation]
    assert steps == [6, 8, 10, 12]
    best = min(fit.trace.validation, key=lambda item: item[1])
    assert fit.step == best[0]
    assert layer1.relative_error(fit.weight_q, fit.weight_k) == pytest.approx(best[1], rel=1e-6)


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


# -- the whole model ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "ours"])
def test_prune_model_gives_exact_qk_sparsity_and_touches_nothing_else(tiny_llama, ids, method):
    model = copy.deepcopy(tiny_llama)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    options = {"steps": 4} if method == "ours" else {}
    report = pipeline.prune_model(model, ids, method, 0.5, **options)
    d = attention_shape(model).hidden
    for layer in (0, 1):
        for module in models.qk_modules(model, layer):
            assert torch.all((module.weight == 0).sum(1) == n_pruned(d, 0.5))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"model.layers.{i}.self_attn.{p}_proj.weight" for i in (0, 1) for p in "qk"}
    assert report["sparsity_summary"]["pruned_weights"] == 0.5
    qk = sum(m.weight.numel() for i in (0, 1) for m in models.qk_modules(model, i))
    assert report["sparsity_summary"]["model_linear_weights"] == pytest.approx(0.5 * qk / linear_weight_count(model))
    assert [row["layer"] for row in report["per_layer"]] == [0, 1]
    assert all(row["fit_error"] > 0 for row in report["per_layer"])


def test_pruned_model_round_trips_through_save_pretrained(tiny_llama, ids, tmp_path):
    model = copy.deepcopy(tiny_llama)
    pipeline.prune_model(model, ids, "wanda", 0.7, layers=[1])
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    q, k = models.qk_modules(reloaded, 1)
    assert pipeline.sparsity_summary(reloaded, [1])["pruned_weights"] == pytest.approx(0.7, abs=1e-3)
    assert torch.equal(q.weight, models.qk_modules(model, 1)[0].weight)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
    assert pipeline.sparsity_summary(reloaded, [0])["pruned_weights"] == 0.0


def test_sequential_and_dense_capture_agree_on_the_first_layer_only(tiny_llama, ids):
    reports = {}
    for capture in ("sequential", "dense"):
        model = copy.deepcopy(tiny_llama)
        reports[capture] = pipeline.prune_model(model, ids, "wanda", 0.5, capture=capture)
        reports[capture]["weights"] = pipeline.qk_weights(model)
    assert torch.equal(reports["sequential"]["weights"][0][0], reports["dense"]["weights"][0][0])
    assert not torch.equal(reports["sequential"]["weights"][1][0], reports["dense"]["weights"][1][0])


def test_swapped_restores_and_layer_errors_are_zero_for_dense_weights(tiny_llama, ids):
    model = copy.deepcopy(tiny_llama)
    dense = pipeline.qk_weights(model)
    pruned = {1: tuple(torch.zeros_like(w) for w in dense[1])}
    with pipeline.swapped(model, pruned):
        assert torch.all(models.qk_modules(model, 1)[0].weight == 0)
    assert torch.equal(models.qk_modules(model, 1)[0].weight, dense[1][0])
    errors = pipeline.layer_errors(model, ids, {"dense": dense, "zero": pruned})
    assert list(errors["layer"]) == [0, 1, 1]
    assert errors.loc[errors["candidate"] == "dense", "error"].eq(0).all()
    assert float(errors.loc[errors["candidate"] == "zero", "error"].iloc[0]) > 0


def test_early_stopping_through_prune_model(tiny_llama, ids):
    model = copy.deepcopy(tiny_llama)
    report = pipeline.prune_model(model, ids[:3], "ours", 0.5, layers=[0], validation_ids=ids[3:],
                                  steps=4, check_every=1)
    assert report["n_validation"] == 1 and report["options"]["check_every"] == 1


def test_prune_model_rejects_bad_arguments(tiny_llama, ids):
    model = copy.deepcopy(tiny_llama)
    with pytest.raises(ValueError, match="method"):
        pipeline.prune_model(model, ids, "obs", 0.5)
    with pytest.raises(ValueError, match="apply to method 'ours' only"):
        pipeline.prune_model(model, ids, "wanda", 0.5, steps=3)
    with pytest.raises(ValueError, match="capture"):
        pipeline.prune_model(model, ids, "wanda", 0.5, capture="lazy")
    with pytest.raises(ValueError, match="layers"):
        pipeline.prune_model(model, ids, "wanda", 0.5, layers=[5])
    with pytest.raises(ValueError, match="input_ids"):
        pipeline.prune_model(model, ids.float(), "wanda", 0.5)
    with pytest.raises(ValueError, match="support"):
        pipeline.prune_model(model, ids, "ours", 0.5, support="obs")
