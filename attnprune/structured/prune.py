"""A whole structured pruning from one typed configuration, and the loading of what it writes.

:func:`prune_structured` composes the five steps of the package in the order of the spec:

    capture_layer_stats → score_model → allocate → compensate_model → slice_model

and returns the physically smaller :class:`~attnprune.structured.slicing.SlicedLlamaForCausalLM`
with a :class:`StructuredReport` (parameters before and after, the realised ratio, what every layer
keeps). :func:`layer_shapes_of_config` and :func:`check_reachable` check a configuration against a
model's ``config.json`` alone, before its weights are loaded (the command line does so).
:func:`load_pruned` loads a sliced checkpoint and its tokenizer, as
:func:`attnprune.llm.models.load_model` does a dense one; :func:`is_sliced` tells them apart.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from ..core.checks import check_choice, check_nonnegative, check_positive_int
from .allocation import AllocationConfig, allocate, kept_kv_heads
from .compensation import COMPENSATIONS, compensate_model
from .layers import LayerShape, layer_shapes
from .scores import LayerScores, ScoreOptions, score_model
from .slicing import CONFIG_KEY, SlicedLlamaForCausalLM, load_sliced, slice_model
from .stats import LayerStats, capture_layer_stats


@dataclass(frozen=True)
class StructuredConfig:
    """Everything a structured pruning needs, validated once.

    - ``ratio``: ρ ∈ [0, 1), the fraction of the attention+MLP linear parameters to remove (the
      nearest reachable count is removed: heads and channels are whole);
    - ``score``: a name of :data:`~attnprune.structured.scores.SCORES`;
    - ``allocation`` ("global" or "uniform"), ``gqa`` ("query" or "group"), ``min_heads`` and
      ``min_channels``: as :class:`~attnprune.structured.allocation.AllocationConfig`;
    - ``compensation``: "refit" (least squares), "bias" (FLAP) or "none"; ``damping``: its γ as a
      fraction of mean(diag H);
    - ``lam``, ``score_damping``, ``seed``: the scores' λ (relative), δ and seed
      (:class:`~attnprune.structured.scores.ScoreOptions`);
    - ``batch_size``: calibration sequences per forward pass of the statistics.
    """

    ratio: float
    score: str = "numerical"
    allocation: str = "global"
    compensation: str = "refit"
    gqa: str = "query"
    min_heads: int = 1
    min_channels: int = 1
    damping: float = 0.01
    lam: float = 100.0
    score_damping: float = 1e-6
    seed: int = 0
    batch_size: int = 1

    def __post_init__(self) -> None:
        self.allocation_config  # noqa: B018  (each builds and so validates its part)
        self.score_options  # noqa: B018
        check_choice("compensation", self.compensation, COMPENSATIONS)
        check_nonnegative("damping", self.damping)
        check_positive_int("batch_size", self.batch_size)

    @property
    def allocation_config(self) -> AllocationConfig:
        return AllocationConfig(self.ratio, self.score, self.allocation, self.gqa, self.min_heads, self.min_channels)

    @property
    def score_options(self) -> ScoreOptions:
        return ScoreOptions(ratio=self.ratio, lam=self.lam, damping=self.score_damping, seed=self.seed)


@dataclass(frozen=True)
class LayerReport:
    """What one layer kept, of how many: query heads (and their indices), KV heads, MLP channels."""

    layer: int
    kept_heads: int
    heads: int
    kept_kv_heads: int
    kv_heads: int
    kept_channels: int
    channels: int
    kept_head_indices: list[int]


@dataclass(frozen=True)
class StructuredReport:
    """The outcome of :func:`prune_structured`. ``parameters_*`` count every parameter of the model
    (embeddings and a tied ``lm_head`` once); ``linear_parameters`` are those of the attention and
    MLP linear layers, of which ``linear_parameters_removed`` went (FLAP's convention)."""

    config: StructuredConfig
    n_calibration: int
    seq_len: int
    parameters_before: int
    parameters_after: int
    linear_parameters: int
    linear_parameters_removed: int
    layers: list[LayerReport]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """The realised fraction of the attention+MLP linear parameters removed."""
        return self.linear_parameters_removed / self.linear_parameters

    @property
    def parameter_ratio(self) -> float:
        """The realised fraction of all the model's parameters removed."""
        return 1.0 - self.parameters_after / self.parameters_before

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "n_calibration": self.n_calibration,
            "seq_len": self.seq_len,
            "parameters": {
                "before": self.parameters_before,
                "after": self.parameters_after,
                "removed_fraction": self.parameter_ratio,
            },
            "linear_parameters": {
                "before": self.linear_parameters,
                "after": self.linear_parameters - self.linear_parameters_removed,
                "removed_fraction": self.ratio,
            },
            "per_layer": [asdict(layer) for layer in self.layers],
            "seconds": self.seconds,
        }


