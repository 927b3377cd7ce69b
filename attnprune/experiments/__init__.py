"""The book's experiments, one module per group of chapters: tensors in, tables (pandas) out.

- :mod:`~attnprune.experiments.probes`      the measurements behind the theory chapters (03-05)
- :mod:`~attnprune.experiments.timing`      wall-clock timing and power-law fits
- :mod:`~attnprune.experiments.synthetic`   the synthetic Figure 2 experiment (06)
- :mod:`~attnprune.experiments.fused`       the fused experiment on a real model, Figure 3 (07)
- :mod:`~attnprune.experiments.candidates`  pruning candidates on one model and their scores (08)
"""
