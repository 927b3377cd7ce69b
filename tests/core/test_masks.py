"""Hard masks with exactly round(ρ·size) zeros per group."""

import pytest
import torch

from attnprune.core.masks import hard_mask, n_pruned, sparsity_of


@pytest.mark.parametrize("rho", [0.0, 0.1, 0.25, 0.5, 0.7, 0.99])
@pytest.mark.parametrize("shape", [(8, 8), (7, 5), (3, 6, 6)])
def test_whole_matrix_groups_have_the_exact_count(rho, shape):
    score = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    B = hard_mask(score, rho, "matrix")
    per_matrix = (B == 0).flatten(-2).sum(-1)
    assert (per_matrix == n_pruned(shape[-1] * shape[-2], rho)).all()


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.5, 0.9])
def test_row_groups_have_the_exact_count(rho):
    score = torch.randn(6, 11, generator=torch.Generator().manual_seed(1))
    B = hard_mask(score, rho, "row")
    assert ((B == 0).sum(-1) == n_pruned(11, rho)).all()


def test_the_lowest_scores_are_dropped():
    score = torch.tensor([[4.0, 1.0, 3.0], [2.0, 6.0, 5.0]])
    B = hard_mask(score, 0.5, "matrix")  # round(3.0) = 3 zeros
    assert B.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]
    assert hard_mask(score, 0.34, "row").tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]


def test_ties_are_broken_deterministically_by_position():
    score = torch.zeros(4, 4)
    first, second = hard_mask(score, 0.5), hard_mask(score, 0.5)
    assert torch.equal(first, second)
    assert first.flatten()[:8].sum() == 0 and first.flatten()[8:].sum() == 8


def stable_sort_mask(score, sparsity, group):
    """The reference rule: drop the first round(ρ·size) entries of a stable sort of each group."""
    flat = score.flatten(-2) if group == "matrix" else score
    mask = torch.ones_like(flat)
    k = n_pruned(flat.shape[-1], sparsity)
    if k:
        mask.scatter_(-1, torch.argsort(flat, dim=-1, stable=True)[..., :k], 0.0)
    return mask.reshape(score.shape)


@pytest.mark.parametrize("group", ["matrix", "row"])
@pytest.mark.parametrize("seed", range(12))
def test_the_mask_is_the_first_entries_of_a_stable_sort_even_with_many_ties(group, seed):
    generator = torch.Generator().manual_seed(seed)
    shape = [(3, 7, 9), (5, 5), (1, 13), (4, 2, 3)][seed % 4]
    score = torch.randint(0, 3, shape, generator=generator).to(torch.float32)  # heavy ties
    if seed % 3 == 0:
        score = torch.randn(shape, generator=generator)
    for rho in (0.1, 0.3, 0.5, 0.77, 0.99):
        assert torch.equal(hard_mask(score, rho, group), stable_sort_mask(score, rho, group))


def test_n_pruned_is_round_of_rho_times_size():
    assert n_pruned(10, 0.25) == round(2.5) == 2
    assert n_pruned(4096, 0.5) == 2048
    assert n_pruned(3, 0.0) == 0


def test_sparsity_of_counts_exact_zeros():
    assert sparsity_of(torch.tensor([0.0, 1.0, 0.0, 2.0])) == 0.5


@pytest.mark.parametrize("rho", [-0.1, 1.0, 1.5, float("nan"), "half", True])
def test_sparsity_outside_the_unit_interval_is_refused(rho):
    with pytest.raises(ValueError, match="sparsity"):
        hard_mask(torch.ones(3, 3), rho)


def test_unknown_group_is_refused():
    with pytest.raises(ValueError, match="group"):
        hard_mask(torch.ones(3, 3), 0.5, "column")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64])
def test_the_mask_has_the_scores_dtype_and_the_stable_sort_rule(dtype):
    generator = torch.Generator().manual_seed(3)
    score = torch.randint(0, 50, (6, 40), generator=generator).to(dtype)  # ties in every dtype
    for group in ("row", "matrix"):
        B = hard_mask(score, 0.5, group)
        assert B.dtype == dtype
        assert torch.equal(B, stable_sort_mask(score, 0.5, group))


def test_infinite_scores_are_ranked_not_refused():
    """+inf and −inf in one group make the sum NaN; only a real NaN is refused."""
    score = torch.tensor([[float("inf"), 1.0, float("-inf"), 2.0]])
    assert hard_mask(score, 0.5, "row").tolist() == [[1.0, 0.0, 0.0, 1.0]]
