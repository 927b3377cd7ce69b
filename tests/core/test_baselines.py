"""The linear baselines (spec §5): magnitude, Wanda, SparseGPT."""

import pytest
import torch

from attnprune.core.baselines import (
    LinearPruneResult,
    hessian,
    magnitude_prune,
    sparsegpt_prune,
    wanda_prune,
)
from attnprune.core.masks import n_pruned

PRUNERS = {
    "magnitude": lambda W, X, rho: magnitude_prune(W, rho),
    "wanda": wanda_prune,
    "sparsegpt": sparsegpt_prune,
    "sparsegpt-blocks": lambda W, X, rho: sparsegpt_prune(W, X, rho, blocksize=7),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small matrices: one torch thread is fastest, and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def least_squares_problem(seed, out=12, inp=40, tokens=300, dtype=torch.float64):
    """W (out × in) and X (tokens × in) with correlated features of unequal scales, like
    real activations (Wanda and SparseGPT exist because of them)."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(out, inp, generator=gen, dtype=dtype)
    mixing = torch.eye(inp, dtype=dtype) + 0.4 * torch.randn(inp, inp, generator=gen, dtype=dtype) / inp**0.5
    scales = torch.exp(torch.randn(inp, generator=gen, dtype=dtype))
    X = torch.randn(tokens, inp, generator=gen, dtype=dtype) @ mixing * scales
    return W, X


def reconstruction_error(X, W, W_pruned):
    """‖XWᵀ − XŴᵀ‖_F / ‖XWᵀ‖_F."""
    return float((X @ W.T - X @ W_pruned.T).norm() / (X @ W.T).norm())


@pytest.mark.parametrize("name", PRUNERS)
@pytest.mark.parametrize("rho", [0.0, 0.25, 0.5, 0.51, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_sparsity_per_output_row(name, rho, dtype):
    W, X = least_squares_problem(0, out=9, inp=23, tokens=64, dtype=dtype)
    result = PRUNERS[name](W, X, rho)
    assert isinstance(result, LinearPruneResult)
    assert result.weight.dtype == dtype and result.mask.dtype == dtype
    assert result.weight.shape == W.shape and result.mask.shape == W.shape
    assert set(result.mask.unique().tolist()) <= {0.0, 1.0}
    zeros_per_row = (result.mask == 0).sum(dim=1)
    assert (zeros_per_row == n_pruned(23, rho)).all()
    assert (result.weight[result.mask == 0] == 0).all()


@pytest.mark.parametrize("name", ["magnitude", "wanda"])
def test_magnitude_and_wanda_never_change_kept_weights(name):
    W, X = least_squares_problem(1)
    result = PRUNERS[name](W, X, 0.5)
    torch.testing.assert_close(result.weight, W * result.mask, rtol=0, atol=0)


def test_magnitude_keeps_the_largest_entries_of_each_row():
    W = torch.tensor([[1.0, -5.0, 2.0, 0.5], [-3.0, 0.1, 0.2, 4.0]])
    result = magnitude_prune(W, 0.5)
    assert result.mask.tolist() == [[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]


def test_wanda_weighs_by_the_input_column_norms():
    W = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    X = torch.diag(torch.tensor([10.0, 1.0, 1.0, 1.0]))  # column norms 10, 1, 1, 1
    assert wanda_prune(W, X, 0.5).mask.tolist() == [[1.0, 0.0, 0.0, 1.0]]


def test_wanda_equals_magnitude_when_all_input_columns_have_the_same_norm():
    W, X = least_squares_problem(2)
    X = 3.0 * X / X.norm(dim=0)
    assert torch.allclose(X.norm(dim=0), torch.full((X.shape[1],), 3.0, dtype=X.dtype))
    assert torch.equal(wanda_prune(W, X, 0.6).mask, magnitude_prune(W, 0.6).mask)
    assert torch.equal(wanda_prune(W, X, 0.6).weight, magnitude_prune(W, 0.6).weight)


@pytest.mark.parametrize("seed", range(5))
def test_sparsegpt_reconstructs_better_than_wanda_and_magnitude(seed):
    W, X = least_squares_problem(seed)
    errors = {name: reconstruction_error(X, W, PRUNERS[name](W, X, 0.5).weight) for name in PRUNERS}
    assert errors["sparsegpt"] < errors["wanda"]
    assert errors["sparsegpt"] < errors["magnitude"]
    assert errors["sparsegpt-blocks"] < errors["wanda"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparsegpt_with_zero_sparsity_returns_the_weight_unchanged(dtype):
    W, X = least_squares_problem(3, dtype=dtype)
    result = sparsegpt_prune(W, X, 0.0)
    assert torch.equal(result.weight, W)
    assert torch.equal(result.mask, torch.ones_like(W))


def test_sparsegpt_accepts_a_precomputed_hessian_and_batched_input():
    W, X = least_squares_problem(4, tokens=120)
    from_x = sparsegpt_prune(W, X, 0.5)
    from_h = sparsegpt_prune(W, None, 0.5, H=X.T @ X)
    batched = sparsegpt_prune(W, X.reshape(3, 40, -1), 0.5)
    assert torch.equal(from_x.mask, from_h.mask) and torch.equal(from_x.mask, batched.mask)
    torch.testing.assert_close(from_x.weight, from_h.weight)
    torch.testing.assert_close(from_x.weight, batched.weight)
    torch.testing.assert_close(hessian(X.reshape(3, 40, -1), W), X.T @ X)


def naive_sparsegpt(W, X, rho, blocksize, percdamp=0.01):
    """An independent transcription of optimal brain surgeon, one row and one column at a time:
    prune column i by w_F ← w_F − (w_i / [H_F⁻¹]_00)·[H_F⁻¹]_{0,:} with F = {i, ..., in−1}. On
    entering a block, each row scores its unprocessed columns j by w_j² / [H_{F_j}⁻¹]_00 and
    prunes, among its lowest (zeros still owed) scores, those in the block."""
    H = X.T @ X
    H = H + percdamp * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype)
    inp = W.shape[1]
    inverses = [torch.linalg.inv(H[i:, i:]) for i in range(inp)]
    total = n_pruned(inp, rho)
    out = W.clone()
    for r in range(W.shape[0]):
        w = out[r]
        done = 0
        for i1 in range(0, inp, blocksize):
            i2 = min(i1 + blocksize, inp)
            scores = {j: float(w[j] ** 2 / inverses[j][0, 0]) for j in range(i1, inp)}
            lowest = sorted(scores, key=lambda j: (scores[j], j))[: total - done]
            pruned = {j for j in lowest if j < i2}
            done += len(pruned)
            for i in range(i1, i2):
                if i in pruned:
                    w[i:] -= w[i] / inverses[i][0, 0] * inverses[i][0, :]
                    w[i] = 0.0
    return out


@pytest.mark.parametrize("blocksize", [128, 6])
def test_sparsegpt_agrees_with_a_naive_optimal_brain_surgeon(blocksize):
    W, X = least_squares_problem(5, out=5, inp=17, tokens=80)
    result = sparsegpt_prune(W, X, 0.4, blocksize=blocksize)
    expected = naive_sparsegpt(W, X, 0.4, blocksize)
    assert torch.equal(result.mask, (expected != 0).to(W.dtype))
    torch.testing.assert_close(result.weight, expected, rtol=1e-9, atol=1e-9)


def test_sparsegpt_prunes_dead_inputs_first_and_stays_finite():
    W, X = least_squares_problem(6, out=4, inp=10, tokens=50)
    X[:, [2, 7]] = 0.0
    result = sparsegpt_prune(W, X, 0.2)
    assert torch.isfinite(result.weight).all()
    assert (result.mask[:, [2, 7]] == 0).all()


def test_bad_input_is_refused_with_a_clear_message():
    W, X = least_squares_problem(7, out=4, inp=10, tokens=30)
    with pytest.raises(ValueError, match="exactly one of X"):
        sparsegpt_prune(W, X, 0.5, H=X.T @ X)
    with pytest.raises(ValueError, match="exactly one of X"):
        sparsegpt_prune(W, None, 0.5)
    with pytest.raises(ValueError, match="H must be in × in"):
        sparsegpt_prune(W, None, 0.5, H=torch.eye(3, dtype=W.dtype))
    with pytest.raises(ValueError, match="X has 9 features"):
        wanda_prune(W, X[:, :9], 0.5)
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_prune(W, 1.0)
    with pytest.raises(ValueError, match="out × in"):
        magnitude_prune(W[None], 0.5)
    with pytest.raises(ValueError, match="blocksize"):
        sparsegpt_prune(W, X, 0.5, blocksize=0)
    with pytest.raises(ValueError, match="percdamp"):
        sparsegpt_prune(W, X, 0.5, percdamp=-0.01)
