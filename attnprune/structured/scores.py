"""Scores of every attention head and MLP channel (spec §2 and §4): ONE registry, name → function.

Notation of the spec (§1): a row-pruned layer computes X·W with X ∈ ℝ^{N×D} (the N calibration
tokens of the input of ``o_proj`` or ``down_proj``) and W ∈ ℝ^{D×D'}, so W = ``weight``ᵀ for an
``nn.Linear`` ``weight`` (D' × D). Input channel j of the paper is *column* j of ``weight``.

Every score function has the signature ``(weight, stats, options) -> (D,)``: one float64 score
per input channel, **higher = more important (kept first)**. A head's score is the mean of its k
channel scores (o_proj's input is head-major: column j·k + t is dimension t of query head j); an
MLP channel's score is used as it is.

Grouped-query attention (the paper assumes multi-head attention). Scores are per *query head*:
o_proj's columns belong to one query head each, so every query head has its own score. Which heads
may go *together* is decided by the allocation (:mod:`~attnprune.structured.allocation`), because
HF's ``LlamaAttention`` repeats each KV head for the same number h/g of consecutive query heads:

- a KV head (its rows of k_proj and v_proj) is removed only when every query head that reads it
  (query heads j with j // (h/g) = its index) is removed;
- the kept KV heads of a layer must all keep the same number of query heads.

The allocation's rules ``"query"`` (remove query heads one per KV group at a time, KV heads stay)
and ``"group"`` (remove whole KV groups) both respect that; see :func:`allocation.attention_units`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ..core.checks import check_nonnegative, check_positive, check_positive_int, check_sparsity, check_tensor
from .layers import llama_layers
from .stats import InputStats, LayerStats


@dataclass(frozen=True)
class ScoreOptions:
    """The settings of the scores (validated once).

    - ``ratio``: ρ of the relaxed problem; it only scales the numerical score (the ranking within a
      layer does not depend on it).
    - ``lam``: λ, **relative** **[choice]**: the penalty used is λ_abs = lam · mean(diag A) / D, so the
      score does not depend on the scale of X; ``math.inf`` enforces 1ᵀz = r exactly (closed form only).
    - ``damping``: δ = damping · mean(diag A) is added to A's diagonal before any solve **[choice]**.
    - ``newton_steps``: T, the number of Newton steps of the ``"newton"`` score (the paper's T ≈ 50).
    - ``seed``: of the ``"random"`` score.
    """

    ratio: float = 0.5
    lam: float = 100.0
    damping: float = 1e-6
    newton_steps: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        check_sparsity("ratio", self.ratio)
        if self.lam != math.inf:
            check_positive("lam", self.lam)
        check_nonnegative("damping", self.damping)
        check_positive_int("newton_steps", self.newton_steps)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


# --- the numerical score (spec §2) ------------------------------------------------------------


def relaxed_matrix(weight: Tensor, H: Tensor, damping: float = 0.0) -> Tensor:
    """A = (W Wᵀ) ∘ (XᵀX) (D × D, float64) of the relaxed quadratic f(z), with W = ``weight``ᵀ and
    H = XᵀX; ``damping`` · mean(diag A) is added to its diagonal (the spec's δ)."""
    W = weight.to(torch.float64).T  # (D, D') in the paper's layout
    A = (W @ W.T) * H.to(torch.float64)
    return A + damping * A.diagonal().mean() * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)


def absolute_lambda(A: Tensor, lam: float) -> float:
    """λ_abs = lam · mean(diag A) / D: the relative ``lam`` of :class:`ScoreOptions` on A's scale."""
    return lam * float(A.diagonal().mean()) / A.shape[0]


def newton_mask(A: Tensor, lam: float, ratio: float, steps: int, z0: Tensor | None = None) -> Tensor:
    """The paper's Algorithm 1: T = ``steps`` Newton steps z ← z − (∇²f)⁻¹ ∇f(z) on

    f(z) = ½ (z − 1)ᵀ A (z − 1) + ½ λ (1ᵀz − r)²,  ∇f = A(z − 1) + λ(1ᵀz − r)1,  ∇²f = A + λ11ᵀ,

    with r = (1 − ρ)D and the absolute λ = ``lam``, from z₀ (ones if None), no clipping. float64.
    The Hessian is constant, so it is factorised once."""
    D = A.shape[0]
    ones = torch.ones(D, dtype=torch.float64, device=A.device)
    z = ones.clone() if z0 is None else z0.to(torch.float64).clone()
    r = (1.0 - ratio) * D
    hessian = torch.linalg.lu_factor(A + lam * torch.outer(ones, ones))
    for _ in range(steps):
        gradient = A @ (z - 1.0) + lam * (z.sum() - r) * ones
        z = z - torch.linalg.lu_solve(*hessian, gradient[:, None])[:, 0]
    return z


def closed_form_mask(A: Tensor, lam: float, ratio: float) -> Tensor:
    """The minimiser of f (Sherman–Morrison): z* = 1 − λρD·u / (1 + λs), u = A⁻¹1, s = 1ᵀu.

    ``lam`` is the absolute λ; ``math.inf`` gives the limit z* = 1 − ρD·u/s (then 1ᵀz* = r exactly).
    One float64 solve of A u = 1 (A already damped), never an inverse of A + λ11ᵀ."""
    D = A.shape[0]
    u = torch.linalg.solve(A, torch.ones(D, dtype=torch.float64, device=A.device))
    s = u.sum()
    scale = ratio * D / s if lam == math.inf else lam * ratio * D / (1.0 + lam * s)
    return 1.0 - scale * u


def numerical_score(weight: Tensor, stats: InputStats, options: ScoreOptions) -> Tensor:
    """The numerical score of each channel: z* of :func:`closed_form_mask` on A = (WWᵀ) ∘ (XᵀX)
    (damped), with the relative λ. Its ranking within a layer is that of −A⁻¹1."""
    A = relaxed_matrix(weight, stats.H, options.damping)
    return closed_form_mask(A, _lambda(A, options.lam), options.ratio)


def newton_score(weight: Tensor, stats: InputStats, options: ScoreOptions) -> Tensor:
    """The numerical score by the paper's iteration: T = ``options.newton_steps`` steps of
    :func:`newton_mask` (equal to :func:`numerical_score`: f is quadratic, step 1 lands on z*)."""
    if options.lam == math.inf:
        raise ValueError("lam must be finite for the 'newton' score (the Hessian A + λ11ᵀ); use 'numerical'")
    A = relaxed_matrix(weight, stats.H, options.damping)
    return newton_mask(A, _lambda(A, options.lam), options.ratio, options.newton_steps)


def _lambda(A: Tensor, lam: float) -> float:
    return math.inf if lam == math.inf else absolute_lambda(A, lam)


# --- the baselines (spec §4) --------------------------------------------------------------------


def flap_score(weight: Tensor, stats: InputStats, options: ScoreOptions) -> Tensor:
    """FLAP's fluctuation score, standardised over the layer's channels:
    Var_tokens(X_{:,j}) · ‖W_{j,:}‖² (‖weight[:, j]‖² in nn.Linear layout), then (s − mean)/std."""
    score = stats.variance * _column_norms(weight) ** 2
    return (score - score.mean()) / score.std().clamp_min(torch.finfo(torch.float64).tiny)


def wanda_sp_score(weight: Tensor, stats: InputStats, options: ScoreOptions) -> Tensor:
    """Wanda-sp: ‖W_{j,:}‖₂ · ‖X_{:,j}‖₂ (the square root of diag A: A's diagonal approximation)."""
    return _column_norms(weight) * stats.squared_norms.clamp_min(0.0).sqrt()


def magnitude_score(weight: Tensor, stats: InputStats, options: ScoreOptions) -> Tensor:
    """Weight magnitude: ‖W_{j,:}‖₂, the L2 norm of the channel's weights in o_proj/down_proj."""
    return _column_norms(weight)


def random_score(weight: Tensor, stats: InputStats, options: ScoreOptions) -> Tensor:
    """Uniform random scores, seeded by ``options.seed`` (a floor)."""
    generator = torch.Generator().manual_seed(options.seed)
    return torch.rand(weight.shape[1], generator=generator, dtype=torch.float64).to(weight.device)


def _column_norms(weight: Tensor) -> Tensor:
    return weight.to(torch.float64).norm(dim=0)  # (D,): one per input channel


ScoreFunction = Callable[[Tensor, InputStats, ScoreOptions], Tensor]
SCORES: dict[str, ScoreFunction] = {
    "numerical": numerical_score,
    "newton": newton_score,
    "flap": flap_score,
    "wanda-sp": wanda_sp_score,
    "magnitude": magnitude_score,
    "random": random_score,
}
"""The registry: score name → function (weight, stats, options) → (D,) channel scores, higher = kept."""


def check_score(name: str) -> ScoreFunction:
    """The score function called ``name``; a ValueError naming ``score`` if there is none."""
    if not isinstance(name, str) or name not in SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, SCORES))}; got {name!r}")
    return SCORES[name]


