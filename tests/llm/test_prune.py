"""Pruning a whole model's q/k weights: the typed configuration, and a driver that returns the
pruned weights without changing the model (tiny Llama-3.2-shaped model)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
import transformers

from attnprune.core.masks import n_pruned
from attnprune.llm import models
from attnprune.llm.capture import attention_input, layer_inputs, run_layer
from attnprune.llm.models import attention_shape, linear_weight_count
from attnprune.llm.prune import (
    OURS_DEFAULTS,
    REFIT_DEFAULTS,
    FitConfig,
    LayerFit,
    PruneConfig,
    PruneReport,
    layer_problem,
    prune_layer,
    prune_model,
    qk_overrides,
    set_qk_weights,
    sparsity_summary,
)

SEQ = 24


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1000, 50000, (4, SEQ), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def model(tiny_llama):
    """A private copy: were prune_model to write into it, the session's model stays clean."""
    return copy.deepcopy(tiny_llama)


def state_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def written(model, weights):
    """A copy of ``model`` with ``weights`` written into it (the old in-place result)."""
    out = copy.deepcopy(model)
    set_qk_weights(out, weights)
    return out


# -- the configuration ------------------------------------------------------------------------------
def test_defaults_are_ours_and_the_refits():
    assert OURS_DEFAULTS == {
        "steps": 150,
        "lr": 0.01,
        "schedule": "final-decay",
        "ramp": 0.25,
        "sequences_per_step": 1,
        "query_rows": "half",
    }
    assert REFIT_DEFAULTS == {
        "steps": 40,
        "lr": 0.005,
        "schedule": "cosine",
        "ramp": 0.5,
        "sequences_per_step": 1,
        "query_rows": "all",
    }
    ours = PruneConfig("ours", 0.5).fit
    assert {k: getattr(ours, k) for k in OURS_DEFAULTS} == OURS_DEFAULTS
    refit = PruneConfig.from_options("ours", 0.5, support="sparsegpt").fit
    assert {k: getattr(refit, k) for k in REFIT_DEFAULTS} == REFIT_DEFAULTS and refit.support == "sparsegpt"
    given = FitConfig(steps=7, support="wanda", sequences_per_step=None)
    assert (given.steps, given.lr, given.sequences_per_step) == (7, REFIT_DEFAULTS["lr"], None)
    assert FitConfig(ramp=0.4).ramp == 0.4 and FitConfig(support="wanda").ramp == REFIT_DEFAULTS["ramp"]
    linear = PruneConfig("wanda", 0.5, layers=[1, 0, 1])
    assert linear.fit is None and linear.layers == (0, 1) and linear.capture == "sequential"
    with pytest.raises(dataclasses.FrozenInstanceError):
        linear.sparsity = 0.7


def test_fit_options_are_those_of_fit_qk():
    options = FitConfig(steps=4, lam=0.1).fit_options()
    assert options["steps"] == 4 and options["chunks_per_step"] == 1
    assert not {"lam", "anchor", "support", "sequences_per_step"} & set(options)
    assert FitConfig(sequences_per_step=None).fit_options()["chunks_per_step"] is None


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: PruneConfig("obs", 0.5), "method"),
        (lambda: PruneConfig("wanda", 1.5), "sparsity"),
        (lambda: PruneConfig("wanda", True), "sparsity"),
        (lambda: PruneConfig("wanda", 0.5, capture="lazy"), "capture"),
        (lambda: PruneConfig("wanda", 0.5, batch_size=0), "batch_size"),
        (lambda: PruneConfig("wanda", 0.5, layers=[]), "layers"),
        (lambda: PruneConfig("wanda", 0.5, layers=[-1]), "layers"),
        (lambda: PruneConfig("wanda", 0.5, layers=1), "layers"),
        (lambda: PruneConfig("wanda", 0.5, fit=FitConfig()), "fit"),
        (lambda: PruneConfig("ours", 0.5, fit={"steps": 3}), "fit"),
        (lambda: PruneConfig.from_options("wanda", 0.5, steps=3), "apply to method 'ours' only"),
        (lambda: PruneConfig.from_options("ours", 0.5, stepz=3), "unknown options"),
        (lambda: FitConfig(steps=0), "steps"),
        (lambda: FitConfig(lr=-1.0), "lr"),
        (lambda: FitConfig(schedule="linear"), "schedule"),
        (lambda: FitConfig(sequences_per_step=0), "sequences_per_step"),
        (lambda: FitConfig(output="dense"), "output"),
        (lambda: FitConfig(selection="greedy"), "selection"),
        (lambda: FitConfig(support="obs"), "support"),
        (lambda: FitConfig(lam=-1.0), "lam"),
        (lambda: FitConfig(anchor=float("nan")), "anchor"),
        (lambda: FitConfig(ramp=0.0), "ramp"),
        (lambda: FitConfig(score="random"), "score"),
        (lambda: FitConfig(group="column"), "group"),
        (lambda: FitConfig(check_every=0), "check_every"),
        (lambda: FitConfig(seed="0"), "seed"),
        (lambda: FitConfig(selection="straight-through"), "straight-through"),
        (lambda: FitConfig(support="wanda", output="mask-only"), "support"),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=name):
        make()


