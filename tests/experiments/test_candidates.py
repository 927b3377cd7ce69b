"""Comparing pruning candidates (prune, keep the q/k weights, score) on the tiny Llama-shaped model."""

from __future__ import annotations

import copy

import pytest
import torch

from attnprune.experiments.candidates import (
    Candidate,
    error_table,
    excess_perplexity,
    perplexity_table,
    pooled_errors,
    prune_candidates,
    reload_check,
)
from attnprune.llm.models import qk_modules


@pytest.fixture(scope="module")
def model(tiny_llama):
    return copy.deepcopy(tiny_llama)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1000, 50000, (3, 16), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def compared(model, ids):
    candidates = [
        Candidate("W", "wanda"),
        Candidate("O", "ours", {"steps": 3}),
        Candidate("E", "ours", {"steps": 4, "check_every": 1}, early_stopping=True),
    ]
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune_candidates(model, ids[:2], candidates, [0.5], layers=[1], validation_ids=ids[2:])
    return dense, result


def untouched(model, dense):
    return all(torch.equal(v, dense[k]) for k, v in model.state_dict().items())


def test_prune_candidates_leaves_the_model_untouched_and_keeps_each_result(model, compared):
    dense, (summary, fits, weights) = compared
    assert untouched(model, dense)
    assert set(weights) == {("W", 0.5), ("O", 0.5), ("E", 0.5)}
    assert list(weights["W", 0.5]) == [1]
    assert list(summary["candidate"]) == ["W", "O", "E"]
    assert (summary["sparsity_pruned_weights"] == 0.5).all() and (fits["layer"] == 1).all()
    assert not torch.equal(weights["W", 0.5][1][0], weights["O", 0.5][1][0])


def test_scores(model, ids, compared):
    dense, (_, _, weights) = compared
    table = perplexity_table(model, weights, {"text": ids})
    assert untouched(model, dense)
    assert list(table["candidate"]) == ["dense", "W", "O", "E"] and (table["perplexity"] > 1).all()
    delta = excess_perplexity(table)
    assert len(delta) == 3 and "delta" in delta
    errors = error_table(model, weights, {"a": ids[:2], "b": ids[2:]})
    assert set(errors["split"]) == {"a", "b"} and (errors["layer"] == 1).all() and (errors["error"] > 0).all()
    pooled = pooled_errors(errors)
    assert list(pooled.columns) == ["a", "b"] and len(pooled) == 3


def test_reload_check(model, compared, tmp_path):
    dense, (_, _, weights) = compared
    reloaded, difference = reload_check(model, weights["W", 0.5], tmp_path)
    assert difference == 0.0 and untouched(model, dense)
    assert torch.equal(qk_modules(reloaded, 1)[1].weight, weights["W", 0.5][1][1])
    back = reloaded.state_dict()
    pruned = {f"model.layers.1.self_attn.{p}_proj.weight" for p in "qk"}
    assert all(torch.equal(back[k], v) for k, v in dense.items() if k not in pruned)  # the rest as it was


def test_bad_candidates():
    with pytest.raises(ValueError, match="method"):
        Candidate("x", "obs")
    with pytest.raises(ValueError, match="early_stopping"):
        Candidate("x", "wanda", early_stopping=True)
    with pytest.raises(ValueError, match="apply to method 'ours' only"):
        Candidate("x", "wanda", {"steps": 3})
    with pytest.raises(ValueError, match="support"):
        Candidate("x", "ours", {"support": "obs"})
    refit = Candidate("ours + SparseGPT support", "ours", {"support": "sparsegpt"}).config(0.5, layers=[1])
    assert refit.fit.steps == 40 and refit.layers == (1,) and refit.batch_size == 8
