"""Which heads and channels each layer keeps: a global or a uniform cut (spec §2 [choice]s).

The scores are cut in *units*, each with a score and the real number of parameters its removal
frees. An MLP unit is one channel (a row of gate_proj and up_proj, a column of down_proj). An
attention unit follows the grouped-query rule (``gqa``), written out in :func:`attention_units`:

- ``"query"`` (default): query heads go one per KV group at a time, so every KV group keeps the
  same number of query heads (what HF ``LlamaAttention`` can run) and the KV heads stay. Unit r
  of a layer is the r-th weakest query head of every group; its score is their mean and it frees
  g·(q rows + o columns). Scores sorted within each group make the units' scores non-decreasing
  in r, so a cut in score order removes them in order.
- ``"group"``: a whole KV group goes at once: its h/g query heads and its KV head (k and v rows);
  score = the mean of its heads' scores.
- Multi-head attention (h = g, the paper's case): each group is one head, so both rules remove
  single heads with their own k/v rows (the ``"query"`` rule would otherwise tie all heads).

``"global"``: the units of every layer are sorted together by score and removed from the weakest
until the removed parameters come closest to ρ times all attention+MLP linear parameters (FLAP's
cut with real parameter counts instead of the paper's weight α = 4k/3, which is for MHA). The
``min_heads`` and ``min_channels`` strongest of each layer are never removed. ``"uniform"``: each
layer removes round(ρ·units) of its attention units and round(ρ·m) channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.checks import check_choice, check_positive_int, check_sparsity
from .layers import LayerShape
from .scores import LayerScores, check_score

ALLOCATIONS = ("global", "uniform")
GQA_RULES = ("query", "group")


@dataclass(frozen=True)
class AllocationConfig:
    """How much to remove and how (validated once): the fraction ``ratio`` ∈ [0, 1) of
    attention+MLP linear parameters, the ``score`` (a name of ``scores.SCORES``), ``allocation``
    ("global" or "uniform"), the ``gqa`` rule ("query" or "group"), and the least number of query
    heads and MLP channels each layer keeps (``min_heads``, ``min_channels`` **[choice]**: 1)."""

    ratio: float
    score: str = "numerical"
    allocation: str = "global"
    gqa: str = "query"
    min_heads: int = 1
    min_channels: int = 1

    def __post_init__(self) -> None:
        check_sparsity("ratio", self.ratio)
        check_score(self.score)
        check_choice("allocation", self.allocation, ALLOCATIONS)
        check_choice("gqa", self.gqa, GQA_RULES)
        check_positive_int("min_heads", self.min_heads)
        check_positive_int("min_channels", self.min_channels)


@dataclass(frozen=True)
class Units:
    """The removable units of one layer's attention: ``scores`` (U,), ``params`` freed by each (U,),
    and ``heads`` (U, heads per unit), the query heads of each unit."""

    scores: Tensor
    params: Tensor
    heads: Tensor


@dataclass(frozen=True)
class Allocation:
    """What each layer keeps: ``heads[ℓ]`` (sorted query-head indices) and ``channels[ℓ]`` (sorted
    MLP channel indices); ``removed_params`` of the ``total_params`` attention+MLP parameters."""

    heads: list[Tensor]
    channels: list[Tensor]
    removed_params: int
    total_params: int

    @property
    def ratio(self) -> float:
        """The realised fraction of attention+MLP linear parameters removed (FLAP's convention)."""
        return self.removed_params / self.total_params


def attention_units(head_scores: Tensor, shape: LayerShape, gqa: str) -> Units:
    """The attention units of one layer under the grouped-query rule ``gqa`` (module docstring)."""
    g, n = shape.kv_heads, shape.group_size
    grouped = head_scores.to(torch.float64).reshape(g, n)  # (g, n): row i = the query heads of KV head i
    first = torch.arange(g, device=grouped.device)[:, None] * n  # (g, 1): first query head of each group
    if gqa == "query" and n > 1:
        ordered, order = grouped.sort(dim=1, stable=True)  # weakest first within each group
        heads = (order + first).T  # (n, g): unit r = the r-th weakest head of every group
        params = torch.full((n,), g * shape.head_params, dtype=torch.long)
        return Units(ordered.mean(dim=0), params, heads)
    heads = first + torch.arange(n, device=grouped.device)  # (g, n): unit i = KV group i
    params = torch.full((g,), n * shape.head_params + shape.kv_params, dtype=torch.long)
    return Units(grouped.mean(dim=1), params, heads)


def kept_kv_heads(heads: Tensor, group_size: int) -> Tensor:
    """The KV heads still read by the kept query heads ``heads``: a KV head is removed only when all
    its query heads j (j // group_size = its index) are."""
    return torch.unique(heads // group_size)


def allocate(scores: list[LayerScores], shapes: list[LayerShape], config: AllocationConfig) -> Allocation:
    """The heads and channels each layer keeps under ``config`` (module docstring)."""
    if len(scores) != len(shapes):
        raise ValueError(f"scores has {len(scores)} layers but shapes has {len(shapes)}")
    units = [attention_units(s.heads, shape, config.gqa) for s, shape in zip(scores, shapes, strict=True)]
    floors = [_floors(shape, u, config, i) for i, (shape, u) in enumerate(zip(shapes, units, strict=True))]
    if config.allocation == "uniform":
        drop = _uniform_cut(units, scores, floors, config)
    else:
        drop = _global_cut(units, scores, shapes, floors, config.ratio)
    return _kept(units, scores, shapes, drop)


def _floors(shape: LayerShape, units: Units, config: AllocationConfig, layer: int) -> tuple[int, int]:
    """The least number of attention units and MLP channels layer ``layer`` keeps."""
    if config.min_heads > shape.heads:
        raise ValueError(f"min_heads ({config.min_heads}) is more than layer {layer}'s {shape.heads} query heads")
    if config.min_channels > shape.channels:
        raise ValueError(f"min_channels ({config.min_channels}) is more than layer {layer}'s {shape.channels} channels")
    return math.ceil(config.min_heads / units.heads.shape[1]), config.min_channels


def _uniform_cut(units: list[Units], scores: list[LayerScores], floors, config: AllocationConfig):
    """Each layer removes its round(ρ·U) weakest attention units and round(ρ·m) weakest channels."""
    drop = []
    for layer, (u, s, layer_floors) in enumerate(zip(units, scores, floors, strict=True)):
        totals = (u.scores.numel(), s.channels.numel())
        counts = tuple(round(config.ratio * total) for total in totals)
        for what, total, count, floor in zip(("attention units", "MLP channels"), totals, counts, layer_floors,
                                             strict=True):  # fmt: skip
            if total - count < floor:
                raise ValueError(
                    f"ratio {config.ratio} would leave {total - count} of the {total} {what} of layer {layer} "
                    f"(at least {floor} must stay: min_heads/min_channels); use a smaller ratio or allocation='global'"
                )
        drop.append((_weakest(u.scores, counts[0]), _weakest(s.channels, counts[1])))
    return drop


def _weakest(scores: Tensor, count: int) -> Tensor:
    """The indices of the ``count`` lowest ``scores`` (ties: the first)."""
    return scores.sort(stable=True).indices[:count]


def _global_cut(units, scores, shapes, floors, ratio: float) -> list[tuple[Tensor, Tensor]]:
    """FLAP's global cut: sort every removable unit of every layer by score, remove from the weakest
    until the removed parameters are closest to ρ · (all attention+MLP linear parameters)."""
    entries = []  # (score, params, layer, kind 0 = attention / 1 = MLP, index), floors excluded
    for layer, (u, s, shape, (keep_units, keep_channels)) in enumerate(zip(units, scores, shapes, floors, strict=True)):
        for kind, values, params, keep in (
            (0, u.scores, u.params, keep_units),
            (1, s.channels.to(torch.float64), None, keep_channels),
        ):
            order = values.sort(stable=True).indices[: values.numel() - keep]  # the strongest `keep` stay
            weights = params[order] if params is not None else torch.full_like(order, shape.channel_params)
            entries.append((values[order], weights, torch.full_like(order, layer), torch.full_like(order, kind), order))
    value, weight, layer_of, kind_of, index = (torch.cat(column) for column in zip(*entries, strict=True))
    order = value.sort(stable=True).indices
    removed = torch.cat([torch.zeros(1, dtype=torch.long), weight[order].cumsum(0)])  # after 0, 1, 2, ... units
    target = ratio * sum(shape.total_params for shape in shapes)
    if removed[-1] < target:
        raise ValueError(
            f"ratio {ratio} cannot be reached: keeping min_heads/min_channels in every layer leaves only "
            f"{int(removed[-1])} of the {target:.0f} parameters to remove; use a smaller ratio"
        )
    count = int((removed.to(torch.float64) - target).abs().argmin())
    chosen = order[:count]
    return [
        tuple(index[chosen][(layer_of[chosen] == layer) & (kind_of[chosen] == kind)] for kind in (0, 1))
        for layer in range(len(shapes))
    ]


def _kept(units: list[Units], scores: list[LayerScores], shapes: list[LayerShape], drop) -> Allocation:
    """The kept heads and channels of each layer once the units ``drop`` = [(units, channels)] go."""
    heads, channels, removed = [], [], 0
    for u, s, shape, (gone_units, gone_channels) in zip(units, scores, shapes, drop, strict=True):
        keep_units = torch.ones(u.scores.numel(), dtype=torch.bool)
        keep_units[gone_units] = False
        keep_channels = torch.ones(s.channels.numel(), dtype=torch.bool)
        keep_channels[gone_channels] = False
        kept = u.heads[keep_units].reshape(-1).sort().values
        heads.append(kept)
        channels.append(torch.nonzero(keep_channels).reshape(-1))
        removed += int(u.params[~keep_units].sum()) + int((~keep_channels).sum()) * shape.channel_params
    return Allocation(heads, channels, removed, sum(shape.total_params for shape in shapes))
