"""Pruning a whole model's ``q_proj``/``k_proj`` weights, layer by layer (chapter 08).

:func:`prune_model` is what the command-line tool and the chapter call. For each layer ℓ it
takes the attention input X_ℓ of the calibration sequences and prunes W_q and W_k of that layer
at sparsity ρ with one method, as set by a :class:`PruneConfig`. It returns the pruned weights
(layer → (W_q, W_k), exactly round(ρ·d) zeros in every row) and a :class:`PruneReport`; it
never writes into the model. The caller writes them where it wants them (:func:`set_qk_weights`
before ``save_pretrained``), or evaluates them without writing at all
(:func:`attnprune.llm.evaluate.perplexity` with ``weights=``). Methods:

- ``"magnitude"``, ``"wanda"``, ``"sparsegpt"``: the linear baselines of :mod:`attnprune.core.baselines`,
  on the same X (SparseGPT's H = XᵀX is shared by q_proj and k_proj, which read the same X);
- ``"ours"``: :func:`attnprune.llm.qk_objective.fit_qk` on the layer's true attention, set by a
  :class:`FitConfig`; with ``support="wanda"`` or ``"sparsegpt"`` it keeps that method's support
  and weights and refits only the kept weights on the attention objective (a remedy of the book's chapter).

**[choice]** Capture: ``"sequential"`` (default) — X_ℓ comes from the layers below *as pruned
so far*, the recipe of Wanda and SparseGPT, so each layer is fitted to the inputs it will see in
the pruned model and the comparison with the baselines is like for like; ``"dense"`` — X_ℓ from
the unpruned layers below. Both run the layers one at a time on the calibration hidden states,
so memory holds one layer's inputs, never all of them; a pruned layer is run with its pruned
weights passed in (:func:`attnprune.llm.capture.run_layer`), not written into the model. In
both, ours' target is the attention of the layer's dense weights on the same X.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..core.baselines import LINEAR, linear_pair
from ..core.checks import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_sparsity,
)
from ..core.masks import GROUPS, sparsity_of
from ..core.solver import OUTPUTS, SCHEDULES, SCORES
from .batches import check_input_ids
from .capture import attention_input, check_layers, layer_inputs, run_layer
from .models import attention_shape, decoder_layers, linear_weight_count, qk_modules
from .qk_objective import OURS_DEFAULTS, QUERY_ROWS, SELECTIONS, LayerProblem, fit_qk

METHODS = ("ours", *LINEAR)
CAPTURES = ("sequential", "dense")
REFIT_DEFAULTS = {
    "steps": 40,
    "lr": 0.005,
    "schedule": "cosine",
    "ramp": 0.5,
    "sequences_per_step": 1,
    "query_rows": "all",
}
"""**[choice]** ours refitting a linear method's support (``support=...``): it starts from a good
solution, so fewer, smaller steps, decaying to 0 (larger steps first undo the linear fit)."""
QKWeights = dict[int, tuple[Tensor, Tensor]]
"""Pruned q/k weights of some layers: layer index → (W_q, W_k), in ``nn.Linear`` layout."""


# -- the configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitConfig:
    """The settings of ours (:func:`~attnprune.llm.qk_objective.fit_qk`), checked once here.

    ``steps``, ``lr``, ``schedule``, ``ramp`` and ``query_rows`` left at None take
    :data:`~attnprune.llm.qk_objective.OURS_DEFAULTS`, or :data:`REFIT_DEFAULTS` with a ``support``
    (a linear method whose support and weights are kept and refitted); ``sequences_per_step``
    calibration sequences per descent step (None: all of them at every step); ``lam`` λ and
    ``anchor`` μ shape the objective; ``output``, ``selection``, ``score``, ``group``,
    ``check_every`` and ``seed`` are those of ``fit_qk``.
    """

    steps: int | None = None
    lr: float | None = None
    schedule: str | None = None
    query_rows: str | None = None
    sequences_per_step: int | None = OURS_DEFAULTS["sequences_per_step"]  # the same in REFIT_DEFAULTS
    output: str = "reweighted"
    selection: str = "projected"
    support: str | None = None
    lam: float = 0.0
    anchor: float = 0.0
    ramp: float | None = None
    score: str = "magnitude"
    group: str = "row"
    check_every: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.support is not None:
            check_choice("support", self.support, LINEAR)
        defaults = REFIT_DEFAULTS if self.support is not None else OURS_DEFAULTS
        for name in ("steps", "lr", "schedule", "ramp", "query_rows"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, defaults[name])
        check_positive_int("steps", self.steps)
        check_positive("lr", self.lr)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("query_rows", self.query_rows, QUERY_ROWS)
        if self.sequences_per_step is not None:
            check_positive_int("sequences_per_step", self.sequences_per_step)
        self._check_fit_choices()

    def _check_fit_choices(self) -> None:
        check_choice("output", self.output, OUTPUTS)
        check_choice("selection", self.selection, SELECTIONS)
        check_choice("score", self.score, SCORES)
        check_choice("group", self.group, GROUPS)
        check_nonnegative("lam", self.lam)
        check_nonnegative("anchor", self.anchor)
        if isinstance(self.ramp, bool) or not isinstance(self.ramp, (int, float)) or not 0.0 < self.ramp <= 1.0:
            raise ValueError(f"ramp must lie in (0, 1], got {self.ramp!r}")
        check_positive_int("check_every", self.check_every)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.selection == "straight-through" and (self.output != "mask-only" or self.support is not None):
            raise ValueError(
                'selection="straight-through" fits a hard mask: use it with output="mask-only" and no support'
            )
        if self.support is not None and self.output != "reweighted":
            raise ValueError('support refits the kept weights: use it with output="reweighted"')

    def fit_options(self) -> dict:
        """The keyword arguments of :func:`~attnprune.llm.qk_objective.fit_qk` (all but the support,
        which :func:`prune_layer` turns into the linear method's result)."""
        skip = ("support", "lam", "anchor", "sequences_per_step")
        options = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        return {**options, "chunks_per_step": None if self.sequences_per_step is None else 1}


@dataclass(frozen=True)
class PruneConfig:
    """How to prune a model's q/k weights: ``method`` (one of :data:`METHODS`) at ``sparsity`` ρ,
    on ``layers`` (None: all), with inputs captured ``capture`` = "sequential" (default) or
    "dense", ``batch_size`` sequences per forward chunk; ``fit`` the settings of ours (default
    :class:`FitConfig`; an error for a linear method). Checked once, here; :meth:`from_options`
    builds one from flat keyword options (the command line, a chapter's candidates)."""

    method: str
    sparsity: float
    layers: tuple[int, ...] | None = None
    capture: str = "sequential"
    batch_size: int = 8
    fit: FitConfig | None = None

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        object.__setattr__(self, "sparsity", check_sparsity("sparsity", self.sparsity))
        check_choice("capture", self.capture, CAPTURES)
        check_positive_int("batch_size", self.batch_size)
        if self.layers is not None:
            object.__setattr__(self, "layers", _checked_layers(self.layers))
        if self.fit is not None and not isinstance(self.fit, FitConfig):
            raise ValueError(f"fit must be a FitConfig or None, got {type(self.fit).__name__}")
        if self.method in LINEAR and self.fit is not None:
            raise ValueError(f"fit (the settings of ours) applies to method 'ours' only, not {self.method!r}")
        if self.method == "ours" and self.fit is None:
            object.__setattr__(self, "fit", FitConfig())

    @classmethod
    def from_options(
        cls,
        method: str,
        sparsity: float,
        *,
        layers: list[int] | None = None,
        capture: str = "sequential",
        batch_size: int = 8,
        **options,
    ) -> PruneConfig:
        """A config from flat options: ``options`` are the fields of :class:`FitConfig` (ours only)."""
        unknown = sorted(set(options) - {f.name for f in fields(FitConfig)})
        if unknown:
            names = [f.name for f in fields(FitConfig)]
            raise ValueError(f"unknown options {unknown}: the options of ours are {names}")
        if options and method in LINEAR:
            raise ValueError(f"options {sorted(options)} apply to method 'ours' only, not {method!r}")
        fit = FitConfig(**options) if method == "ours" else None
        return cls(method, sparsity, layers=layers, capture=capture, batch_size=batch_size, fit=fit)


def _checked_layers(layers) -> tuple[int, ...]:
    """Sorted distinct non-negative layer indices (their range is checked against the model later)."""
    if isinstance(layers, (int, str)) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers
    ):
        raise ValueError(f"layers must be a list of layer indices ≥ 0 (or None for all), got {layers!r}")
    if not layers:
        raise ValueError("layers must name at least one layer (or be None for all)")
    return tuple(sorted(set(layers)))


