"""attnprune: the reproducible companion to arXiv 2410.11261 (and 2412.12441).

"Beyond Linear Approximations: A Novel Pruning Approach for Attention Matrix" prunes the fused
attention weight W = W_Q W_Kᵀ by gradient descent on a mask M, so that the attention matrix
Att(M∘W) stays close to Att(W). The package has three layers and one leaf; imports go downward
only (core ← llm ← experiments ← cli, notebooks; records is a leaf anyone may use):

- :mod:`attnprune.core`         the papers' mathematics on tensors (torch only)
- :mod:`attnprune.llm`          a Llama-style causal LM: loading, texts, layer inputs, q/k pruning
- :mod:`attnprune.experiments`  the book's experiments, tensors in, tables out
- :mod:`attnprune.records`      atomic results files with provenance; the verdict rule
- :mod:`attnprune.cli`          the ``attnprune`` command; :mod:`attnprune.notebooks` the chapter runner

The names below are the method's public API. :func:`load_model` is imported on first use, so
``import attnprune`` (and ``import attnprune.core``) needs neither transformers nor pandas.
"""

from .core.attention import attention_matrix, causal_mask, relative_error, row_entropy, row_softmax
from .core.masks import hard_mask, n_pruned, sparsity_of
from .core.objective import (
    PruningProblem,
    autograd_gradient,
    finite_difference_gradient,
    gradient,
    loss,
)
from .core.solver import PruneResult, Trace, prune
from .core.theory import lipschitz_bound

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
    "load_model",
    "loss",
    "n_pruned",
    "prune",
    "relative_error",
    "row_entropy",
    "row_softmax",
    "sparsity_of",
]


def __getattr__(name: str):
    """Lazy access to the model loader (it imports transformers)."""
    if name == "load_model":
        from .llm.models import load_model

        return load_model
    raise AttributeError(f"module 'attnprune' has no attribute {name!r}")