# --- per layer and per model ----------------------------------------------------------------------


@dataclass(frozen=True)
class LayerScores:
    """The scores of one layer: ``heads`` (h,) per query head and ``channels`` (m,) per MLP channel."""

    heads: Tensor
    channels: Tensor


def channel_scores(name: str, weight: Tensor, stats: InputStats, options: ScoreOptions) -> Tensor:
    """The (D,) scores of the input channels of ``weight`` (out × D) by the score ``name``."""
    function = check_score(name)
    weight = check_tensor("weight", weight)
    if stats.width != weight.shape[1]:
        raise ValueError(f"stats describe {stats.width} input channels but weight has {weight.shape[1]} columns")
    return function(weight, stats, options)


def head_scores(channels: Tensor, head_dim: int) -> Tensor:
    """A head's score: the mean of its k channel scores; (h·k,) → (h,)."""
    return channels.reshape(-1, head_dim).mean(dim=1)  # (h, k) → (h,)


@torch.no_grad()
def score_model(
    model: nn.Module, stats: list[LayerStats], name: str, options: ScoreOptions | None = None
) -> list[LayerScores]:
    """The head and channel scores of every layer of ``model`` by the score ``name``, from the
    statistics ``stats`` of :func:`~attnprune.structured.stats.capture_layer_stats`."""
    options = options or ScoreOptions()
    check_score(name)
    layers = llama_layers(model)
    if len(stats) != len(layers):
        raise ValueError(f"stats must hold one LayerStats per decoder layer ({len(layers)}), got {len(stats)}")
    scores = []
    for index, (layer, layer_stats) in enumerate(zip(layers, stats, strict=True)):
        seeded = [replace(options, seed=_module_seed(options.seed, index, part)) for part in (0, 1)]
        attention = channel_scores(name, layer.self_attn.o_proj.weight, layer_stats.attention, seeded[0])
        mlp = channel_scores(name, layer.mlp.down_proj.weight, layer_stats.mlp, seeded[1])
        scores.append(LayerScores(head_scores(attention, layer.self_attn.head_dim), mlp))
    return scores


def _module_seed(seed: int, layer: int, part: int) -> int:
    """A distinct, reproducible seed for each (layer, attention or MLP) of one run."""
    return (seed * 1_000_003 + 2 * layer + part) % 2**63
