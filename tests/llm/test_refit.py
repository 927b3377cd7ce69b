"""Attention-aware reconstruction: the linear support, the additive refit on it (fixed support,
penalty, early stopping, minibatches) and the whole-model driver, on a small seeded Llama."""

from __future__ import annotations

import pytest
import torch

from attnprune.core.baselines import hessian, linear_prune, sparsegpt_prune
from attnprune.core.masks import n_pruned
from attnprune.llm.objectives import objective_for
from attnprune.llm.prune import PruneConfig, prune_model
from attnprune.llm.refit import (
    PUBLISHED_DAMPING,
    SCOPES,
    ReconstructConfig,
    RefitConfig,
    linear_support,
    reconstruct_model,
    refit,
    refitted_names,
    with_weights,
)

SEQ = 16


@pytest.fixture(scope="module")
def model(small_llama):
    return small_llama()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 512, (6, SEQ), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def window(model, ids, make_window):
    return make_window(model, ids[:4])


@pytest.fixture(scope="module")
def held(model, ids, make_window):
    return make_window(model, ids[4:])


def exact_rows(weights, rho):
    """Every row of every weight has exactly round(ρ·in) zeros."""
    return all(bool(((W == 0).sum(dim=1) == n_pruned(W.shape[1], rho)).all()) for W in weights.values())


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_the_linear_support_of_every_scope_is_exactly_sparse(window, method):
    for scope, names in SCOPES.items():
        weights, masks = linear_support(window, method, names, 0.5)
        assert set(weights) == set(names) == set(masks), scope
        assert exact_rows(weights, 0.5)
        assert all(torch.equal(weights[n] * masks[n], weights[n]) for n in names)


def test_the_sparsegpt_support_takes_its_dampening(window):
    X = window.linear_inputs({}, ["q"])["q"]  # (N, T, d): q_proj's input
    H = hessian(X, window.dense("q"))
    for damping in (PUBLISHED_DAMPING, 0.3):
        weights, masks = linear_support(window, "sparsegpt", ("q",), 0.5, damping)
        expected = sparsegpt_prune(window.dense("q"), None, 0.5, H=H, percdamp=damping)
        assert torch.equal(weights["q"], expected.weight) and torch.equal(masks["q"], expected.mask)
    published, _ = linear_support(window, "sparsegpt", ("q",), 0.5)  # the default: SparseGPT's own 0.01
    assert torch.equal(published["q"], linear_prune("sparsegpt", window.dense("q"), X, 0.5).weight)
    assert not torch.equal(published["q"], weights["q"])


def test_the_support_dampening_defaults_to_the_refits_with_a_refit_and_to_the_published_without():
    assert ReconstructConfig("sparsegpt", 0.5, refit=None).support_damping == PUBLISHED_DAMPING == 0.01
    assert ReconstructConfig("sparsegpt", 0.5).support_damping == RefitConfig().damping == 0.3
    assert ReconstructConfig("sparsegpt", 0.5, refit=RefitConfig(damping=0.1)).support_damping == 0.1
    assert ReconstructConfig("sparsegpt", 0.5, refit=None, damping=0.2).support_damping == 0.2


def test_the_refit_lowers_the_objective_and_keeps_the_support(window):
    start, masks = linear_support(window, "wanda", SCOPES["qkvo"], 0.5)
    objective = objective_for("output", window)
    result = refit(objective, start, masks, RefitConfig(steps=20, lr=1e-3, sequences_per_step=2), batch_size=2)
    assert objective.relative_error(result.weights) < 0.9 * objective.relative_error(start)
    assert exact_rows(result.weights, 0.5)
    assert all(torch.equal(result.weights[n] * masks[n], result.weights[n]) for n in masks)
    assert result.step == 20 and len(result.trace.loss) == 20