# -- the report ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerFit:
    """One pruned layer: the relative attention error on the inputs it was fitted to, the
    fraction of zeros of W_q and of W_k, and the seconds taken."""

    layer: int
    fit_error: float
    sparsity_q: float
    sparsity_k: float
    seconds: float


@dataclass(frozen=True)
class PruneReport:
    """What :func:`prune_model` did: the settings, per layer a :class:`LayerFit`, the sparsity
    summary (:func:`sparsity_summary`) and the total seconds. :meth:`to_dict` is JSON-ready."""

    method: str
    sparsity: float
    layers: list[int]
    capture: str
    n_calibration: int
    seq_len: int
    n_validation: int
    options: dict
    per_layer: list[LayerFit] = field(default_factory=list)
    sparsity_summary: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# -- the q/k weights of a model -------------------------------------------------------------------
@torch.no_grad()
def set_qk_weights(model: nn.Module, weights: QKWeights) -> None:
    """Write q_proj/k_proj weights into the model in place (layer → (W_q, W_k)), e.g. before
    ``save_pretrained``."""
    for i, (Wq, Wk) in weights.items():
        q, k = qk_modules(model, i)
        q.weight.copy_(Wq)
        k.weight.copy_(Wk)


def qk_overrides(model: nn.Module, weights: QKWeights, within: nn.Module | None = None) -> dict[str, Tensor]:
    """``weights`` as parameter overrides for :func:`torch.func.functional_call`: the names of the
    q/k weights relative to ``within`` (default: the model; e.g. one decoder layer) → the tensors."""
    names = {id(p): name for name, p in (model if within is None else within).named_parameters()}
    pairs = ((m, w) for i, pair in weights.items() for m, w in zip(qk_modules(model, i), pair, strict=True))
    return {names[id(m.weight)]: w for m, w in pairs}


