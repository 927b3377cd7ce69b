"""OWL's non-uniform sparsity across layers (Yin et al., ICML 2024; chapter 11).

For layer ℓ, the Wanda metric of every weight of the linear layers pruned, |W_ij|·‖X_{:,j}‖₂ on
the dense model's calibration inputs, gives the layer's **outlier ratio** D_ℓ: the fraction of its
entries above M times their mean. A layer with more outliers is pruned less: with the layers'
ratios scaled to [0, 2λ] and centred,

    density_ℓ = (D_ℓ − min D)/(max D − min D) · 2λ − mean(…) + (1 − ρ),   ρ_ℓ = 1 − density_ℓ,

so the ρ_ℓ average to ρ and span at most 2λ. M = 5 and λ = 0.08 are OWL's published defaults
(its code's ``Hyper_m`` and ``Lamda``). **[choice]** The outlier ratio is taken over the linear
layers that are pruned (q_proj and k_proj for the q/k scope), not always over all seven, so the
allocation follows the weights it allocates.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.checks import check_positive, check_sparsity
from .batches import check_input_ids
from .capture import layer_inputs, run_layer
from .objectives import LayerWindow

OUTLIER_M = 5.0
"""M: an entry is an outlier above M times the mean metric of its layer (OWL's default)."""
OWL_LAMBDA = 0.08
"""λ: the layers' sparsities span at most 2λ around ρ (OWL's default)."""


def outlier_ratio(metrics: list[Tensor], m: float = OUTLIER_M) -> float:
    """D: the fraction of the entries of ``metrics`` (all of one layer) above m × their mean."""
    flat = torch.cat([metric.flatten().double() for metric in metrics])
    return float((flat > m * flat.mean()).double().mean())


def owl_sparsities(ratios: list[float], sparsity: float, lam: float = OWL_LAMBDA) -> list[float]:
    """ρ_ℓ of every layer from the outlier ratios D_ℓ (module docstring): mean ρ, span ≤ 2λ."""
    rho = check_sparsity("sparsity", sparsity)
    check_positive("lam", lam)
    D = torch.tensor(ratios, dtype=torch.float64)
    spread = D.max() - D.min()
    scaled = (D - D.min()) / spread * 2 * lam if spread > 0 else torch.zeros_like(D)
    density = scaled - scaled.mean() + (1 - rho)
    layer_sparsity = (1 - density).clamp(0.0, 1.0 - 1e-6)
    return layer_sparsity.tolist()


@torch.no_grad()
def layer_outlier_ratios(
    model: nn.Module,
    calib_ids: Tensor,
    names: tuple[str, ...],
    layers: list[int],
    *,
    m: float = OUTLIER_M,
    batch_size: int = 8,
) -> dict[int, float]:
    """D_ℓ of each layer of ``layers``: the outlier ratio of the Wanda metrics of its linear layers
    ``names`` on the dense model's inputs (one dense pass, layer by layer, up to the last of them)."""
    hidden, kwargs = layer_inputs(model, check_input_ids(calib_ids, model), batch_size=batch_size)
    ratios = {}
    for index in range(max(layers) + 1):
        if index in layers:
            window = LayerWindow.of(model, index, hidden, kwargs)
            inputs = window.linear_inputs({}, names)
            # |W_ij|·‖X_{:,j}‖₂ of each weight (out × in), its input flattened to (tokens, in)
            norms = {n: inputs[n].flatten(0, -2).double().norm(dim=0) for n in names}
            ratios[index] = outlier_ratio([window.dense(n).abs().double() * norms[n] for n in names], m)
        if index < max(layers):
            hidden = run_layer(model, index, hidden, kwargs, batch_size=batch_size)
    return ratios
