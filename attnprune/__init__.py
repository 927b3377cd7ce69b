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
- :mod:`attnprune.baselines`  magnitude, Wanda and SparseGPT on a linear layer
- :mod:`attnprune.models`, :mod:`attnprune.data`, :mod:`attnprune.calibration`,
  :mod:`attnprune.evaluation`  the real model, its texts, its attention inputs, perplexity
- :mod:`attnprune.fused`      the fused experiment on a real model (Figure 3)
- :mod:`attnprune.deployable`, :mod:`attnprune.pipeline`, :mod:`attnprune.comparison`
  masks on q_proj/k_proj fitted to the true attention, for a whole model, and their comparison
- :mod:`attnprune.cli`        the ``attnprune prune`` / ``attnprune eval`` commands
"""

import warnings

# huggingface_hub imports tqdm.auto, which warns inside a Jupyter kernel without ipywidgets; our
# progress bars are text (or off) in the chapters, so the warning is noise in their output.
warnings.filterwarnings("ignore", message="IProgress not found")

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