# -- the whole model ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "ours"])
def test_prune_model_returns_exactly_sparse_weights_and_leaves_the_model_untouched(model, ids, method):
    before = state_of(model)
    options = {"steps": 4} if method == "ours" else {}
    weights, report = prune_model(model, ids, PruneConfig.from_options(method, 0.5, batch_size=2, **options))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    d = attention_shape(model).hidden
    assert sorted(weights) == [0, 1]
    for layer, pair in weights.items():
        for W, module in zip(pair, models.qk_modules(model, layer), strict=True):
            assert W.dtype == module.weight.dtype and W.shape == module.weight.shape and not W.requires_grad
            assert torch.all((W == 0).sum(1) == n_pruned(d, 0.5))
    assert isinstance(report, PruneReport) and all(isinstance(row, LayerFit) for row in report.per_layer)
    assert report.method == method and report.layers == [0, 1] and report.n_calibration == 4
    assert report.sparsity_summary["pruned_weights"] == 0.5
    qk = sum(m.weight.numel() for i in (0, 1) for m in models.qk_modules(model, i))
    assert report.sparsity_summary["model_linear_weights"] == pytest.approx(0.5 * qk / linear_weight_count(model))
    assert [row.layer for row in report.per_layer] == [0, 1] and all(row.fit_error > 0 for row in report.per_layer)
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["per_layer"][1]["layer"] == 1 and as_dict["sparsity_summary"] == report.sparsity_summary
    assert (as_dict["options"]["steps"] == 4) if method == "ours" else as_dict["options"] == {}


def in_place_recipe(model, ids, config):
    """The sequential recipe as it used to run: prune layer ℓ, write it into (a copy of) the
    model, run the layer as it now is. Built from the same primitives, so the same computation."""
    model = copy.deepcopy(model)
    hidden, kwargs = layer_inputs(model, ids, batch_size=config.batch_size)
    cos, sin = kwargs["position_embeddings"]
    fit, weights, errors = config.fit, {}, []
    for layer in range(len(models.decoder_layers(model))):
        X = attention_input(model, layer, hidden)
        if fit is None:
            problem = layer_problem(model, layer, X, cos, sin, batch_size=config.batch_size)
            pair = prune_layer(problem, config.method, config.sparsity)
        else:
            per_step = config.batch_size if fit.sequences_per_step is None else fit.sequences_per_step
            problem = layer_problem(model, layer, X, cos, sin, batch_size=per_step, lam=fit.lam, anchor=fit.anchor)
            pair = prune_layer(problem, config.method, config.sparsity, support=fit.support, **fit.fit_options())
        errors.append(problem.relative_error(*pair))
        set_qk_weights(model, {layer: pair})
        weights[layer] = tuple(m.weight.detach().clone() for m in models.qk_modules(model, layer))
        hidden = run_layer(model, layer, hidden, kwargs, batch_size=config.batch_size)
    return weights, errors


@pytest.mark.parametrize(
    "method, options",
    [
        ("wanda", {}),
        ("sparsegpt", {}),
        ("ours", {"steps": 3}),
        ("ours", {"steps": 3, "sequences_per_step": None, "lam": 0.1, "anchor": 0.2}),
        ("ours", {"steps": 3, "support": "sparsegpt"}),
    ],
)
def test_sequential_capture_is_the_in_place_recipe_exactly(model, ids, method, options):
    config = PruneConfig.from_options(method, 0.5, batch_size=2, **options)
    weights, report = prune_model(model, ids, config)
    expected, errors = in_place_recipe(model, ids, config)
    for layer in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(weights[layer], expected[layer], strict=True))
    assert [row.fit_error for row in report.per_layer] == errors


def test_the_pruned_model_gives_layer_1_the_inputs_it_was_fitted_to(model, ids):
    """Independent of the capture loop, in float64: a full forward pass of the model with the
    pruned weights written in gives layer 1 the inputs on which its reported error was measured."""
    weights, report = prune_model(model, ids, PruneConfig("wanda", 0.5, batch_size=2))
    dense64 = copy.deepcopy(model).double()
    pruned64 = written(dense64, {i: tuple(w.double() for w in pair) for i, pair in weights.items()})
    with torch.no_grad():
        X1 = attention_input(pruned64, 1, pruned64(ids, output_hidden_states=True).hidden_states[1])
        X1_dense = attention_input(dense64, 1, dense64(ids, output_hidden_states=True).hidden_states[1])
    cos, sin = layer_inputs(dense64, ids[:1])[1]["position_embeddings"]
    problem = layer_problem(dense64, 1, X1, cos, sin)
    expected = problem.relative_error(*(w.double() for w in weights[1]))
    assert report.per_layer[1].fit_error == pytest.approx(expected, rel=1e-5)  # float32 against float64
    assert not torch.allclose(X1, X1_dense, atol=1e-3)  # layer 1 did see the pruned layer 0


