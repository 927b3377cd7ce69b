"""OWL's per-layer sparsities: their mean is ρ, their span at most 2λ, more outliers prune less."""

from __future__ import annotations

import pytest
import torch

from attnprune.core.masks import n_pruned
from attnprune.llm.owl import OWL_LAMBDA, layer_outlier_ratios, outlier_ratio, owl_sparsities
from attnprune.llm.refit import ReconstructConfig, reconstruct_model


def test_the_outlier_ratio_counts_entries_above_m_times_the_mean():
    metric = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0])  # mean 10.9
    assert outlier_ratio([metric], m=5.0) == pytest.approx(0.1)
    assert outlier_ratio([metric[:5], metric[5:]], m=5.0) == pytest.approx(0.1)  # one layer, several weights


def test_sparsities_average_to_rho_span_two_lambda_and_spare_the_outlier_layers():
    ratios = [0.01, 0.05, 0.02, 0.03]
    sparsity = owl_sparsities(ratios, 0.6)
    assert sum(sparsity) / len(sparsity) == pytest.approx(0.6, rel=1e-12)
    assert max(sparsity) - min(sparsity) == pytest.approx(2 * OWL_LAMBDA, rel=1e-12)
    assert sorted(range(4), key=sparsity.__getitem__) == sorted(range(4), key=ratios.__getitem__, reverse=True)
    assert owl_sparsities([0.02, 0.02], 0.5) == [0.5, 0.5]
    with pytest.raises(ValueError, match="sparsity"):
        owl_sparsities(ratios, 1.0)


def test_reconstruct_model_prunes_each_layer_at_its_owl_sparsity(small_llama):
    model = small_llama()
    ids = torch.randint(3, 512, (4, 16), generator=torch.Generator().manual_seed(5))
    ratios = layer_outlier_ratios(model, ids, ("q", "k"), [0, 1])
    assert sorted(ratios) == [0, 1] and all(0 <= r < 1 for r in ratios.values())
    config = ReconstructConfig("wanda", 0.5, refit=None, allocation="owl", batch_size=2)
    pruned, report = reconstruct_model(model, ids, config)
    expected = dict(zip(ratios, owl_sparsities(list(ratios.values()), 0.5), strict=True))
    assert report.layer_sparsity == pytest.approx(expected)
    for layer, weights in pruned.items():
        for W in weights.values():
            zeros = n_pruned(W.shape[1], report.layer_sparsity[layer])
            assert bool(((W == 0).sum(dim=1) == zeros).all())
    with pytest.raises(ValueError, match="allocation must be one of"):
        ReconstructConfig("wanda", 0.5, allocation="global")
