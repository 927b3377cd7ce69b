"""Bad input to the core functions: a ValueError that names the argument, never a silent wrong
result or a traceback from deep inside torch."""

from __future__ import annotations

import pytest
import torch

from attnprune.core.attention import attention_matrix, relative_error
from attnprune.core.baselines import hessian, sparsegpt_prune, wanda_prune
from attnprune.core.masks import hard_mask
from attnprune.core.objective import PruningProblem
from attnprune.core.solver import prune

X = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
W = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

CASES = {
    "hard_mask on a list": (lambda: hard_mask([[1.0, 2.0]], 0.5), "score"),
    "hard_mask on a 0-D tensor": (lambda: hard_mask(torch.tensor(1.0), 0.5), "score"),
    "hard_mask on a 1-D tensor, per matrix": (lambda: hard_mask(torch.ones(4), 0.5), "score"),
    "hard_mask with NaN scores": (lambda: hard_mask(torch.tensor([[1.0, float("nan")]]), 0.5, "row"), "NaN"),
    "hard_mask with a bool score": (lambda: hard_mask(torch.ones(2, 2, dtype=torch.bool), 0.5), "score"),
    "relative_error on X with no tokens": (lambda: relative_error(X[:0], W, W), "X"),
    "attention with causal='no'": (lambda: attention_matrix(X, W, causal="no"), "causal"),
    "attention with causal=1": (lambda: attention_matrix(X, W, causal=1), "causal"),
    "problem with causal='yes'": (lambda: PruningProblem(X, W, causal="yes"), "causal"),
    "prune on X with no tokens": (lambda: prune(PruningProblem(X[:0], W), 0.5), "X"),
    "attention in bfloat16": (lambda: attention_matrix(X.bfloat16(), W.bfloat16()), "float32"),
    "wanda on an all-zero X": (lambda: wanda_prune(W, torch.zeros_like(X), 0.5), "all zeros"),
    "sparsegpt on an all-zero X": (lambda: sparsegpt_prune(W, torch.zeros_like(X), 0.5), "all zeros"),
    "sparsegpt on an all-zero H": (lambda: sparsegpt_prune(W, None, 0.5, H=torch.zeros(4, 4)), "H"),
    "hessian of an all-zero X": (lambda: hessian(torch.zeros_like(X), W), "X"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_a_value_error_naming_it(case):
    call, named = CASES[case]
    with pytest.raises(ValueError, match=named):
        call()


def test_a_dead_feature_is_still_accepted():
    """Only an X that is zero everywhere is refused: one feature that never fires is real data."""
    dead = X.clone()
    dead[:, 0] = 0
    assert wanda_prune(W, dead, 0.5).mask.sum() == 8
    assert sparsegpt_prune(W, dead, 0.5).mask.sum() == 8


def test_hard_mask_on_one_row_per_row():
    assert hard_mask(torch.tensor([3.0, 1.0, 2.0, 0.5]), 0.5, "row").tolist() == [1.0, 0.0, 1.0, 0.0]
