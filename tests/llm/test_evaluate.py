"""Evaluation: perplexity (exp of the mean token NLL, checked against closed forms and the real
offline model), with pruned q/k weights passed in; the per-layer attention error."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from attnprune.llm import data, models
from attnprune.llm.evaluate import layer_errors, negative_log_likelihood, perplexity
from attnprune.llm.prune import set_qk_weights


@pytest.fixture(scope="module")
def input_ids():
    return torch.randint(0, 128256, (3, 20), generator=torch.Generator().manual_seed(0))


def test_perplexity_is_exp_of_the_models_own_mean_loss(tiny_llama, input_ids):
    with torch.no_grad():
        loss = tiny_llama(input_ids, labels=input_ids).loss  # mean NLL over the 3·19 predictions
    expected = math.exp(float(loss))
    for batch_size in (1, 2, 3):
        assert perplexity(tiny_llama, input_ids, batch_size=batch_size) == pytest.approx(
            expected, rel=1e-4
        )  # perplexity: rel. error = abs. error of a float32 mean NLL
    total, count = negative_log_likelihood(tiny_llama, input_ids, batch_size=2)
    assert count == 3 * 19 and total / count == pytest.approx(float(loss), rel=1e-4)


def test_a_model_that_predicts_uniformly_has_the_vocabulary_size(tiny_llama, input_ids):
    model = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: all logits are 0, every token has probability 1/V
    assert perplexity(model, input_ids) == pytest.approx(128256, rel=1e-5)  # float32 log-softmax


def halved_qk(model):
    """Every q/k weight with every other input column set to zero."""
    weights = {}
    for layer in range(model.config.num_hidden_layers):
        pair = tuple(m.weight.detach().clone() for m in models.qk_modules(model, layer))
        for w in pair:
            w[:, ::2] = 0
        weights[layer] = pair
    return weights


def test_weights_passed_in_are_the_weights_written_in_and_the_model_is_untouched(tiny_llama, input_ids):
    weights = halved_qk(tiny_llama)
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    got = perplexity(tiny_llama, input_ids, batch_size=2, weights=weights)
    assert all(torch.equal(v, before[k]) for k, v in tiny_llama.state_dict().items())
    pruned = copy.deepcopy(tiny_llama)
    set_qk_weights(pruned, weights)
    assert got == perplexity(pruned, input_ids, batch_size=2)  # the same computation: exactly
    assert got != perplexity(tiny_llama, input_ids, batch_size=2)
    assert perplexity(tiny_llama, input_ids, weights={}) == perplexity(tiny_llama, input_ids)


def test_layer_errors_are_zero_for_dense_weights_and_isolate_each_layer(tiny_llama, input_ids):
    dense = {i: tuple(m.weight.detach().clone() for m in models.qk_modules(tiny_llama, i)) for i in (0, 1)}
    halved = halved_qk(tiny_llama)
    errors = layer_errors(tiny_llama, input_ids, {"dense": dense, "halved": {1: halved[1]}}, batch_size=2)
    assert list(errors["layer"]) == [0, 1, 1] and list(errors["candidate"]) == ["dense", "dense", "halved"]
    assert errors.loc[errors["candidate"] == "dense", "error"].eq(0).all()
    assert float(errors.loc[errors["candidate"] == "halved", "error"].iloc[0]) > 0
    both = layer_errors(tiny_llama, input_ids, {"halved": halved}, batch_size=2)  # layer 1 on dense inputs:
    assert float(both["error"].iloc[1]) == float(errors["error"].iloc[2])  # unaffected by layer 0's weights


def test_progress_bar_only_when_asked(tiny_llama, input_ids, capsys):
    perplexity(tiny_llama, input_ids[:1])
    assert capsys.readouterr().err == ""
    perplexity(tiny_llama, input_ids[:1], progress=True)
    assert "perplexity" in capsys.readouterr().err


def test_arguments_are_checked(tiny_llama, input_ids):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(tiny_llama, input_ids[:, :1])
    with pytest.raises(ValueError, match="input_ids"):
        perplexity(tiny_llama, input_ids.tolist())
    with pytest.raises(ValueError, match="batch_size"):
        perplexity(tiny_llama, input_ids, batch_size=0)


def test_offline_model_reads_austen_and_not_shuffled_tokens():
    """SmolLM2-135M on 128 tokens of Emma: a sound model, and a perplexity that sees word order."""
    model, tokenizer = models.load_model(models.OFFLINE_MODEL)
    window = data.evaluation_sequences(tokenizer, data.load_texts("austen", "evaluation"), 128, 1)
    shuffled = window[:, torch.randperm(128, generator=torch.Generator().manual_seed(0))]
    dense = perplexity(model, window)
    assert 5 < dense < 100
    assert perplexity(model, shuffled) > 5 * dense