def parameter_count(model: nn.Module) -> int:
    """Every parameter of ``model``, a tied one once."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def prune_structured(
    model: nn.Module, calib_ids: Tensor, config: StructuredConfig
) -> tuple[SlicedLlamaForCausalLM, StructuredReport]:
    """Prune the heads and MLP channels of the Llama-like ``model`` under ``config``, from the (N, T)
    calibration token ids ``calib_ids``: statistics of one dense pass, scores, allocation,
    compensation, slicing. Returns a new, smaller model and its report; ``model`` is not changed."""
    if not isinstance(config, StructuredConfig):
        raise ValueError(f"config must be a StructuredConfig, got {type(config).__name__}")
    layer_shapes(model)  # refuses a model that is not Llama-like, before the forward passes
    start = time.perf_counter()
    stats = capture_layer_stats(model, calib_ids, batch_size=config.batch_size)
    seconds = time.perf_counter() - start
    return prune_from_stats(model, stats, config, calib_shape=tuple(calib_ids.shape), statistics_seconds=seconds)


@torch.no_grad()
def prune_from_stats(
    model: nn.Module,
    stats: list[LayerStats],
    config: StructuredConfig,
    *,
    calib_shape: tuple[int, int],
    statistics_seconds: float = 0.0,
    scores: list[LayerScores] | None = None,
) -> tuple[SlicedLlamaForCausalLM, StructuredReport]:
    """:func:`prune_structured` from statistics already captured (``capture_layer_stats`` on
    calibration ids of shape ``calib_shape`` = (N, T)): scores, allocation, compensation, slicing.
    One capture serves every score, ratio and compensation compared on the same calibration data;
    ``scores``, if given, are those :func:`score_model` gives for ``config.score`` and
    ``config.score_options`` on these statistics (computed once for several compensations or
    allocations; their seconds are then not counted here)."""
    if not isinstance(config, StructuredConfig):
        raise ValueError(f"config must be a StructuredConfig, got {type(config).__name__}")
    shapes = layer_shapes(model)
    if len(stats) != len(shapes):
        raise ValueError(f"stats must hold one LayerStats per layer ({len(shapes)}), got {len(stats)}")
    seconds = {"statistics": statistics_seconds}
    start = time.perf_counter()
    if scores is None:
        scores = score_model(model, stats, config.score, config.score_options)
    seconds["scores"] = time.perf_counter() - start
    start = time.perf_counter()
    allocation = allocate(scores, shapes, config.allocation_config)
    seconds["allocation"] = time.perf_counter() - start
    start = time.perf_counter()
    replacements = compensate_model(model, stats, allocation, config.compensation, damping=config.damping)
    seconds["compensation"] = time.perf_counter() - start
    start = time.perf_counter()
    sliced = slice_model(model, allocation, replacements)
    seconds["slicing"] = time.perf_counter() - start
    layers = [
        LayerReport(
            layer=index,
            kept_heads=heads.numel(),
            heads=shape.heads,
            kept_kv_heads=kept_kv_heads(heads, shape.group_size).numel(),
            kv_heads=shape.kv_heads,
            kept_channels=channels.numel(),
            channels=shape.channels,
            kept_head_indices=heads.tolist(),
        )
        for index, (shape, heads, channels) in enumerate(
            zip(shapes, allocation.heads, allocation.channels, strict=True)
        )
    ]
    report = StructuredReport(
        config=config,
        n_calibration=int(calib_shape[0]),
        seq_len=int(calib_shape[1]),
        parameters_before=parameter_count(model),
        parameters_after=parameter_count(sliced),
        linear_parameters=allocation.total_params,
        linear_parameters_removed=allocation.removed_params,
        layers=layers,
        seconds=seconds,
    )
    return sliced, report


# -- checks from config.json alone -----------------------------------------------------------------
def is_sliced(config) -> bool:
    """Whether a model config is that of a sliced checkpoint (it lists ``structured_layers``)."""
    return isinstance(getattr(config, CONFIG_KEY, None), list)


def layer_shapes_of_config(config) -> list[LayerShape]:
    """The :class:`~attnprune.structured.layers.LayerShape` of every layer, from a model's config alone
    (a dense Llama config, or a sliced one with ``structured_layers``); a ValueError naming
    ``model`` for a config that is not Llama-like."""
    from transformers import LlamaConfig

    if not isinstance(config, LlamaConfig):
        raise ValueError(
            f"model: structured pruning needs a Llama-like model (model_type 'llama', e.g. SmolLM2 or "
            f"Llama 3.2), got model_type {getattr(config, 'model_type', None)!r}"
        )
    k = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dense = {
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads or config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
    }
    sizes = getattr(config, CONFIG_KEY, None) if is_sliced(config) else [dense] * config.num_hidden_layers
    return [
        LayerShape(
            heads=layer["num_attention_heads"],
            kv_heads=layer["num_key_value_heads"],
            head_dim=k,
            hidden=config.hidden_size,
            channels=layer["intermediate_size"],
            attention_bias=bool(config.attention_bias),
            mlp_bias=bool(config.mlp_bias),
        )
        for layer in sizes
    ]


def check_reachable(shapes: list[LayerShape], config: StructuredConfig) -> None:
    """Raise the ValueError :func:`~attnprune.structured.allocation.allocate` would raise for these
    shapes (a ratio that would empty a layer or cannot be reached, a minimum above a layer's size):
    those depend on the sizes alone, so they are found with constant scores, before any model runs."""
    scores = [
        LayerScores(torch.zeros(shape.heads, dtype=torch.float64), torch.zeros(shape.channels, dtype=torch.float64))
        for shape in shapes
    ]
    allocate(scores, shapes, config.allocation_config)


# -- loading a sliced checkpoint with its tokenizer ---------------------------------------------------
def load_pruned(name_or_path: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A sliced checkpoint (a folder or hub id whose config.json has ``structured_layers``) and its
    tokenizer, in evaluation mode, on ``device`` in ``dtype``: :func:`load_model`'s counterpart."""
    import transformers

    from ..llm import assets
    from ..llm.models import TOKENIZER_FILES, resolve_model

    kind, where = resolve_model(name_or_path)
    if kind == "folder" and not any((where / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"the model folder {str(where)!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}); "
            "add them with `tokenizer.save_pretrained(folder)`, using the tokenizer of the model it was made from"
        )
    with assets.quiet_loading():
        tokenizer = transformers.AutoTokenizer.from_pretrained(where)
        try:
            model = load_sliced(where, dtype=dtype, device=device)
        except ValueError:
            raise
        except Exception as error:  # a truncated or corrupt file, shapes that do not match structured_layers
            if isinstance(error, (MemoryError, RuntimeError)) and "out of memory" in str(error).lower():
                raise
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(
                f"cannot load the weights of the sliced model {str(where)!r} ({type(error).__name__}: {first}); "
                "is a file truncated or corrupt? Write the folder again with save_pretrained"
            ) from error
    return model, tokenizer
