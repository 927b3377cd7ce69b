"""Attention-aware reconstruction (chapter 11): a linear method chooses the support, a non-linear
objective refits the kept weights.

For one decoder layer and the linear layers of a **scope** (``"qk"``: q_proj and k_proj;
``"qkvo"``: the attention block; ``"all"``: every linear layer of the block):

1. **Support.** The linear method (Wanda, SparseGPT, magnitude; :mod:`attnprune.core.baselines`)
   prunes each weight at sparsity ρ, an exact count of zeros in every row. The layers are taken in
   :data:`STAGES` (q/k/v, then o, then gate/up, then down), each on the inputs it sees in the block
   with the earlier stages already pruned (SparseGPT's "true sequential" order); layers that read
   the same input share SparseGPT's H = XᵀX. This gives the masks B and the starting values W^lin.
2. **Refit.** The kept weights W̃_S are free parameters, from W^lin (an *additive* refit: B∘W̃,
   not B∘M∘W^lin), and, with ``window="all"`` (the default), so is every *dense* layer that the
   objective reads beside them (for q/k on the attention output: v_proj and o_proj, every entry
   free, from W⁰; they stay dense), fitted by Adam to

       L(W̃) = objective(B∘W̃) + (μ/2)·Σ_m ‖W̃_m − W^lin_m‖²_F / ‖W^lin_m‖²_F

   with the objective of :mod:`attnprune.llm.objectives` on the calibration sequences, a
   minibatch of ``sequences_per_step`` sequences a step (so 32 or 128 sequences cost no more per
   step than 8), the gradient masked by B (the support never moves). **Early stopping**: the
   objective on held-out sequences of the calibration source is checked before the first step
   (W^lin itself) and every ``check_every`` steps; the best checkpoint is kept, so the refit never
   returns weights worse than the linear method's on held-out data.

:func:`reconstruct_model` runs it on every layer, sequentially (each layer's inputs come from the
layers below as pruned so far, as Wanda and SparseGPT do), and returns the pruned weights; it
never writes into the model. The loop of the refit is the library's one descent loop,
:func:`attnprune.core.solver.descend`, with its :class:`~attnprune.core.solver.Adam` rule.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..core.baselines import LINEAR, hessian, linear_prune, sparsegpt_prune
from ..core.checks import check_choice, check_nonnegative, check_positive, check_positive_int, check_sparsity
from ..core.solver import SCHEDULES, Adam, descend
from ..core.trace import Trace
from .batches import check_input_ids
from .capture import check_layers, layer_inputs, run_layer
from .models import decoder_layers
from .objectives import MODULES, OBJECTIVES, LayerWindow, Objective, Weights, objective_for
from .owl import layer_outlier_ratios, owl_sparsities
from .prune import _checked_layers
from .qk_objective import _chunk_order

SCOPES = {"qk": ("q", "k"), "qkvo": ("q", "k", "v", "o"), "all": tuple(MODULES)}
"""The linear layers of each decoder block that a scope prunes."""
STAGES = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))
"""The order in which the supports are taken; the layers of a stage read the same input."""
TARGETS = ("layer", "model")
"""What a refit aims at: the dense layer on the pruned model's inputs (SparseGPT's convention) or
the dense model's own activations at the window's end (the "Free Lunch" target:
:mod:`attnprune.llm.objectives`)."""
WINDOWS = ("all", "pruned")
"""What a refit moves: every layer the objective reads (the pruned ones on their support, the dense
ones freely), or the pruned layers' kept weights alone."""
ALLOCATIONS = ("uniform", "owl")
"""How ρ is spread over the layers: the same everywhere, or OWL's outlier-weighted sparsities."""
LayerWeights = dict[int, Weights]
"""Pruned weights of some decoder layers: layer index → (short name → weight)."""
PUBLISHED_DAMPING = 0.01
"""SparseGPT's published dampening λ (``percdamp``): λ·mean(diag H) is added to the diagonal of H."""