def sparsity_summary(model: nn.Module, weights: QKWeights | None = None) -> dict[str, float]:
    """Fractions of exact zeros of the model with ``weights`` in place of its q/k weights (the
    model is not changed): in ``weights`` (the pruned weights; every layer's q/k if None), in
    the q/k weights of every layer, and in all linear weights of the decoder (the whole model)."""
    blocks = decoder_layers(model)
    replaced = (
        {}
        if weights is None
        else {id(m.weight): w for i, pair in weights.items() for m, w in zip(qk_modules(model, i), pair, strict=True)}
    )
    current = lambda m: replaced.get(id(m.weight), m.weight)
    every = [current(m) for i in range(len(blocks)) for m in qk_modules(model, i)]
    pruned = every if weights is None else [w for pair in weights.values() for w in pair]
    zeros_linear = _zeros([current(m) for m in blocks.modules() if isinstance(m, nn.Linear)])
    return {
        "pruned_weights": _zeros(pruned) / sum(w.numel() for w in pruned),
        "all_qk_weights": _zeros(every) / sum(w.numel() for w in every),
        "model_linear_weights": zeros_linear / linear_weight_count(model),
    }


def _zeros(tensors: list[Tensor]) -> int:
    return sum(int((t == 0).sum()) for t in tensors)


