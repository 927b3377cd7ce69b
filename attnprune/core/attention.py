"""The attention matrix of Definition 1.1 and its causal variant (Definition 3.1).

    Att(W) = D⁻¹A,  A = exp(X W Xᵀ) (∘ C in the causal case),  D = diag(A·1)

i.e. the row softmax of the scores S = X W Xᵀ. There is no 1/√k factor: in a real model it is
folded into W. Leading batch dimensions broadcast (X: ... × n × d, W: ... × d × d), so one call
covers several sequences or several heads.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import check_bool, check_inner_dim, check_square, check_tensor


def causal_mask(n: int, device: torch.device | None = None) -> Tensor:
    """C ∈ {0,1}^{n×n} with C_ij = 1 iff j ≤ i (Definition 3.1), as a bool tensor."""
    return ~future_mask(0, n, device)


def future_mask(start: int, stop: int, device: torch.device | None = None) -> Tensor:
    """The complement of C for query rows start..stop−1 and keys 0..stop−1: True where key j lies
    after row i (j > i), the entries a causal softmax sets to −inf; (stop − start) × stop, bool."""
    return torch.ones(stop - start, stop, dtype=torch.bool, device=device).triu_(start + 1)


def scores(X: Tensor, W: Tensor) -> Tensor:
    """S = X W Xᵀ, the attention logits (n × n)."""
    return X @ W @ X.transpose(-1, -2)


def row_softmax(S: Tensor, causal: bool = False) -> Tensor:
    """The row softmax of S, stably: entries above the diagonal are −inf when ``causal``.

    The row maximum is subtracted before exp, so scores of any size stay finite, and masked
    entries are exactly 0.
    """
    if causal:
        S = S.masked_fill(~causal_mask(S.shape[-1], S.device), float("-inf"))
    return torch.softmax(S, dim=-1)


def attention_matrix(X: Tensor, W: Tensor, causal: bool = False) -> Tensor:
    """Att(W) = D⁻¹ exp(X W Xᵀ) (Definition 1.1), or with the causal mask C (Definition 3.1)."""
    check_tensor("X", X)
    check_tensor("W", W)
    check_square("W", W)
    check_inner_dim("X", X, "W", W)
    return row_softmax(scores(X, W), check_bool("causal", causal))


def relative_error(X: Tensor, W_pruned: Tensor, W: Tensor, causal: bool = False) -> float:
    """‖Att(W̃) − Att(W)‖²_F / ‖Att(W)‖²_F, the y-axis of Figure 2 (a ratio of squared norms)."""
    reference = attention_matrix(X, W, causal)
    pruned = attention_matrix(X, W_pruned, causal)
    return float((pruned - reference).square().sum() / reference.square().sum())


def row_entropy(A: Tensor) -> float:
    """Mean Shannon entropy (nats) of the rows of an attention matrix: uniform rows give log n."""
    logs = torch.where(A > 0, A.log(), torch.zeros_like(A))
    return float(-(A * logs).sum(-1).mean())