@dataclass(frozen=True)
class RefitConfig:
    """The refit of the kept weights, checked once here: the ``objective`` (one of
    :data:`~attnprune.llm.objectives.OBJECTIVES`), ``steps`` Adam steps of size ``lr`` with a
    ``schedule`` of :func:`~attnprune.core.solver.step_size`, ``anchor`` μ (the penalty toward the
    linear method's values), ``sequences_per_step`` calibration sequences a step (None: all),
    ``check_every`` steps between early-stopping checks, ``seed`` of the minibatch order,
    ``target`` (one of :data:`TARGETS`): the dense layer on the same inputs, or the dense model;
    ``window`` (one of :data:`WINDOWS`): refit the dense layers the objective reads too, or not.

    **[choice]** The defaults (the attention output, 24 steps of 2 sequences at 2e-3, checked
    every 4 steps, no anchor: early stopping is the guard) are the best of the settings we scored
    within 5× SparseGPT's wall time on held-out text no chapter reports (``scripts/tune_refit.py``:
    SmolLM2, q/k at ρ = 0.5 and 0.7, 8 × 512 Austen tokens, 2 CPU cores: 4.2–4.5×). At ρ = 0.7 they
    beat the earlier 12 steps of 4 beyond noise on both held-out texts and tie at 0.5; 36 steps of
    1, 24 of 2 at 3e-3 and 48 of 1 (5.2×) did not beat them. More sequences a step fit better and
    cost more: 24 steps of 4 took 6.3×, 30 of 8 13×; chapter 11 draws that curve. **[choice]**
    ``window="all"``: on the same held-out text, moving the dense v_proj/o_proj beside the kept
    q/k weights lowered held-out Austen's perplexity by 0.35 [0.23, 0.48] at ρ = 0.5 and 0.69
    [0.35, 1.07] at 0.7 against the kept weights alone, and tied on the Lee news (−0.05, −0.04),
    at 4.3–5.1× SparseGPT's time in that run (4.4–4.6× in chapter 11's); ``target="model"`` (the
    dense model's activations) tied at 0.5 and was worse on Lee at 0.7 (+0.28 [0.15, 0.41]), so the
    dense layer stays the target. Calibrating every method on text the dense model samples itself
    (``--calibration generated`` or ``mixed``) moved the baselines and the refit toward the news
    alike: the refit's share of Lee's gap stayed 0.1–0.3, so Austen stays the calibration text.
    **[choice]** ``damping`` λ = 0.3 (SparseGPT's published 0.01, 0.1, 0.3 and 1 scored on the same
    held-out text): the refit of SparseGPT's support at λ = 0.3 closed 0.67 / 0.54 of the published
    SparseGPT's gap at ρ = 0.5 and 0.54 / 0.42 at 0.7 (Austen / Lee), against 0.56 / 0.16 and
    0.69 / 0.32 at λ = 0.01, while SparseGPT alone at 0.3 was no better than at 0.01."""

    objective: str = "output"
    steps: int = 24
    lr: float = 2e-3
    schedule: str = "constant"
    anchor: float = 0.0
    sequences_per_step: int | None = 2
    check_every: int = 4
    seed: int = 0
    target: str = "layer"
    window: str = "all"
    damping: float = 0.3

    def __post_init__(self) -> None:
        check_choice("objective", self.objective, tuple(OBJECTIVES))
        check_positive_int("steps", self.steps)
        check_positive("lr", self.lr)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_nonnegative("anchor", self.anchor)
        if self.sequences_per_step is not None:
            check_positive_int("sequences_per_step", self.sequences_per_step)
        check_positive_int("check_every", self.check_every)
        check_choice("target", self.target, TARGETS)
        check_choice("window", self.window, WINDOWS)
        check_nonnegative("damping", self.damping)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class ReconstructConfig:
    """How to prune a model: the linear layers of ``scope`` (one of :data:`SCOPES`) at ``sparsity``
    ρ with the support of ``support`` (a linear method), then ``refit`` (None: the linear method
    alone), on ``layers`` (None: all), ``batch_size`` sequences per forward chunk; ``allocation``
    "uniform" (ρ in every layer) or "owl" (OWL's per-layer sparsities, mean ρ:
    :mod:`attnprune.llm.owl`); ``damping`` the dampening λ of a SparseGPT support (None: the
    refit's :attr:`RefitConfig.damping` when there is a refit, SparseGPT's published 0.01 when the
    linear method runs alone; the other supports have none): :attr:`support_damping`."""

    support: str
    sparsity: float
    scope: str = "qk"
    refit: RefitConfig | None = field(default_factory=RefitConfig)
    layers: tuple[int, ...] | None = None
    batch_size: int = 8
    allocation: str = "uniform"
    damping: float | None = None

    def __post_init__(self) -> None:
        check_choice("support", self.support, LINEAR)
        if self.damping is not None:
            check_nonnegative("damping", self.damping)
            if self.support != "sparsegpt":
                raise ValueError(
                    f"damping is the dampening of SparseGPT's H; support {self.support!r} has none: leave it None"
                )
        object.__setattr__(self, "sparsity", check_sparsity("sparsity", self.sparsity))
        check_choice("scope", self.scope, tuple(SCOPES))
        check_positive_int("batch_size", self.batch_size)
        check_choice("allocation", self.allocation, ALLOCATIONS)
        if self.refit is not None:
            if not isinstance(self.refit, RefitConfig):
                raise ValueError(f"refit must be a RefitConfig or None, got {type(self.refit).__name__}")
            reads = OBJECTIVES[self.refit.objective].reads
            missing = [name for name in SCOPES[self.scope] if name not in reads]
            if missing:
                raise ValueError(
                    f"objective {self.refit.objective!r} does not depend on {missing}, which scope "
                    f"{self.scope!r} prunes: use an objective that reads them ('output' for qkvo, 'block' for all)"
                )
        if self.layers is not None:
            object.__setattr__(self, "layers", _checked_layers(self.layers))

    @property
    def support_damping(self) -> float:
        """The λ SparseGPT's support is taken with: ``damping``, else the refit's, else the published 0.01."""
        if self.damping is not None:
            return self.damping
        return PUBLISHED_DAMPING if self.refit is None else self.refit.damping


