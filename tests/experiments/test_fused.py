"""The fused experiment (spec §7.1) on the tiny Llama-3.2-shaped model."""

from __future__ import annotations

import math

import pytest
import torch

from attnprune.core.attention import attention_matrix
from attnprune.core.baselines import sparsegpt_prune, wanda_prune
from attnprune.core.masks import hard_mask, n_pruned
from attnprune.experiments.fused import (
    COLUMNS,
    baseline_fused_weights,
    fused_experiment,
    fused_weights,
    head_errors,
    per_layer,
)
from attnprune.llm import models
from attnprune.llm.capture import capture_attention_inputs
from attnprune.llm.models import attention_shape


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1000, 50000, (3, 12), generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def layer0(tiny_llama, ids):
    X = capture_attention_inputs(tiny_llama, ids, [0])[0]
    q, k = models.qk_modules(tiny_llama, 0)
    return X, q.weight.detach(), k.weight.detach(), attention_shape(tiny_llama)


def test_fused_weights_give_the_logits_without_rotary_embedding(layer0):
    X, Wq, Wk, shape = layer0
    W = fused_weights(Wq, Wk, shape)
    assert W.shape == (shape.heads, shape.hidden, shape.hidden)
    N, T, _ = X.shape
    q = (X @ Wq.T).view(N, T, shape.heads, shape.head_dim).transpose(1, 2)
    k = (X @ Wk.T).view(N, T, shape.kv_heads, shape.head_dim).transpose(1, 2)
    for h in range(shape.heads):
        g = h // shape.group_size  # grouped-query attention: 4 query heads per KV head
        logits = q[:, h] @ k[:, g].transpose(-1, -2) / math.sqrt(shape.head_dim)
        torch.testing.assert_close(X @ W[h] @ X.transpose(-1, -2), logits, atol=1e-5, rtol=1e-4)


def test_head_errors_pool_per_head_and_are_zero_for_the_dense_weight(layer0):
    X, Wq, Wk, shape = layer0
    W = fused_weights(Wq, Wk, shape)
    error, norm = head_errors(X, W, W, batch_size=2)
    assert torch.all(error == 0) and error.shape == (shape.heads,)
    halved = W.clone()
    halved[3] = 0.0
    error, norm = head_errors(X, halved, W, batch_size=2)
    assert torch.all(error[torch.arange(shape.heads) != 3] == 0) and error[3] > 0
    reference = attention_matrix(X.unsqueeze(1), W, causal=True)
    assert float(norm.sum()) == pytest.approx(float(reference.square().sum()), rel=1e-5)


def test_factor_baselines_prune_each_head_as_its_own_linear_layer(layer0):
    X, Wq, Wk, shape = layer0
    for prune in (wanda_prune, sparsegpt_prune):
        whole = prune(Wq, X, 0.5).weight
        block = slice(2 * shape.head_dim, 3 * shape.head_dim)
        torch.testing.assert_close(whole[block], prune(Wq[block], X, 0.5).weight)
    W_pruned, zeros = baseline_fused_weights("wanda", "factors", Wq, Wk, X, shape, 0.5)
    assert zeros == 0.5 and W_pruned.shape == (shape.heads, shape.hidden, shape.hidden)


def test_adam_prune_fits_better_than_magnitude(layer0):
    from attnprune.core.objective import PruningProblem
    from attnprune.experiments.fused import adam_prune

    X, Wq, Wk, shape = layer0
    W = fused_weights(Wq, Wk, shape)[:2]
    problem = PruningProblem(X.unsqueeze(1), W, causal=True)
    result = adam_prune(problem, 0.5, steps=30, lr=0.01)
    assert torch.all((result.mask == 0).flatten(1).sum(1) == n_pruned(W[0].numel(), 0.5))
    magnitude = problem.relative_error(W * hard_mask(W.abs(), 0.5))
    assert result.relative_error("reweighted") < magnitude
    assert result.relative_error("mask-only") < magnitude
    assert len(result.trace.loss) == 30


def test_fused_baseline_prunes_the_transposed_fused_weight_row_by_row(layer0):
    X, Wq, Wk, shape = layer0
    W_pruned, zeros = baseline_fused_weights("magnitude", "fused", Wq, Wk, X, shape, 0.25)
    assert zeros == 0.25
    per_column = (W_pruned == 0).sum(-2)  # rows of W_hᵀ are columns of W_h
    assert torch.all(per_column == n_pruned(shape.hidden, 0.25))
    with pytest.raises(ValueError, match="application"):
        baseline_fused_weights("wanda", "both", Wq, Wk, X, shape, 0.5)


def test_fused_experiment_table(tiny_llama, ids):
    table = fused_experiment(tiny_llama, ids[:2], ids[2:], [1], [0.5], steps=4, adam_steps=4, batch_size=1)
    assert list(table.columns) == COLUMNS
    heads = attention_shape(tiny_llama).heads
    # ours, ours-adam: 2 outputs each; baselines: 3 methods × 2 applications; 2 splits, every head
    assert len(table) == (4 + 6) * 2 * heads
    ours = table[table["method"].str.startswith("ours")]
    assert ours["sparsity"].eq(n_pruned(512 * 512, 0.5) / (512 * 512)).all()
    assert (table["norm"] > 0).all() and (table["sq_error"] >= 0).all()
    pooled = per_layer(table)
    assert len(pooled) == 10 * 2
    row = pooled[(pooled["label"] == "ours (reweighted)") & (pooled["split"] == "held-out")]
    part = table[(table["method"] == "ours") & (table["variant"] == "reweighted") & (table["split"] == "held-out")]
    assert float(row["error"].iloc[0]) == pytest.approx(part["sq_error"].sum() / part["norm"].sum())
    with pytest.raises(ValueError, match="sparsities"):
        fused_experiment(tiny_llama, ids[:2], ids[2:], [1], [])
