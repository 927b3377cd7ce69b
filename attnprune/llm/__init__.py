"""A Llama-style causal LM (transformers): everything that touches a model.

- :mod:`~attnprune.llm.assets`        the offline assets (install, GGUF → safetensors)
- :mod:`~attnprune.llm.models`        :func:`load_model`, shapes, decoder layers, q/k accessors
- :mod:`~attnprune.llm.data`          texts and token windows
- :mod:`~attnprune.llm.generate`      sequences the model samples itself (self-calibration)
- :mod:`~attnprune.llm.batches`       input-id checks and batching
- :mod:`~attnprune.llm.capture`       layer inputs; run one layer
- :mod:`~attnprune.llm.qk_objective`  the layer's true attention objective (RoPE, GQA, 1/√k) and its fit
- :mod:`~attnprune.llm.prune`         prune a whole model's q/k weights
- :mod:`~attnprune.llm.objectives`    the non-linear refit objectives (probabilities, output, block)
- :mod:`~attnprune.llm.refit`         support by a linear method, then the refit of the kept weights
- :mod:`~attnprune.llm.owl`           OWL's outlier-weighted per-layer sparsities
- :mod:`~attnprune.llm.evaluate`      perplexity, per-layer attention error
- :mod:`~attnprune.llm.speed`         prefill and decode tokens/s, the decode bound, peak memory
"""