def refitted_names(config: ReconstructConfig) -> tuple[str, ...]:
    """The linear layers whose weights :func:`reconstruct_model` returns for each layer: those the
    scope prunes, then (a refit with ``window="all"``) the dense ones its objective reads."""
    pruned = SCOPES[config.scope]
    if config.refit is None or config.refit.window == "pruned":
        return pruned
    return pruned + tuple(name for name in OBJECTIVES[config.refit.objective].reads if name not in pruned)


# -- one layer ------------------------------------------------------------------------------------
def linear_support(
    window: LayerWindow, method: str, names: tuple[str, ...], sparsity: float, damping: float = PUBLISHED_DAMPING
) -> tuple[Weights, Weights]:
    """The linear method's pruned weights W^lin and masks B of the layers ``names`` of one block,
    stage by stage (:data:`STAGES`), each stage on its inputs with the earlier stages pruned;
    SparseGPT with H = XᵀX + λ·mean(diag H)·I, λ = ``damping``."""
    weights: Weights = {}
    masks: Weights = {}
    for stage in STAGES:
        todo = [name for name in stage if name in names]
        if not todo:
            continue
        X = window.linear_inputs(weights, todo[:1])[todo[0]]  # (N, T, in): the stage's shared input
        H = hessian(X, window.dense(todo[0])) if method == "sparsegpt" else None
        for name in todo:
            W = window.dense(name)
            if method == "sparsegpt":
                result = sparsegpt_prune(W, None, sparsity, H=H, percdamp=damping)
            else:
                result = linear_prune(method, W, X, sparsity)
            weights[name], masks[name] = result.weight, result.mask
    return weights, masks


