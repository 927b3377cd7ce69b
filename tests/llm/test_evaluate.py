"""Perplexity: exp of the mean token NLL, checked against closed forms and the real offline model."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from attnprune.llm import data, models
from attnprune.llm.evaluate import negative_log_likelihood, perplexity


@pytest.fixture(scope="module")
def input_ids():
    return torch.randint(0, 128256, (3, 20), generator=torch.Generator().manual_seed(0))


def test_perplexity_is_exp_of_the_models_own_mean_loss(tiny_llama, input_ids):
    with torch.no_grad():
        loss = tiny_llama(input_ids, labels=input_ids).loss  # mean NLL over the 3·19 predictions
    expected = math.exp(float(loss))
    for batch_size in (1, 2, 3):
        assert perplexity(tiny_llama, input_ids, batch_size=batch_size) == pytest.approx(expected, rel=1e-5)
    total, count = negative_log_likelihood(tiny_llama, input_ids, batch_size=2)
    assert count == 3 * 19 and total / count == pytest.approx(float(loss), rel=1e-5)


def test_a_model_that_predicts_uniformly_has_the_vocabulary_size(tiny_llama, input_ids):
    model = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: all logits are 0, every token has probability 1/V
    assert perplexity(model, input_ids) == pytest.approx(128256, rel=1e-5)  # float32 log-softmax


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
