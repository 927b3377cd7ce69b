"""Compensation (spec §3 and §4): the refit of the kept columns = the paper's Lagrangian form =
``torch.linalg.lstsq``; FLAP's bias keeps the mean output; the errors name the argument."""

from __future__ import annotations

import pytest
import torch

from attnprune.structured import compensation as cm
from attnprune.structured.allocation import AllocationConfig, allocate
from attnprune.structured.layers import layer_shapes
from attnprune.structured.scores import score_model
from attnprune.structured.slicing import slice_model


def _layer(D: int = 30, D_out: int = 12, N: int = 400, seed: int = 0):
    """X (N × D, correlated columns, nonzero mean), weight (D_out × D), kept columns S and pruned P."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=g, dtype=torch.float64) @ torch.randn(D, D, generator=g, dtype=torch.float64) + 0.5
    weight = torch.randn(D_out, D, generator=g, dtype=torch.float64)
    kept = torch.randperm(D, generator=g)[: 2 * D // 3].sort().values
    return X, weight, kept, cm.pruned_of(kept, D)


@pytest.mark.parametrize("damping", [0.0, 0.05])
def test_refit_equals_the_lagrangian_form(damping):
    X, weight, kept, pruned = _layer()
    H = X.T @ X
    refit = cm.refit_kept(weight, H, kept, damping=damping)
    updated = weight + cm.lagrangian_update(weight, H, pruned, damping=damping)
    torch.testing.assert_close(updated[:, kept], refit, rtol=1e-8, atol=1e-8)
    assert updated[:, pruned].abs().max() < 1e-8 * weight.abs().max()  # the pruned rows go to zero


def test_undamped_refit_is_least_squares():
    X, weight, kept, _ = _layer(seed=1)
    reference = torch.linalg.lstsq(X[:, kept], X @ weight.T).solution.T  # min ‖X Wᵀ − X_S W_Sᵀ‖
    torch.testing.assert_close(cm.refit_kept(weight, X.T @ X, kept, damping=0.0), reference, rtol=1e-7, atol=1e-7)


def test_damped_refit_is_ridge_least_squares_towards_the_old_weights():
    """min ‖X Wᵀ − X_S W'ᵀ‖² + γ‖W' − W_S‖²: lstsq on the stacked system [X_S; √γ I]."""
    X, weight, kept, _ = _layer(seed=2)
    H, damping = X.T @ X, 0.02
    root = (damping * H.diagonal().mean()).sqrt()
    system = torch.cat([X[:, kept], root * torch.eye(kept.numel(), dtype=torch.float64)])
    target = torch.cat([X @ weight.T, root * weight[:, kept].T])
    reference = torch.linalg.lstsq(system, target).solution.T
    torch.testing.assert_close(cm.refit_kept(weight, H, kept, damping=damping), reference, rtol=1e-7, atol=1e-7)


def test_float32_refit_matches_the_float64_reference():
    X, weight, kept, _ = _layer(seed=3)
    reference = cm.refit_kept(weight, X.T @ X, kept)
    got = cm.refit_kept(weight.float(), (X.T @ X).float(), kept)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


def test_refit_lowers_the_output_error_and_bias_keeps_the_mean():
    X, weight, kept, _ = _layer(seed=4)
    target = X @ weight.T
    plain = ((X[:, kept] @ weight[:, kept].T - target) ** 2).sum()
    refit = ((X[:, kept] @ cm.refit_kept(weight, X.T @ X, kept, damping=1e-6).T - target) ** 2).sum()
    assert refit < 0.5 * plain
    bias = cm.bias_compensation(weight, X.mean(dim=0), kept, torch.ones(12, dtype=torch.float64))
    compensated = X[:, kept] @ weight[:, kept].T + bias
    torch.testing.assert_close(compensated.mean(dim=0), (target + 1.0).mean(dim=0), rtol=1e-10, atol=1e-10)


def test_compensate_model_feeds_slice_model(smol_3to1, model_stats, token_ids):
    """Refit on the calibration inputs brings the pruned model closer to the dense one than no
    compensation (logits on the calibration tokens)."""
    stats = model_stats["3:1"]
    allocation = allocate(
        score_model(smol_3to1, stats, "numerical"), layer_shapes(smol_3to1), AllocationConfig(0.2, allocation="uniform")
    )
    with torch.no_grad():
        dense = smol_3to1(token_ids).logits
        errors = {}
        for method in cm.COMPENSATIONS:
            replacements = cm.compensate_model(smol_3to1, stats, allocation, method, damping=0.01)
            errors[method] = (slice_model(smol_3to1, allocation, replacements)(token_ids).logits - dense).norm()
    assert errors["refit"] < errors["none"]
    assert errors["bias"] < errors["none"]


def test_bad_inputs_name_the_argument(smol_3to1, model_stats):
    X, weight, kept, _ = _layer(seed=5)
    H = X.T @ X
    with pytest.raises(ValueError, match="kept must hold channel indices in"):
        cm.refit_kept(weight, H, torch.tensor([0, 30]))
    with pytest.raises(ValueError, match="kept must be a 1-D LongTensor"):
        cm.refit_kept(weight, H, [0, 1])
    with pytest.raises(ValueError, match="pruned must not repeat"):
        cm.lagrangian_update(weight, H, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="H must be D × D"):
        cm.refit_kept(weight, H[:5, :5], kept)
    with pytest.raises(ValueError, match="damping"):
        cm.refit_kept(weight, H, kept, damping=-1.0)
    allocation = allocate(
        score_model(smol_3to1, model_stats["3:1"], "magnitude"), layer_shapes(smol_3to1), AllocationConfig(0.2)
    )
    with pytest.raises(ValueError, match="compensation must be one of"):
        cm.compensate_model(smol_3to1, model_stats["3:1"], allocation, "obs")