@dataclass
class RefitResult:
    """The outcome of :func:`refit`: the refitted weights (B∘W̃), the trace (with the validation
    checks), the step whose weights were kept (0: the linear method's), their validation error and
    that of the linear method's weights (the check before the first step)."""

    weights: Weights
    trace: Trace
    step: int
    validation_error: float | None
    validation_start: float | None = None


def refit(
    objective: Objective,
    start: Weights,
    masks: Weights,
    config: RefitConfig,
    *,
    validation: Objective | None = None,
    batch_size: int = 8,
) -> RefitResult:
    """Adam on the kept weights W̃_S (module docstring), from ``start`` = W^lin on the support
    ``masks``; early stopping on ``validation`` (an objective on held-out sequences)."""
    names = list(start)
    params = [start[name].detach().clone().requires_grad_(True) for name in names]
    supports = [masks[name].to(params[i]) for i, name in enumerate(names)]
    loss = _RefitLoss(objective, names, supports, [start[name].detach() for name in names], config, batch_size)
    keeper = _Best(names, validation, config, batch_size)
    first = keeper.check(0, params)
    trace = descend(
        params,
        loss,
        Adam(config.lr, config.schedule),
        config.steps,
        project=lambda ps, t: [p.mul_(b) for p, b in zip(ps, supports, strict=True)],
        after_step=keeper,
    )
    return RefitResult(keeper.weights(params), trace, keeper.step, keeper.error, first)


@dataclass
class _RefitLoss:
    """L(W̃) of the module docstring on the minibatch of step t, its gradient masked by B."""

    objective: Objective
    names: list[str]
    supports: list[Tensor]
    anchors: list[Tensor]
    config: RefitConfig
    batch_size: int
    order: list[list[int]] = field(init=False)
    norms: list[float] = field(init=False)

    def __post_init__(self) -> None:
        n = self.objective.window.n_sequences
        self.order = _chunk_order(n, self.config.steps, self.config.sequences_per_step, self.config.seed)
        self.norms = [float(a.square().sum()) or 1.0 for a in self.anchors]

    def __call__(self, params: list[Tensor], t: int) -> tuple[float, list[Tensor]]:
        for p in params:
            p.grad = None
        rows = torch.tensor(self.order[t])
        scale = self.objective.scale(rows)
        total = 0.0
        if self.config.anchor:
            pulls = [(p - a).square().sum() / n for p, a, n in zip(params, self.anchors, self.norms, strict=True)]
            penalty = 0.5 * self.config.anchor * sum(pulls)
            penalty.backward()
            total += float(penalty.detach())
        weights = dict(zip(self.names, params, strict=True))
        for chunk in rows.split(self.batch_size):
            part = self.objective.error(weights, chunk) / scale
            part.backward()
            total += float(part.detach())
        return total, [p.grad * b for p, b in zip(params, self.supports, strict=True)]


@dataclass
class _Best:
    """Early stopping: the validation error of the weights at step 0 and every ``check_every``
    steps (and at the last); keeps the best. Without validation, the last step's weights."""

    names: list[str]
    validation: Objective | None
    config: RefitConfig
    batch_size: int
    step: int = 0
    error: float | None = None
    best: list[Tensor] | None = None

    def check(self, done: int, params: list[Tensor]) -> float | None:
        if self.validation is None:
            return None
        with torch.no_grad():
            error = self.validation.relative_error(dict(zip(self.names, params, strict=True)), self.batch_size)
        if self.error is None or error < self.error:
            self.step, self.error, self.best = done, error, [p.detach().clone() for p in params]
        return error

    def __call__(self, t: int, params: list[Tensor], trace: Trace) -> None:
        done = t + 1
        if done % self.config.check_every == 0 or done == self.config.steps:
            error = self.check(done, params)
            if error is not None:
                trace.validation.append((done, error))

    def weights(self, params: list[Tensor]) -> Weights:
        kept = self.best if self.best is not None else [p.detach().clone() for p in params]
        if self.best is None:
            self.step = self.config.steps
        return dict(zip(self.names, kept, strict=True))