def test_early_stopping_keeps_the_best_checked_weights_and_never_worse_than_the_start(window, held):
    start, masks = linear_support(window, "sparsegpt", SCOPES["qk"], 0.5)
    validation = objective_for("kl", held)
    config = RefitConfig(objective="kl", steps=12, lr=0.05, check_every=3)  # a large step: it may overshoot
    result = refit(objective_for("kl", window), start, masks, config, validation=validation)
    checks = dict(result.trace.validation)
    assert sorted(checks) == [3, 6, 9, 12]
    best = min([validation.relative_error(start), *checks.values()])
    assert result.validation_error == best
    assert validation.relative_error(result.weights) == pytest.approx(best, rel=1e-6)
    if result.step == 0:
        assert all(torch.equal(result.weights[n], start[n]) for n in start)


def test_the_anchor_pulls_toward_the_linear_weights(window):
    start, masks = linear_support(window, "wanda", SCOPES["qk"], 0.5)
    objective = objective_for("frobenius", window)
    moved = {}
    for anchor in (0.0, 100.0):
        config = RefitConfig(objective="frobenius", steps=10, lr=1e-2, anchor=anchor)
        result = refit(objective, start, masks, config)
        moved[anchor] = sum(float((result.weights[n] - start[n]).norm()) for n in start)
    assert moved[100.0] < moved[0.0]


def test_a_refit_is_deterministic_and_minibatches_follow_the_seed(window):
    start, masks = linear_support(window, "wanda", SCOPES["qk"], 0.5)
    objective = objective_for("output", window)
    run = lambda seed: refit(objective, start, masks, RefitConfig(steps=4, sequences_per_step=1, seed=seed)).weights
    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


def test_reconstruct_model_without_refit_is_the_linear_method_of_prune_model(model, ids):
    for method in ("wanda", "sparsegpt"):
        ours, _ = reconstruct_model(model, ids, ReconstructConfig(method, 0.5, refit=None, batch_size=2))
        theirs, _ = prune_model(model, ids, PruneConfig(method, 0.5, batch_size=2))
        for layer, (Wq, Wk) in theirs.items():
            torch.testing.assert_close(ours[layer]["q"], Wq, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(ours[layer]["k"], Wk, rtol=1e-5, atol=1e-7)


def test_a_linear_method_alone_does_not_run_the_validation_sequences(model, ids):
    config = ReconstructConfig("wanda", 0.5, refit=None, batch_size=2)
    with_validation, report = reconstruct_model(model, ids[:4], config, validation_ids=ids[4:])
    without, _ = reconstruct_model(model, ids[:4], config)
    assert report.n_validation == 0
    assert all(torch.equal(with_validation[i][n], without[i][n]) for i in without for n in without[i])


def test_the_validation_start_is_the_linear_methods_held_out_error(model, ids, make_window):
    config = ReconstructConfig("sparsegpt", 0.5, refit=RefitConfig(steps=2), layers=(0,), batch_size=2)
    _, report = reconstruct_model(model, ids[:4], config, validation_ids=ids[4:])
    start, _ = linear_support(make_window(model, ids[:4], index=0), "sparsegpt", SCOPES["qk"], 0.5, 0.3)
    expected = objective_for("output", make_window(model, ids[4:], index=0)).relative_error(start, 2)
    assert report.n_validation == 2
    assert report.per_layer[0].validation_start == pytest.approx(expected, rel=1e-5)


def test_reconstruct_model_refits_every_layer_and_leaves_the_model_untouched(model, ids):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = ReconstructConfig("sparsegpt", 0.5, scope="qkvo", refit=RefitConfig(steps=3), batch_size=2)
    pruned, report = reconstruct_model(model, ids[:4], config, validation_ids=ids[4:])
    assert sorted(pruned) == [0, 1] and all(exact_rows(w, 0.5) for w in pruned.values())
    assert [row.layer for row in report.per_layer] == [0, 1]
    assert all(row.validation <= row.validation_start for row in report.per_layer)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    copy = with_weights(model, pruned)
    assert torch.equal(copy.model.layers[1].self_attn.o_proj.weight, pruned[1]["o"])
    assert torch.equal(model.model.layers[1].self_attn.o_proj.weight, before["model.layers.1.self_attn.o_proj.weight"])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RefitConfig(objective="mse"), "objective must be one of"),
        (lambda: RefitConfig(steps=0), "steps"),
        (lambda: RefitConfig(lr=-1.0), "lr"),
        (lambda: RefitConfig(anchor=-1.0), "anchor"),
        (lambda: RefitConfig(sequences_per_step=0), "sequences_per_step"),
        (lambda: RefitConfig(target="dense"), "target must be one of"),
        (lambda: RefitConfig(window="dense"), "window must be one of"),
        (lambda: ReconstructConfig("ours", 0.5), "support"),
        (lambda: ReconstructConfig("wanda", 1.0), "sparsity"),
        (lambda: ReconstructConfig("wanda", 0.5, scope="mlp"), "scope"),
        (lambda: ReconstructConfig("wanda", 0.5, scope="qkvo", refit=RefitConfig(objective="kl")), "does not depend"),
        (lambda: ReconstructConfig("wanda", 0.5, scope="all", refit=RefitConfig()), "does not depend"),
        (lambda: ReconstructConfig("wanda", 0.5, layers=[True]), "layers"),
        (lambda: RefitConfig(damping=-0.1), "damping"),
        (lambda: ReconstructConfig("sparsegpt", 0.5, damping=-0.1), "damping"),
        (lambda: ReconstructConfig("wanda", 0.5, damping=0.1), "damping is the dampening of SparseGPT"),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_aiming_at_the_dense_model_changes_the_layers_above_the_first_only(model, ids):
    def config(target):  # no early stopping: the last step's weights
        return ReconstructConfig("sparsegpt", 0.5, refit=RefitConfig(steps=3, target=target), batch_size=2)

    ours, _ = reconstruct_model(model, ids[:4], config("layer"))
    theirs, _ = reconstruct_model(model, ids[:4], config("model"))
    # layer 0 reads the embeddings in both (no drift yet); layer 1 reads a pruned layer 0's output
    assert all(torch.equal(ours[0][n], theirs[0][n]) for n in ours[0])
    assert any(not torch.equal(ours[1][n], theirs[1][n]) for n in ours[1])
    assert all(exact_rows({n: w[n] for n in SCOPES["qk"]}, 0.5) for w in theirs.values())


