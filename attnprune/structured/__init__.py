"""Part II: structured "numerical pruning" (arXiv 2412.12441) of attention heads and MLP channels.

The contract is ``../shared/spec/numerical-pruning.md``. Modules, in the order a pruning runs:

- :mod:`~attnprune.structured.stats`         the calibration statistics of the inputs of ``o_proj`` and
  ``down_proj`` (H = XᵀX, column sums, N), from one dense pass
- :mod:`~attnprune.structured.scores`        head and channel scores: numerical (Newton and closed form),
  FLAP, Wanda-sp, magnitude, random; ONE registry
- :mod:`~attnprune.structured.allocation`    which heads and channels each layer keeps (global or uniform
  cut, the grouped-query rule, a minimum per layer)
- :mod:`~attnprune.structured.compensation`  the least-squares refit of the kept input columns, its
  Lagrangian form, FLAP's bias compensation
- :mod:`~attnprune.structured.slicing`       a physically smaller model that saves and reloads
- :mod:`~attnprune.structured.prune`         the five steps from one typed config (``prune_structured``),
  checks from config.json alone, loading a sliced checkpoint with its tokenizer (``load_pruned``)
- :mod:`~attnprune.structured.speed`         speed and peak memory of a checkpoint, dense or sliced, each in
  a fresh process (``measure_checkpoint``)

Imports go one way: this package uses :mod:`attnprune.core` and :mod:`attnprune.llm`, never the reverse.
"""
