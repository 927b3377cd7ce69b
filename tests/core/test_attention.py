"""Definition 1.1 / 3.1: the attention matrix, computed stably."""

import math

import pytest
import torch

from attnprune.core.attention import attention_matrix, causal_mask, future_mask, relative_error, row_entropy


def random_problem(n=6, d=4, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = scale * torch.randn(d, d, generator=g, dtype=torch.float64)
    return X, W


@pytest.mark.parametrize("causal", [False, True])
def test_rows_are_probability_vectors(causal):
    X, W = random_problem()
    A = attention_matrix(X, W, causal)
    assert torch.allclose(A.sum(-1), torch.ones(6, dtype=torch.float64))
    assert (A >= 0).all()


def test_matches_the_definition_exp_then_normalise():
    X, W = random_problem()
    A = torch.exp(X @ W @ X.T)
    expected = A / A.sum(-1, keepdim=True)
    assert torch.allclose(attention_matrix(X, W), expected)


def test_causal_entries_above_the_diagonal_are_exactly_zero():
    X, W = random_problem(n=7)
    A = attention_matrix(X, W, causal=True)
    assert (A[~causal_mask(7)] == 0).all()
    C = causal_mask(7).double()
    expected = torch.exp(X @ W @ X.T) * C
    assert torch.allclose(A, expected / expected.sum(-1, keepdim=True))
    assert A[0, 0] == 1.0


def test_causal_mask_is_lower_triangular():
    assert torch.equal(causal_mask(5), torch.tril(torch.ones(5, 5)).bool())


@pytest.mark.parametrize(("start", "stop"), [(0, 1), (0, 7), (3, 7), (6, 7), (2, 3)])
def test_future_mask_is_the_complement_of_c_on_a_block_of_rows(start, stop):
    """Rows start..stop−1 against keys 0..stop−1: True exactly where j > i."""
    expected = ~causal_mask(stop)[start:stop]
    assert torch.equal(future_mask(start, stop), expected)


@pytest.mark.parametrize("causal", [False, True])
def test_scores_of_size_1e3_stay_finite(causal):
    X, W = random_problem(scale=1.0)
    X = X * 30.0  # scores of order 1e3: exp would overflow without the row max
    S = X @ W @ X.T
    assert S.abs().max() > 1e3
    A = attention_matrix(X, W, causal)
    assert torch.isfinite(A).all()
    assert torch.allclose(A.sum(-1), torch.ones(6, dtype=torch.float64))


def test_batched_inputs_broadcast_over_heads_and_sequences():
    X, W = random_problem(n=5, d=3)
    Xb = torch.stack([X, 2 * X]).unsqueeze(1)  # 2 sequences × 1 × n × d
    Wb = torch.stack([W, -W, 0.5 * W])  # 3 heads × d × d
    A = attention_matrix(Xb, Wb)
    assert A.shape == (2, 3, 5, 5)
    assert torch.allclose(A[1, 2], attention_matrix(2 * X, 0.5 * W))


def test_relative_error_is_a_ratio_of_squared_norms():
    X, W = random_problem()
    assert relative_error(X, W, W) == 0.0
    A, B = attention_matrix(X, W), attention_matrix(X, torch.zeros_like(W))
    expected = float((B - A).square().sum() / A.square().sum())
    assert relative_error(X, torch.zeros_like(W), W) == pytest.approx(expected, rel=1e-10)


def test_row_entropy_of_uniform_and_one_hot_rows():
    n = 8
    assert row_entropy(torch.full((n, n), 1.0 / n)) == pytest.approx(math.log(n))
    assert row_entropy(torch.eye(n)) == 0.0


def test_float32_is_accepted():
    X, W = random_problem()
    A = attention_matrix(X.float(), W.float())
    assert A.dtype == torch.float32


@pytest.mark.parametrize(
    "X, W, name",
    [
        (torch.randn(5, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64), "X"),
        (torch.randn(5, 4, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64), "W"),
        (torch.full((5, 4), float("nan"), dtype=torch.float64), torch.eye(4, dtype=torch.float64), "X"),
        (torch.randn(5, 4, dtype=torch.float64), torch.full((4, 4), float("inf"), dtype=torch.float64), "W"),
        (torch.randn(5, 4).long(), torch.eye(4, dtype=torch.float64), "X"),
        (torch.randn(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64), "X"),
    ],
)
def test_bad_inputs_name_the_argument(X, W, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        attention_matrix(X, W)
