"""attnprune: the reproducible companion to arXiv 2410.11261.

"Beyond Linear Approximations: A Novel Pruning Approach for Attention Matrix" prunes the fused
attention weight W = W_Q W_Kᵀ by gradient descent on a mask M, so that the attention matrix
Att(M∘W) stays close to Att(W). The modules, one idea each:

- :mod:`attnprune.attention`  the attention matrix (Definitions 1.1, 3.1) and the relative error
- :mod:`attnprune.objective`  the pruning loss (Definitions 1.2, 3.2) and its closed-form gradient
- :mod:`attnprune.masks`      hard masks at an exact sparsity ρ
- :mod:`attnprune.solver`     Algorithm 1 and its variants (plain, projected)
- :mod:`attnprune.theory`     the constants of the theory (Lipschitz bound, ...)
- :mod:`attnprune.results`    atomic, provenance-stamped results files
- :mod:`attnprune.verdicts`   the "Claims and verdicts" table
"""

from .attention import attention_matrix, causal_mask, relative_error, row_entropy, row_softmax
from .masks import hard_mask, n_pruned, sparsity_of
from .objective import (
    PruningProblem,
    autograd_gradient,
    finite_difference_gradient,
    gradient,
    loss,
)
from .solver import PruneResult, Trace, prune
from .theory import lipschitz_bound

__version__ = "0.1.0"

__all__ = [
    "PruneResult",
    "PruningProblem",
    "Trace",
    "attention_matrix",
    "autograd_gradient",
    "causal_mask",
    "finite_difference_gradient",
    "gradient",
    "hard_mask",
    "lipschitz_bound",
    "loss",
    "n_pruned",
    "prune",
    "relative_error",
    "row_entropy",
    "row_softmax",
    "sparsity_of",
]
