"""The numerical score of 2412.12441 examined (chapter 09): tensors in, tables (pandas) out.

Notation of ``shared/spec/numerical-pruning.md`` (§1-§3). A row-pruned projection (``o_proj`` or
``down_proj``) computes X·W with X ∈ ℝ^{N×D} its calibration input and W = ``weight``ᵀ ∈ ℝ^{D×D'};
the mask z ∈ ℝ^D keeps r = (1 − ρ)D channels, λ > 0, and

    f(z) = ½ Σ_i ‖X W_{:,i} − X (z ∘ W_{:,i})‖² + ½ λ (1ᵀz − r)²                (spec §2, eq. f)
         = ½ (z − 1)ᵀ A (z − 1) + ½ λ (1ᵀz − r)²,   A = (W Wᵀ) ∘ (XᵀX),
    ∇f(z) = A (z − 1) + λ (1ᵀz − r) 1,   ∇²f = A + λ 11ᵀ,
    z* = 1 − λρD · u / (1 + λ s),   u = A⁻¹1,  s = 1ᵀu                          (Sherman–Morrison).

Everything is float64. λ is *relative* (the library's ScoreOptions.lam: λ_abs = λ · mean(diag A)/D,
:func:`~attnprune.structured.scores.absolute_lambda`) unless a function says "absolute".

- :func:`relaxed_objective`, :func:`relaxed_objective_from_data`, :func:`relaxed_gradient`,
  :func:`relaxed_hessian`: f, its definition on X and W, ∇f and ∇²f;
- :class:`RelaxedSolution` (:func:`solve_relaxed`): u, s and diag A of one projection, from which
  z* follows for every λ and ρ without another solve;
- :func:`newton_check`: the paper's Algorithm 1 (1 and T Newton steps) against z*;
- :func:`mask_range`, :func:`ranking_is_that_of_u`: where z* lies, and that it ranks as −u;
- :func:`removed_fractions`, :func:`allocation_sweep`: what λ and the scale of X do to the global cut;
- :func:`wanda_agreement`: the A⁻¹1 ranking against its diagonal approximation (Wanda-sp);
- :func:`lemma1_table`, :func:`lemma1_worst_case_row`: the paper's Lemma 1 bound, measured;
- :func:`compensation_check`: the Lagrangian form (Theorem 3) against the least-squares refit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from ..core.checks import check_choice, check_positive, check_sparsity, check_tensor
from ..structured.allocation import AllocationConfig, allocate
from ..structured.compensation import head_columns, lagrangian_update, pruned_of, refit_kept
from ..structured.layers import LayerShape, llama_layers
from ..structured.scores import (
    LayerScores,
    ScoreOptions,
    absolute_lambda,
    closed_form_mask,
    head_scores,
    newton_mask,
    numerical_score,
    relaxed_matrix,
    wanda_sp_score,
)
from ..structured.stats import InputStats, LayerStats
from .timing import median_seconds

MASK_KINDS = ("numerical", "random", "strongest")
NORMS = ("spectral", "frobenius")


# --- the relaxed problem (spec §2) ------------------------------------------------------------


def relaxed_objective(z: Tensor, A: Tensor, lam: float, rho: float) -> float:
    """f(z) = ½ (z − 1)ᵀ A (z − 1) + ½ λ (1ᵀz − r)², r = (1 − ρ)D, λ absolute (spec §2, eq. f)."""
    d = z.to(torch.float64) - 1.0
    r = (1.0 - rho) * z.numel()
    return float(0.5 * d @ A @ d + 0.5 * lam * (z.sum() - r) ** 2)


def relaxed_objective_from_data(z: Tensor, X: Tensor, weight: Tensor, lam: float, rho: float) -> Tensor:
    """f(z) by its definition, ½ Σ_i ‖X W_{:,i} − X (z ∘ W_{:,i})‖² + ½ λ (1ᵀz − r)², with W =
    ``weight``ᵀ (D × D') and λ absolute; a 0-d tensor, differentiable in z."""
    W = weight.to(torch.float64).T  # (D, D')
    residual = X.to(torch.float64) @ (W - z[:, None] * W)  # (N, D'): column i is X W_{:,i} − X(z∘W_{:,i})
    r = (1.0 - rho) * z.numel()
    return 0.5 * (residual**2).sum() + 0.5 * lam * (z.sum() - r) ** 2


def relaxed_gradient(z: Tensor, A: Tensor, lam: float, rho: float) -> Tensor:
    """∇f(z) = A (z − 1) + λ (1ᵀz − r) 1 (spec §2), λ absolute."""
    r = (1.0 - rho) * z.numel()
    return A @ (z.to(torch.float64) - 1.0) + lam * (z.sum() - r)


def relaxed_hessian(A: Tensor, lam: float) -> Tensor:
    """∇²f = A + λ 11ᵀ (spec §2), λ absolute: constant, so f is an exact quadratic."""
    return A + lam * torch.ones_like(A)


# --- the closed form, once per projection ---------------------------------------------------------


@dataclass(frozen=True)
class RelaxedSolution:
    """u = A⁻¹1 and diag A (both (D,), float64) of one projection's relaxed problem (A damped):
    all that z* = 1 − λρD u/(1 + λs) needs, for every λ and ρ."""

    u: Tensor
    diag: Tensor

    @property
    def D(self) -> int:
        """The number of input channels."""
        return self.u.numel()

    @property
    def s(self) -> float:
        """s = 1ᵀA⁻¹1."""
        return float(self.u.sum())

    def absolute(self, lam: float) -> float:
        """λ_abs = λ · mean(diag A)/D of the relative ``lam`` (∞ stays ∞)."""
        return math.inf if lam == math.inf else lam * float(self.diag.mean()) / self.D

    def scale(self, lam_abs: float, rho: float) -> float:
        """λρD/(1 + λs), the layer's factor in z* = 1 − scale · u (ρD/s at λ = ∞)."""
        if lam_abs == math.inf:
            return rho * self.D / self.s
        return lam_abs * rho * self.D / (1.0 + lam_abs * self.s)

    def mask(self, lam_abs: float, rho: float) -> Tensor:
        """z* for the *absolute* λ ``lam_abs`` (Sherman–Morrison; the same as
        :func:`~attnprune.structured.scores.closed_form_mask`, without a solve)."""
        return 1.0 - self.scale(lam_abs, rho) * self.u


def solve_relaxed(weight: Tensor, H: Tensor, *, damping: float = 1e-6, x_scale: float = 1.0) -> RelaxedSolution:
    """The :class:`RelaxedSolution` of A = (WWᵀ) ∘ (XᵀX) + δI (δ = ``damping`` · mean diag), with X
    replaced by ``x_scale`` · X (so H = XᵀX by x_scale² · H): one float64 solve of A u = 1."""
    check_positive("x_scale", x_scale)
    A = relaxed_matrix(weight, H.to(torch.float64) * x_scale**2, damping)
    u = torch.linalg.solve(A, torch.ones(A.shape[0], dtype=torch.float64, device=A.device))
    return RelaxedSolution(u, A.diagonal().clone())


# --- one projection of a decoder layer ------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """A row-pruned projection of decoder layer ``layer``: ``module`` ("o_proj" or "down_proj"), its
    ``weight`` (D' × D, ``nn.Linear`` layout: W = weightᵀ), the statistics of its input X and
    ``head_dim`` k when its channels form heads (o_proj: head j owns channels j·k .. j·k + k − 1)."""

    layer: int
    module: str
    weight: Tensor
    stats: InputStats
    head_dim: int | None = None

    @property
    def units(self) -> int:
        """The units the allocation removes: heads (o_proj) or channels (down_proj)."""
        D = self.weight.shape[1]
        return D if self.head_dim is None else D // self.head_dim

    def unit_scores(self, channels: Tensor) -> Tensor:
        """Per-channel scores → per-unit scores (a head's: the mean of its k channels)."""
        return channels if self.head_dim is None else head_scores(channels, self.head_dim)

    def channels_of(self, units: Tensor) -> Tensor:
        """The input channels of the units ``units`` (the k columns of each head for o_proj)."""
        return units if self.head_dim is None else head_columns(units, self.head_dim)


@torch.no_grad()
def projections(model: nn.Module, stats: list[LayerStats], layers: list[int]) -> list[Projection]:
    """The o_proj and down_proj :class:`Projection` of each of ``layers`` (stats: every layer's, from
    :func:`~attnprune.structured.stats.capture_layer_stats`), in layer order, o_proj first."""
    decoder = llama_layers(model)
    out = []
    for index in layers:
        layer = decoder[index]
        attention, mlp = layer.self_attn, layer.mlp
        o_weight = attention.o_proj.weight.detach()
        out.append(Projection(index, "o_proj", o_weight, stats[index].attention, attention.head_dim))
        out.append(Projection(index, "down_proj", mlp.down_proj.weight.detach(), stats[index].mlp))
    return out


# --- Newton's method (Theorem 2) and where z* lies --------------------------------------------------


def newton_check(
    weight: Tensor, H: Tensor, *, lam: float, rho: float, steps: int, damping: float = 1e-6, seed: int = 0
) -> dict:
    """The paper's Algorithm 1 from a random z₀ (seeded normal), 1 step and ``steps`` steps, against
    the closed form z*, for the relative ``lam``: relative differences ‖a − b‖₂/‖z*‖₂, and
    ‖∇f(z*)‖₂/‖∇f(z₀)‖₂ (0 at the minimiser); and whether A *without* damping is positive definite
    (its Cholesky factorisation succeeds)."""
    A = relaxed_matrix(weight, H, damping)
    lam_abs = absolute_lambda(A, lam)
    z0 = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(A.device)
    closed = closed_form_mask(A, lam_abs, rho)
    one = newton_mask(A, lam_abs, rho, 1, z0)
    many = newton_mask(A, lam_abs, rho, steps, z0)
    size = closed.norm()
    gradient = relaxed_gradient(closed, A, lam_abs, rho).norm() / relaxed_gradient(z0, A, lam_abs, rho).norm()
    return {
        "D": A.shape[0],
        "steps": steps,
        "step 1 vs z*": float((one - closed).norm() / size),
        "step T vs z*": float((many - closed).norm() / size),
        "step T vs step 1": float((many - one).norm() / size),
        "gradient at z*": float(gradient),
        "A positive definite": bool(torch.linalg.cholesky_ex(relaxed_matrix(weight, H)).info == 0),
    }


def mask_range(solution: RelaxedSolution, lam: float, rho: float) -> dict:
    """Where z* lies for the relative ``lam``: λs, its smallest and largest entry, the share of entries
    outside [0, 1], and the constraint's residual (1ᵀz* − r)/(ρD) = 1/(1 + λs) (0 only at λ = ∞)."""
    lam_abs = solution.absolute(lam)
    z = solution.mask(lam_abs, rho)
    r = (1.0 - rho) * solution.D
    return {
        "lam": lam,
        "lam_s": lam_abs * solution.s,
        "z min": float(z.min()),
        "z max": float(z.max()),
        "outside [0, 1]": float(((z < 0) | (z > 1)).double().mean()),
        "negative entries of u": float((solution.u < 0).double().mean()),
        "constraint residual": float((z.sum() - r) / (rho * solution.D)),
    }


def same_ranking(z: Tensor, u: Tensor, *, tol: float = 1e-9) -> bool:
    """True when the scores z rank the channels as −u does (the weakest first): z is non-decreasing
    along the channels sorted by decreasing u, up to ``tol`` · max|z − 1| (rounding)."""
    order = torch.argsort(u, descending=True, stable=True)
    steps = z.to(torch.float64)[order].diff()
    return bool((steps >= -tol * float((z - 1.0).abs().max())).all())


def ranking_check(
    part: Projection, solution: RelaxedSolution, lams: list[float], rhos: list[float], *, damping: float = 1e-6
) -> dict:
    """The library's numerical score (:func:`~attnprune.structured.scores.numerical_score`, its own
    solve) at every relative λ in ``lams`` (∞ allowed) and ρ in ``rhos``: how many of these scores
    rank the channels as −u = −A⁻¹1 (:func:`same_ranking`)."""
    same = [
        same_ranking(
            numerical_score(part.weight, part.stats, ScoreOptions(ratio=rho, lam=lam, damping=damping)), solution.u
        )
        for lam in lams
        for rho in rhos
    ]
    return {"layer": part.layer, "module": part.module, "scores": len(same), "ranked as −A⁻¹1": sum(same)}


# --- the cross-layer allocation --------------------------------------------------------------------


def removed_fractions(
    parts: list[Projection],
    solutions: list[RelaxedSolution],
    shapes: list[LayerShape],
    *,
    lam: float,
    rho: float,
    relative: bool = True,
) -> pd.DataFrame:
    """The fraction of query heads and of MLP channels each layer loses when the units of all of
    ``parts`` (o_proj, down_proj pairs of consecutive layers; ``shapes``: their layers' shapes) are cut
    together at ρ (the global cut of :func:`~attnprune.structured.allocation.allocate`), scored by z*
    at λ = ``lam``: relative (per projection, the library's), or ``relative=False``: one absolute λ."""
    if len(parts) != 2 * len(shapes) or len(solutions) != len(parts):
        raise ValueError("parts and solutions must hold an (o_proj, down_proj) pair for each of shapes")
    masks = [
        part.unit_scores(solution.mask(solution.absolute(lam) if relative else lam, rho)).cpu()
        for part, solution in zip(parts, solutions, strict=True)
    ]
    scores = [LayerScores(masks[2 * i], masks[2 * i + 1]) for i in range(len(shapes))]
    allocation = allocate(scores, shapes, AllocationConfig(rho))
    return pd.DataFrame(
        {
            "layer": [p.layer for p in parts[::2]],
            "heads removed": [1 - len(h) / shape.heads for h, shape in zip(allocation.heads, shapes, strict=True)],
            "channels removed": [
                1 - len(c) / shape.channels for c, shape in zip(allocation.channels, shapes, strict=True)
            ],
            "ratio": allocation.ratio,
        }
    )


def allocation_sweep(
    parts: list[Projection],
    solutions: dict[float, list[RelaxedSolution]],
    shapes: list[LayerShape],
    settings: list[tuple[str, float, float]],
    *,
    rho: float,
    reference: float,
) -> pd.DataFrame:
    """:func:`removed_fractions` for each setting (kind, value, x_scale): kind "relative" (value = the
    relative λ) or "absolute" (λ = value · ``reference``), on the solutions of X scaled by x_scale
    (``solutions``: x_scale → one :class:`RelaxedSolution` per part). One row per setting and layer."""
    frames = []
    for kind, value, scale in settings:
        check_choice("kind", kind, ("relative", "absolute"))
        lam = value if kind == "relative" else value * reference
        table = removed_fractions(parts, solutions[scale], shapes, lam=lam, rho=rho, relative=kind == "relative")
        frames.append(table.assign(kind=kind, value=value, x_scale=scale))
    return pd.concat(frames, ignore_index=True)


def typical_lambda(solutions: list[RelaxedSolution], lam: float) -> float:
    """The absolute λ that the relative ``lam`` gives on the median projection of ``solutions``."""
    return float(torch.tensor([s.absolute(lam) for s in solutions]).median())


# --- A⁻¹1 against its diagonal (Wanda-sp) ----------------------------------------------------------


def rank_correlation(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two score vectors (average ranks for ties)."""
    ranks = [pd.Series(x.double().cpu().numpy()).rank() for x in (a, b)]
    return float(ranks[0].corr(ranks[1]))


def weakest(scores: Tensor, count: int) -> Tensor:
    """The indices of the ``count`` lowest scores (ties: the first), sorted."""
    return scores.sort(stable=True).indices[:count].sort().values


def wanda_agreement(part: Projection, solution: RelaxedSolution, rho: float) -> dict:
    """The numerical ranking (−A⁻¹1, the same for every λ and ρ) against Wanda-sp, ‖W_{j,:}‖·‖X_{:,j}‖
    = √(diag A) without damping, per unit (heads: mean of their channels): Spearman's correlation and
    the overlap |P ∩ P'|/|P| of the round(ρ·units) units each prunes (chance: |P|/units)."""
    numerical = part.unit_scores(-solution.u)
    wanda = part.unit_scores(wanda_sp_score(part.weight, part.stats, ScoreOptions()))
    count = round(rho * part.units)
    shared = len(set(weakest(numerical, count).tolist()) & set(weakest(wanda, count).tolist()))
    return {
        "layer": part.layer,
        "module": part.module,
        "units": part.units,
        "pruned": count,
        "rank correlation": rank_correlation(numerical, wanda),
        "overlap": shared / count if count else math.nan,
        "chance overlap": count / part.units,
    }


# --- Lemma 1 -----------------------------------------------------------------------------------------


def operator_norm(H: Tensor, norm: str = "spectral") -> float:
    """R from H = XᵀX: ‖X‖₂ = √λ_max(H) ("spectral", the smallest R with ‖Xv‖ ≤ R‖v‖ for all v), or
    ‖X‖_F = √tr H ("frobenius", a larger R)."""
    check_choice("norm", norm, NORMS)
    H = H.to(torch.float64)
    value = torch.linalg.eigvalsh(H)[-1] if norm == "spectral" else H.diagonal().sum()
    return float(value.clamp_min(0.0).sqrt())


def column_errors(weight: Tensor, H: Tensor, pruned: Tensor) -> Tensor:
    """e_i = ‖X W_{:,i} − X (M ∘ W_{:,i})‖₂ = ‖X_P W_{P,i}‖₂ for every output i, (D',), from H = XᵀX:
    e_i² = W_{P,i}ᵀ H_PP W_{P,i} (M = the binary mask with zeros on ``pruned``)."""
    W_P = weight.to(torch.float64)[:, pruned]  # (D', |P|): row i is W_{P,i}ᵀ
    H_PP = H.to(torch.float64)[pruned][:, pruned]
    return ((W_P @ H_PP) * W_P).sum(dim=1).clamp_min(0.0).sqrt()


def lemma1_ratios(weight: Tensor, H: Tensor, pruned: Tensor, *, R: float) -> pd.DataFrame:
    """Per output column i, e_i (:func:`column_errors`) over three bounds, with R ≥ ‖X‖₂ (from
    :func:`operator_norm`) and ρ = |P|/D the realised fraction of channels removed:

    - ``paper``: ρ R ‖W_{:,i}‖₂, the paper's Lemma 1 (its proof takes ‖1 − M‖₂ ≤ ρ);
    - ``corrected``: √(ρD) R ‖W_{:,i}‖₂, the same proof with ‖1 − M‖₂ = √|P| = √(ρD);
    - ``tight``: R ‖W_{:,i}‖₂, the proof with ‖(1 − M) ∘ w‖₂ ≤ ‖1 − M‖_∞ ‖w‖₂ = ‖w‖₂."""
    weight = check_tensor("weight", weight).to(torch.float64)
    D = weight.shape[1]
    errors = column_errors(weight, H, pruned)
    norms = weight.norm(dim=1)  # ‖W_{:,i}‖₂ for every output i
    rho = pruned.numel() / D
    tight = errors / (R * norms)
    return pd.DataFrame(
        {
            "error": errors.cpu().numpy(),
            "paper": (tight / rho).cpu().numpy(),
            "corrected": (tight / math.sqrt(pruned.numel())).cpu().numpy(),
            "tight": tight.cpu().numpy(),
        }
    )


def pruned_channels(part: Projection, solution: RelaxedSolution, rho: float, kind: str, *, seed: int = 0) -> Tensor:
    """The input channels a mask of ``kind`` removes from ``part``: round(ρ·units) whole units (heads
    or channels), the weakest by the numerical score ("numerical"), a seeded random draw ("random"),
    or the strongest ("strongest", the worst a score could do)."""
    check_choice("kind", kind, MASK_KINDS)
    count = round(rho * part.units)
    scores = part.unit_scores(-solution.u)
    if kind == "random":
        units = torch.randperm(part.units, generator=torch.Generator().manual_seed(seed))[:count].sort().values
    else:
        units = weakest(scores if kind == "numerical" else -scores, count)
    return part.channels_of(units)


def lemma1_table(
    parts: list[Projection],
    solutions: list[RelaxedSolution],
    rho: float,
    *,
    norms: tuple[str, ...] = NORMS,
    kinds: tuple[str, ...] = MASK_KINDS,
    seed: int = 0,
) -> pd.DataFrame:
    """Lemma 1 on real layers: for every projection, mask kind (:func:`pruned_channels`) and norm of R
    (:func:`operator_norm`), the largest ratio error/bound over the output columns for each bound of
    :func:`lemma1_ratios`, and the share of columns whose error exceeds the paper's bound."""
    rows = []
    for part, solution in zip(parts, solutions, strict=True):
        radii = {norm: operator_norm(part.stats.H, norm) for norm in norms}
        for kind in kinds:
            pruned = pruned_channels(part, solution, rho, kind, seed=seed + part.layer)
            for norm, R in radii.items():
                ratios = lemma1_ratios(part.weight, part.stats.H, pruned, R=R)
                rows.append(
                    {
                        "layer": part.layer,
                        "module": part.module,
                        "mask": kind,
                        "norm": norm,
                        "D": part.weight.shape[1],
                        "pruned": pruned.numel(),
                        **ratios[["paper", "corrected", "tight"]].max().to_dict(),
                        "above paper's bound": float((ratios["paper"] > 1).mean()),
                    }
                )
    return pd.DataFrame(rows)


WORST_CASES = ("identity", "rank-one")


def lemma1_worst_case(
    D: int, rho: float, *, kind: str = "identity", R: float = 1.0, small: float = 0.1
) -> tuple[Tensor, Tensor, Tensor]:
    """A layer on which a mask with ρD zeros meets the paper's bound with ratio 1/ρ. Returns
    (weight (2 × D), H = XᵀX, pruned = the first ρD channels); output 0 reads only the pruned
    channels, output 1 only the others, with weights 1.

    - ``"identity"``: X = R·I (N = D, ‖X‖₂ = R) and output 0's weights ``small``: A = R² diag(‖W_{j,:}‖²),
      so the numerical score itself prunes the first ρD channels, and e_0 = R‖W_{:,0}‖₂;
    - ``"rank-one"``: X = R·e₁vᵀ with v = 1_P/√|P| (‖X‖₂ = ‖X‖_F = R) and output 0 = v: e_0 = R‖W_{:,0}‖₂
      whichever of the two norms R stands for (the mask is given, not chosen by the score)."""
    check_sparsity("rho", rho)
    check_choice("kind", kind, WORST_CASES)
    count = round(rho * D)
    if not 0 < count < D:
        raise ValueError(f"rho · D must round to between 1 and D − 1 channels, got {count} of {D}")
    weight = torch.zeros(2, D, dtype=torch.float64)
    weight[1, count:] = 1.0
    if kind == "identity":
        weight[0, :count] = small
        return weight, R**2 * torch.eye(D, dtype=torch.float64), torch.arange(count)
    v = torch.zeros(D, dtype=torch.float64)
    v[:count] = count**-0.5
    weight[0] = v
    return weight, R**2 * torch.outer(v, v), torch.arange(count)


def lemma1_worst_case_row(D: int, rho: float, *, kind: str = "identity", damping: float = 1e-6) -> dict:
    """Lemma 1 on :func:`lemma1_worst_case`: whether the numerical score's own mask prunes its channels,
    the largest ratio to each bound of :func:`lemma1_ratios` with R = ‖X‖₂ (and to the paper's with
    R = ‖X‖_F), and the share of columns above the paper's bound (R = ‖X‖₂)."""
    weight, H, pruned = lemma1_worst_case(D, rho, kind=kind)
    ratios = lemma1_ratios(weight, H, pruned, R=operator_norm(H))
    frobenius = lemma1_ratios(weight, H, pruned, R=operator_norm(H, "frobenius"))
    part = Projection(-1, "synthetic", weight, InputStats(H, torch.zeros(D, dtype=torch.float64), D))
    chosen = pruned_channels(part, solve_relaxed(weight, H, damping=damping), rho, "numerical")
    return {
        "case": kind,
        "D": D,
        "pruned": pruned.numel(),
        "method's own mask": bool(torch.equal(chosen, pruned)),
        **ratios[["paper", "corrected", "tight"]].max().to_dict(),
        "paper, R = ‖X‖_F": float(frobenius["paper"].max()),
        "above paper's bound": float((ratios["paper"] > 1).mean()),
    }


# --- compensation (Theorem 3) ------------------------------------------------------------------------


def compensation_check(weight: Tensor, H: Tensor, kept: Tensor, *, damping: float = 0.01, repeats: int = 3) -> dict:
    """The paper's Lagrangian form W + δW* (:func:`~attnprune.structured.compensation.lagrangian_update`)
    against the least-squares refit W'_S (:func:`~attnprune.structured.compensation.refit_kept`), both
    in float64 with H + γI: ‖(W + δW*)_S − W'_S‖_F/‖W'_S‖_F, ‖(W + δW*)_P‖_F/‖W‖_F, and the median
    seconds of each over ``repeats`` calls (after one warm-up)."""
    weight = check_tensor("weight", weight).to(torch.float64)
    pruned = pruned_of(kept, weight.shape[1])
    refit = refit_kept(weight, H, kept, damping=damping)
    updated = weight + lagrangian_update(weight, H, pruned, damping=damping)
    return {
        "D": weight.shape[1],
        "kept": kept.numel(),
        "difference on S": float((updated[:, kept] - refit).norm() / refit.norm()),
        "left on P": float(updated[:, pruned].norm() / weight.norm()),
        "refit seconds": median_seconds(lambda: _synced(refit_kept(weight, H, kept, damping=damping)), repeats),
        "Lagrangian seconds": median_seconds(
            lambda: _synced(lagrangian_update(weight, H, pruned, damping=damping)), repeats
        ),
    }


def _synced(result: Tensor) -> Tensor:
    """``result``, once the device has finished computing it (a GPU runs asynchronously)."""
    if result.is_cuda:
        torch.cuda.synchronize(result.device)
    return result