# -- one layer ------------------------------------------------------------------------------------
def layer_problem(
    model: nn.Module,
    layer: int,
    X: Tensor,
    cos: Tensor,
    sin: Tensor,
    *,
    batch_size: int = 8,
    lam: float = 0.0,
    anchor: float = 0.0,
) -> LayerProblem:
    """The deployable objective of layer ``layer`` on inputs X (N × T × d), dense weights as target."""
    q, k = qk_modules(model, layer)
    bias = lambda m: None if m.bias is None else m.bias.detach()
    return LayerProblem(
        X,
        q.weight.detach().clone(),
        k.weight.detach().clone(),
        cos,
        sin,
        attention_shape(model),
        bias(q),
        bias(k),
        lam=lam,
        anchor=anchor,
        batch_size=batch_size,
    )


def prune_layer(
    problem: LayerProblem,
    method: str,
    sparsity: float,
    *,
    support: str | None = None,
    validation: LayerProblem | None = None,
    **fit_options,
) -> tuple[Tensor, Tensor]:
    """The pruned (W_q, W_k) of one layer by ``method``; ``fit_options`` go to :func:`fit_qk`."""
    check_choice("method", method, METHODS)
    if method in LINEAR:
        return tuple(r.weight for r in linear_pair(method, problem.Wq, problem.Wk, problem.X, sparsity))
    if support is not None:
        check_choice("support", support, LINEAR)
        fit_options["support"] = linear_pair(support, problem.Wq, problem.Wk, problem.X, sparsity)
    fit = fit_qk(problem, sparsity, validation=validation, **fit_options)
    return fit.weight_q, fit.weight_k


# -- the whole model --------------------------------------------------------------------------------
def prune_model(
    model: nn.Module,
    calib_ids: Tensor,
    config: PruneConfig,
    *,
    validation_ids: Tensor | None = None,
    progress: bool = False,
    done: QKWeights | None = None,
    on_layer: Callable[[int, tuple[Tensor, Tensor], LayerFit], None] | None = None,
) -> tuple[QKWeights, PruneReport]:
    """Prune the q_proj/k_proj weights of ``model`` as ``config`` says, without changing the model.

    ``calib_ids`` (N, T) are the calibration sequences; ``validation_ids`` (N_v, T) held-out
    calibration sequences for ours' early stopping (ours only); ``progress`` shows a tqdm bar.
    Returns the pruned weights, layer → (W_q, W_k) in the model's dtype and device, and a
    :class:`PruneReport` (per layer the relative attention error on the inputs it was fitted to).

    Resuming: ``done`` holds layers already pruned by an earlier, interrupted call with the same
    config and inputs (layer → (W_q, W_k), e.g. as ``on_layer`` saved them). They are not pruned
    again, but they are run with those weights, so the later layers see the inputs they would have
    seen: the result is the same, bit for bit (their report row has the same fit error, 0 seconds).
    ``on_layer(layer, (W_q, W_k), fit)`` is called after each layer this call prunes, e.g. to save it.
    """
    if not isinstance(config, PruneConfig):
        raise ValueError(f"config must be a PruneConfig, got {type(config).__name__}")
    calib_ids = check_input_ids(calib_ids)
    layers = check_layers(model, None if config.layers is None else list(config.layers))
    if validation_ids is not None and config.method != "ours":
        raise ValueError(f"validation_ids (early stopping) apply to method 'ours' only, not {config.method!r}")
    done = _checked_done(model, layers, done)
    start = time.perf_counter()
    streams = {"calibration": layer_inputs(model, calib_ids, batch_size=config.batch_size)}
    if validation_ids is not None:
        streams["validation"] = layer_inputs(model, check_input_ids(validation_ids), batch_size=config.batch_size)
    weights, rows = {}, []
    bar = tqdm(
        range(max(layers) + 1), desc=f"prune {config.method} ρ={config.sparsity:g}", unit="layer", disable=not progress
    )
    for layer in bar:
        inputs = {name: attention_input(model, layer, hidden) for name, (hidden, _) in streams.items()}
        if config.capture == "dense":
            _advance(model, layer, streams, config.batch_size)
        if layer in layers:
            weights[layer], row = _prune_one(model, layer, inputs, streams, config, done.get(layer))
            rows.append(row)
            if on_layer is not None and layer not in done:
                on_layer(layer, weights[layer], row)
        if config.capture == "sequential":
            _advance(model, layer, streams, config.batch_size, weights.get(layer))
    report = PruneReport(
        config.method,
        config.sparsity,
        layers,
        config.capture,
        int(calib_ids.shape[0]),
        int(calib_ids.shape[1]),
        0 if validation_ids is None else int(validation_ids.shape[0]),
        {} if config.fit is None else asdict(config.fit),
        rows,
        sparsity_summary(model, weights),
        time.perf_counter() - start,
    )
    return weights, report