def test_sequential_and_dense_capture_agree_on_the_first_layer_only(model, ids):
    results = {
        capture: prune_model(model, ids, PruneConfig("wanda", 0.5, capture=capture))[0]
        for capture in ("sequential", "dense")
    }
    assert torch.equal(results["sequential"][0][0], results["dense"][0][0])
    assert not torch.equal(results["sequential"][1][0], results["dense"][1][0])


def test_early_stopping_through_prune_model(model, ids):
    config = PruneConfig.from_options("ours", 0.5, layers=[0], steps=4, check_every=1)
    weights, report = prune_model(model, ids[:3], config, validation_ids=ids[3:])
    assert list(weights) == [0] and report.n_validation == 1 and report.options["check_every"] == 1


def test_prune_model_rejects_bad_arguments(model, ids):
    with pytest.raises(ValueError, match="config"):
        prune_model(model, ids, "wanda")
    with pytest.raises(ValueError, match="layers"):
        prune_model(model, ids, PruneConfig("wanda", 0.5, layers=[5]))
    with pytest.raises(ValueError, match="input_ids"):
        prune_model(model, ids.float(), PruneConfig("wanda", 0.5))
    with pytest.raises(ValueError, match="validation_ids"):
        prune_model(model, ids, PruneConfig("wanda", 0.5), validation_ids=ids)


# -- weights and the model ------------------------------------------------------------------------
def test_sparsity_summary_of_given_weights_is_that_of_the_model_with_them_written_in(model):
    zero = {1: tuple(torch.zeros_like(m.weight) for m in models.qk_modules(model, 1))}
    assert sparsity_summary(model, zero) == {**sparsity_summary(written(model, zero)), "pruned_weights": 1.0}
    assert sparsity_summary(model) == {"pruned_weights": 0.0, "all_qk_weights": 0.0, "model_linear_weights": 0.0}
    assert sparsity_summary(model, zero)["all_qk_weights"] == 0.5  # layer 1 of 2, q and k of the same size each


def test_qk_overrides_name_the_parameters(model):
    pair = tuple(torch.zeros_like(m.weight) for m in models.qk_modules(model, 1))
    assert list(qk_overrides(model, {1: pair})) == [
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
    ]
    within = qk_overrides(model, {1: pair}, models.decoder_layers(model)[1])
    assert list(within) == ["self_attn.q_proj.weight", "self_attn.k_proj.weight"]
    assert within["self_attn.k_proj.weight"] is pair[1]


def test_pruned_weights_written_in_round_trip_through_save_pretrained(model, ids, tmp_path):
    weights, _ = prune_model(model, ids, PruneConfig("wanda", 0.7, layers=[1]))
    pruned = written(model, weights)
    pruned.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert torch.equal(models.qk_modules(reloaded, 1)[0].weight, weights[1][0])
    assert sparsity_summary(reloaded, {1: weights[1]})["pruned_weights"] == pytest.approx(0.7, abs=1e-3)
    zeros = sparsity_summary(model, weights)["model_linear_weights"]
    assert sparsity_summary(reloaded)["model_linear_weights"] == zeros
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits, rtol=1e-5, atol=1e-5)


# -- resuming: finished layers passed in give the same result, bit for bit ---------------------------
@pytest.mark.parametrize(
    ("method", "options", "capture"),
    [
        ("ours", {"steps": 3}, "sequential"),
        ("wanda", {}, "sequential"),
        ("magnitude", {}, "dense"),
    ],
)
def test_resuming_from_finished_layers_gives_the_same_weights_bit_for_bit(model, ids, method, options, capture):
    config = PruneConfig.from_options(method, 0.5, capture=capture, batch_size=2, **options)
    seen = []
    whole, report = prune_model(model, ids, config, on_layer=lambda i, pair, fit: seen.append((i, pair, fit)))
    assert [i for i, _, _ in seen] == [0, 1] and all(isinstance(fit, LayerFit) for _, _, fit in seen)
    assert all(pair is whole[i] for i, pair, _ in seen)
    calls = []
    resumed, again = prune_model(model, ids, config, done={0: whole[0]}, on_layer=lambda i, *_: calls.append(i))
    assert calls == [1]  # the finished layer is neither pruned again nor reported as new
    for layer in (0, 1):
        for new, old in zip(resumed[layer], whole[layer], strict=True):
            assert torch.equal(new, old)
    assert again.per_layer[0].fit_error == report.per_layer[0].fit_error and again.per_layer[0].seconds == 0.0
    assert again.per_layer[1].fit_error == report.per_layer[1].fit_error


def test_bad_finished_layers_are_refused(model, ids):
    config = PruneConfig("magnitude", 0.5, layers=(1,))
    Wq, Wk = (m.weight for m in models.qk_modules(model, 1))
    with pytest.raises(ValueError, match=r"done must map layers being pruned \(\[1\]\)"):
        prune_model(model, ids, config, done={0: (Wq, Wk)})
    with pytest.raises(ValueError, match=r"done\[1\] must be \(W_q, W_k\)"):
        prune_model(model, ids, config, done={1: (Wk, Wq)})
    with pytest.raises(ValueError, match="done"):
        prune_model(model, ids, config, done=[(Wq, Wk)])
