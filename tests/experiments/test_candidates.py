"""Comparing pruning candidates (prune, keep the q/k weights, score) on the tiny Llama-shaped model."""

from __future__ import annotations

import copy

import pytest
import torch

from attnprune.experiments.candidates import (Candidate, error_table, excess_perplexity, perplexity_table, pooled_errors,
                                  prune_candidates, reload_check)
from attnprune.llm.models import qk_modules
from attnprune.llm.prune import qk_weights


@pytest.fixture(scope="module")
def model(tiny_llama):
    return copy.deepcopy(tiny_llama)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1000, 50000, (3, 16), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def compared(model, ids):
    candidates = [Candidate("W", "wanda"), Candidate("O", "ours", {"steps": 3}),
                  Candidate("E", "ours", {"steps": 4, "check_every": 1}, early_stopping=True)]
    dense = qk_weights(model)
    result = prune_candidates(model, ids[:2], candidates, [0.5], layers=[1], validation_ids=ids[2:])
    return dense, result


def test_prune_candidates_restores_the_dense_weights_and_keeps_each_result(model, compared):
    dense, (summary, fits, weights) = compared
    for layer, (Wq, Wk) in dense.items():
        assert torch.equal(qk_modules(model, layer)[0].weight, Wq)
    assert set(weights) == {("W", 0.5), ("O", 0.5), ("E", 0.5)}
    assert list(weights["W", 0.5]) == [1]
    assert list(summary["candidate"]) == ["W", "O", "E"]
    assert (summary["sparsity_pruned_weights"] == 0.5).all() and (fits["layer"] == 1).all()
    assert not torch.equal(weights["W", 0.5][1][0], weights["O", 0.5][1][0])


def test_scores(model, ids, compared):
    _, (_, _, weights) = compared
    table = perplexity_table(model, weights, {"text": ids})
    assert list(table["candidate"]) == ["dense", "W", "O", "E"] and (table["perplexity"] > 1).all()
    delta = excess_perplexity(table)
    assert len(delta) == 3 and "delta" in delta
    errors = error_table(model, weights, {"a": ids[:2], "b": ids[2:]})
    assert set(errors["split"]) == {"a", "b"} and (errors["layer"] == 1).all() and (errors["error"] > 0).all()
    pooled = pooled_errors(errors)
    assert list(pooled.columns) == ["a", "b"] and len(pooled) == 3


def test_reload_check(model, compared, tmp_path):
    _, (_, _, weights) = compared
    reloaded, difference = reload_check(model, weights["W", 0.5], tmp_path)
    assert difference == 0.0
    assert torch.equal(qk_modules(reloaded, 1)[1].weight, weights["W", 0.5][1][1])


def test_bad_candidates():
    with pytest.raises(ValueError, match="method"):
        Candidate("x", "obs")
    with pytest.raises(ValueError, match="early_stopping"):
        Candidate("x", "wanda", early_stopping=True)