# -- the whole model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerRefit:
    """One layer: the objective's relative error on the calibration and on the validation
    sequences, of the linear method's weights (``*_start``) and of the weights kept; the step kept
    (0: the linear method's weights) and the seconds taken."""

    layer: int
    calibration_start: float | None
    calibration: float | None
    validation_start: float | None
    validation: float | None
    step: int
    seconds: float


@dataclass(frozen=True)
class ReconstructReport:
    """What :func:`reconstruct_model` did: the settings, a :class:`LayerRefit` per layer, the seconds
    (OWL's allocation included) and the sparsity ρ_ℓ of each layer."""

    config: dict
    n_calibration: int
    n_validation: int
    per_layer: list[LayerRefit]
    seconds: float
    layer_sparsity: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def reconstruct_model(
    model: nn.Module,
    calib_ids: Tensor,
    config: ReconstructConfig,
    *,
    validation_ids: Tensor | None = None,
    progress: bool = False,
    done: LayerWeights | None = None,
    on_layer: Callable[[int, Weights], None] | None = None,
) -> tuple[LayerWeights, ReconstructReport]:
    """Prune ``model`` as ``config`` says (module docstring), without changing it: the pruned
    weights, layer → (name → weight), and a :class:`ReconstructReport`. ``validation_ids`` (N_v, T)
    are held-out sequences of the calibration source for early stopping (never the evaluation
    text; a linear method alone, without a refit, does not run them). Resuming: ``done`` holds
    layers pruned by an earlier, interrupted call with the same config and inputs; they are not
    pruned again but run with those weights, so the later layers see the same inputs and the
    result is the same, bit for bit (their report row: 0 seconds).
    ``on_layer(layer, weights)`` is called after each layer this call prunes, e.g. to save it."""
    if not isinstance(config, ReconstructConfig):
        raise ValueError(f"config must be a ReconstructConfig, got {type(config).__name__}")
    calib_ids = check_input_ids(calib_ids, model)
    layers = check_layers(model, None if config.layers is None else list(config.layers))
    streams = {"calibration": layer_inputs(model, calib_ids, batch_size=config.batch_size)}
    if validation_ids is not None and config.refit is not None:  # only a refit stops early
        streams["validation"] = layer_inputs(
            model, check_input_ids(validation_ids, model), batch_size=config.batch_size
        )
    aims_at_model = config.refit is not None and config.refit.target == "model"
    dense = dict(streams) if aims_at_model else {}  # the dense model's own streams, name → (H⁰, kwargs)
    done = _checked_done(model, layers, refitted_names(config), done)
    start, pruned, rows = time.perf_counter(), {}, []
    sparsity = layer_sparsities(model, calib_ids, config, layers)
    for index in tqdm(range(max(layers) + 1), desc="reconstruct", unit="layer", disable=not progress):
        if index in done:
            pruned[index] = done[index]
            rows.append(LayerRefit(index, None, None, None, None, 0, 0.0))
        elif index in layers:
            windows = {
                name: LayerWindow.of(model, index, *stream, dense[name][0] if dense else None)
                for name, stream in streams.items()
            }
            pruned[index], row = _reconstruct_layer(index, windows, config, sparsity[index])
            rows.append(row)
            if on_layer is not None:
                on_layer(index, pruned[index])
        overrides = block_overrides(pruned.get(index, {}))
        streams = {name: _next_stream(model, index, s, config.batch_size, overrides) for name, s in streams.items()}
        dense = {name: _next_stream(model, index, s, config.batch_size, {}) for name, s in dense.items()}
    n_validation = int(validation_ids.shape[0]) if "validation" in streams else 0
    seconds = time.perf_counter() - start
    report = ReconstructReport(asdict(config), int(calib_ids.shape[0]), n_validation, rows, seconds, sparsity)
    return pruned, report