def _checked_done(model: nn.Module, layers: list[int], done: QKWeights | None) -> QKWeights:
    """``done`` checked: pruned layers of this run, each a (W_q, W_k) of the model's shapes."""
    if done is None:
        return {}
    if not isinstance(done, dict) or not set(done) <= set(layers):
        raise ValueError(
            f"done must map layers being pruned ({layers}) to (W_q, W_k), got layers "
            f"{sorted(done) if isinstance(done, dict) else type(done).__name__}"
        )
    for layer, pair in done.items():
        shapes = tuple(m.weight.shape for m in qk_modules(model, layer))
        if (
            not isinstance(pair, (tuple, list))
            or len(pair) != 2
            or not all(isinstance(w, Tensor) for w in pair)
            or tuple(w.shape for w in pair) != shapes
        ):
            raise ValueError(f"done[{layer}] must be (W_q, W_k) of shapes {[tuple(s) for s in shapes]}")
    return done


def _prune_one(
    model: nn.Module,
    layer: int,
    inputs: dict[str, Tensor],
    streams: dict,
    config: PruneConfig,
    done: tuple[Tensor, Tensor] | None = None,
) -> tuple[tuple[Tensor, Tensor], LayerFit]:
    """Prune one layer on its captured inputs (or take its ``done`` weights): its pruned (W_q, W_k)
    and its :class:`LayerFit`."""
    tic = time.perf_counter()
    fit = config.fit
    cos, sin = streams["calibration"][1]["position_embeddings"]
    if done is not None:  # on the model's device, in its dtype (a no-op, bit for bit, if they are already)
        done = tuple(w.to(m.weight) for w, m in zip(done, qk_modules(model, layer), strict=True))
    if fit is None:
        problem = layer_problem(model, layer, inputs["calibration"], cos, sin, batch_size=config.batch_size)
        Wq, Wk = done if done is not None else prune_layer(problem, config.method, config.sparsity)
    else:
        per_step = fit.sequences_per_step
        problem = layer_problem(
            model,
            layer,
            inputs["calibration"],
            cos,
            sin,
            lam=fit.lam,
            anchor=fit.anchor,
            batch_size=config.batch_size if per_step is None else per_step,
        )
        if done is not None:
            Wq, Wk = done
        else:
            validation = None
            if "validation" in inputs:
                v_cos, v_sin = streams["validation"][1]["position_embeddings"]
                validation = layer_problem(
                    model, layer, inputs["validation"], v_cos, v_sin, batch_size=config.batch_size
                )
            Wq, Wk = prune_layer(
                problem, config.method, config.sparsity, support=fit.support, validation=validation, **fit.fit_options()
            )
    error = problem.relative_error(Wq, Wk)
    seconds = 0.0 if done is not None else time.perf_counter() - tic
    row = LayerFit(layer, error, sparsity_of(Wq), sparsity_of(Wk), seconds)
    q, k = qk_modules(model, layer)
    return (Wq.detach().to(q.weight), Wk.detach().to(k.weight)), row


def _advance(
    model: nn.Module, layer: int, streams: dict, batch_size: int, pruned: tuple[Tensor, Tensor] | None = None
) -> None:
    """Run layer ``layer`` on every stream's hidden states: with its ``pruned`` q/k weights if given."""
    overrides = None if pruned is None else qk_overrides(model, {layer: pruned}, decoder_layers(model)[layer])
    for name, (hidden, kwargs) in streams.items():
        streams[name] = (run_layer(model, layer, hidden, kwargs, batch_size=batch_size, overrides=overrides), kwargs)
