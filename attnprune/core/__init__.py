"""The papers' mathematics on tensors: torch only (no transformers, no pandas).

- :mod:`~attnprune.core.attention`  the attention matrix (Definitions 1.1, 3.1), relative error
- :mod:`~attnprune.core.objective`  the pruning loss L(M) (Definitions 1.2, 3.2), its closed-form gradient
- :mod:`~attnprune.core.masks`      hard masks at an exact sparsity ρ
- :mod:`~attnprune.core.solver`     Algorithm 1: one projected-descent loop, its step rules and schedules
- :mod:`~attnprune.core.trace`      the record of a descent
- :mod:`~attnprune.core.theory`     L_bound and the other constants of the theory
- :mod:`~attnprune.core.baselines`  magnitude, Wanda, SparseGPT on one ``nn.Linear`` weight; the registry
- :mod:`~attnprune.core.checks`     argument checks shared by every module
"""