def _next_stream(
    model: nn.Module, index: int, stream: tuple[Tensor, dict], batch_size: int, overrides: dict
) -> tuple[Tensor, dict]:
    """The stream (hidden states, kwargs) after decoder layer ``index``, with ``overrides`` (the
    pruned weights; none for the dense model's stream)."""
    hidden, kwargs = stream
    return run_layer(model, index, hidden, kwargs, batch_size=batch_size, overrides=overrides), kwargs


def _checked_done(
    model: nn.Module, layers: list[int], names: tuple[str, ...], done: LayerWeights | None
) -> LayerWeights:
    """``done`` checked: layers of this run, each with a weight of the right shape for every name."""
    if done is None:
        return {}
    if not isinstance(done, dict) or not set(done) <= set(layers):
        found = sorted(done) if isinstance(done, dict) else type(done).__name__
        raise ValueError(f"done must map layers being pruned ({layers}) to their weights, got {found}")
    blocks = decoder_layers(model)
    for index, weights in done.items():
        shapes = {name: tuple(blocks[index].get_submodule(MODULES[name]).weight.shape) for name in names}
        found = {name: tuple(W.shape) for name, W in weights.items()} if isinstance(weights, dict) else None
        if found != shapes:
            raise ValueError(f"done[{index}] must hold the weights {shapes}, got {found}")
    return done


def layer_sparsities(
    model: nn.Module, calib_ids: Tensor, config: ReconstructConfig, layers: list[int]
) -> dict[int, float]:
    """ρ_ℓ of each layer pruned: ρ everywhere, or OWL's from the calibration sequences."""
    if config.allocation == "uniform":
        return dict.fromkeys(layers, config.sparsity)
    ratios = layer_outlier_ratios(model, calib_ids, SCOPES[config.scope], layers, batch_size=config.batch_size)
    return dict(zip(ratios, owl_sparsities(list(ratios.values()), config.sparsity), strict=True))


def _reconstruct_layer(
    index: int, windows: dict[str, LayerWindow], config: ReconstructConfig, sparsity: float
) -> tuple[Weights, LayerRefit]:
    """The linear support of one layer at ρ_ℓ = ``sparsity``, then its refit (if any): the
    weights and the report row."""
    tic = time.perf_counter()
    calibration = windows["calibration"]
    start, masks = linear_support(calibration, config.support, SCOPES[config.scope], sparsity, config.support_damping)
    if config.refit is None:
        return start, LayerRefit(index, None, None, None, None, 0, time.perf_counter() - tic)
    for name in [n for n in refitted_names(config) if n not in start]:  # the dense ones: every entry free
        start[name] = calibration.dense(name).clone()
        masks[name] = torch.ones_like(start[name])
    fit = objective_for(config.refit.objective, calibration)
    held = objective_for(config.refit.objective, windows["validation"]) if "validation" in windows else None
    result = refit(fit, start, masks, config.refit, validation=held, batch_size=config.batch_size)
    row = LayerRefit(
        index,
        fit.relative_error(start, config.batch_size),
        fit.relative_error(result.weights, config.batch_size),
        result.validation_start,
        result.validation_error,
        result.step,
        time.perf_counter() - tic,
    )
    return result.weights, row


def block_overrides(weights: Weights) -> dict[str, Tensor]:
    """``weights`` (short name → weight) as parameter overrides of a decoder block."""
    return {f"{MODULES[name]}.weight": W for name, W in weights.items()}


@torch.no_grad()
def write_weights(model: nn.Module, weights: LayerWeights) -> None:
    """Write ``weights`` (layer → short name → weight) into ``model`` in place."""
    blocks = decoder_layers(model)
    for index, layer_weights in weights.items():
        for name, W in layer_weights.items():
            blocks[index].get_submodule(MODULES[name]).weight.copy_(W)


def with_weights(model: nn.Module, weights: LayerWeights) -> nn.Module:
    """A copy of ``model`` with ``weights`` written into it (``model`` is not changed): what a
    perplexity evaluation of the pruned model takes."""
    pruned = copy.deepcopy(model)
    write_weights(pruned, weights)
    return pruned