def test_the_refit_window_holds_the_dense_layers_the_objective_reads(model, ids):
    def config(objective, scope="qk", window="all"):
        return ReconstructConfig("sparsegpt", 0.5, scope, RefitConfig(objective, steps=3, window=window), batch_size=2)

    assert refitted_names(config("output")) == ("q", "k", "v", "o")
    assert refitted_names(config("output", window="pruned")) == refitted_names(config("frobenius")) == ("q", "k")
    assert refitted_names(config("output", "qkvo")) == ("q", "k", "v", "o")
    assert refitted_names(ReconstructConfig("wanda", 0.5, refit=None)) == ("q", "k")
    both, _ = reconstruct_model(model, ids[:4], config("output"))  # no early stopping: the last step
    alone, _ = reconstruct_model(model, ids[:4], config("output", window="pruned"))
    blocks = model.model.layers
    for index, weights in both.items():
        assert set(weights) == {"q", "k", "v", "o"} and set(alone[index]) == {"q", "k"}
        assert exact_rows({n: weights[n] for n in ("q", "k")}, 0.5)
        assert bool((weights["v"] != 0).all()) and bool((weights["o"] != 0).all())  # they stay dense
        assert not torch.equal(weights["o"], blocks[index].self_attn.o_proj.weight)  # and move


def test_resuming_from_finished_layers_gives_the_same_weights_bit_for_bit(model, ids):
    config = ReconstructConfig("sparsegpt", 0.5, refit=RefitConfig(steps=2, sequences_per_step=2), batch_size=2)
    saved = {}
    full, _ = reconstruct_model(model, ids, config, on_layer=lambda i, w: saved.setdefault(i, w))
    resumed, report = reconstruct_model(model, ids, config, done={0: saved[0]})
    assert all(torch.equal(full[i][n], resumed[i][n]) for i in full for n in full[i])
    assert report.per_layer[0].seconds == 0.0
    with pytest.raises(ValueError, match=r"done\[0\] must hold the weights"):
        reconstruct_model(model, ids, config, done={0: {"q": saved[0]["q"]}})
