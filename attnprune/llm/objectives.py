"""The objectives of attention-aware reconstruction (chapter 11): what a refit of one decoder
layer's kept weights minimises, each on the layer's true computation (rotary embedding,
grouped-query attention, causal mask, 1/√k).

For one decoder layer with input hidden states H (N × T × d), attention input X = norm(H) and
weights W = {q, k, v, o, gate, up, down} (``nn.Linear`` layout), with W⁰ the dense weights:

    P(W) = softmax(C ∘ Q Kᵀ/√k)                 query head i reads KV head i // (h/g)     (N, h, T, T)
    O(W) = [P_1 V_{g(1)}, …, P_h V_{g(h)}] W_oᵀ   the output of the attention block           (N, T, d)
    Y(W) = the decoder block's output (attention and MLP, residuals included)             (N, T, d)

and the objectives, each relative to a dense **target**: by default the dense layer on the same
inputs (SparseGPT's convention), or, when the window holds the dense model's own input to this layer
(``reference``, H⁰), the dense model's activations at the window's end (the "Free Lunch" target,
which also asks the refit to undo the error that the layers below left in the residual stream):
P(W⁰) and O(W⁰) then come from X⁰ = norm(H⁰), the output's target is H⁰ + O(W⁰; X⁰) − H (the
residual stream after the attention, less the input H that the window adds back), the block's
Y(W⁰; H⁰). The normalisers stay the dense layer's own size on H⁰. The objectives:

- ``"frobenius"`` (the paper's, Definition 3.2 on the real layer): ‖P(W̃) − P(W⁰)‖²_F / ‖P(W⁰)‖²_F;
- ``"kl"`` (D²Prune's divergence): the mean over sequences, heads and query rows of
  KL(P(W⁰)_row ‖ P(W̃)_row), so a sharp row and a diffuse row are not weighed alike;
- ``"output"``: ‖O(W̃) − O(W⁰)‖²_F / ‖O(W⁰)‖²_F, the error weighted by what the attention passes
  on (a window that contains the softmax), which also moves ``v_proj`` and ``o_proj``;
- ``"block"``: ‖Y(W̃) − Y(W⁰)‖²_F / ‖Y(W⁰) − H‖²_F, for pruning every linear layer of the block;
  **[choice]** the normaliser is the block's own contribution (the residual H cancels in the
  difference and would make every error look tiny).

Every objective is a small class behind one interface (:class:`Objective`): ``error(W̃, rows)``
is the summed, differentiable error of the sequences ``rows`` and ``scale(rows)`` the matching
normaliser, so that Σ error / Σ scale over any minibatch is the relative error above; the
gradient is autograd's (tested against finite differences in ``tests/llm/test_objectives.py``).
The dense targets are computed once per sequence, except P(W⁰), which is recomputed from the
cached dense queries and keys (N·h·T² entries would not fit in memory at 128 × 512 tokens).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..core.attention import future_mask
from .models import AttentionShape, attention_shape, decoder_layers
from .qk_objective import probabilities_from, probability_error, queries_keys

MODULES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
"""The linear layers of a Llama decoder block, by short name → their module path in the block."""
Weights = dict[str, Tensor]
"""Weights of some linear layers of one block: short name ("q", "k", …) → tensor (out × in)."""


@dataclass
class LayerWindow:
    """One decoder layer on calibration inputs: the block ``layer`` (its parameters are the dense
    weights W⁰, never changed), its input hidden states H = ``hidden`` (N × T × d) and the keyword
    arguments the block needs (``kwargs``, from :func:`attnprune.llm.capture.layer_inputs`; its
    ``position_embeddings`` are the rotary tables). ``X`` = norm(H) is the attention input.
    ``reference`` (N × T × d, or None) is the dense model's input H⁰ to this layer on the same
    sequences: given, the objectives aim at the dense model's activations (module docstring)."""

    layer: nn.Module
    hidden: Tensor
    kwargs: dict
    shape: AttentionShape
    reference: Tensor | None = None
    X: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.hidden.ndim != 3 or self.hidden.shape[-1] != self.shape.hidden:
            raise ValueError(
                f"hidden must be N × T × d with d = {self.shape.hidden}, got shape {tuple(self.hidden.shape)}"
            )
        if self.reference is not None and self.reference.shape != self.hidden.shape:
            raise ValueError(
                f"reference must have the shape of hidden {tuple(self.hidden.shape)}, got {tuple(self.reference.shape)}"
            )
        with torch.no_grad():
            self.X = self.layer.input_layernorm(self.hidden)

    @classmethod
    def of(
        cls, model: nn.Module, index: int, hidden: Tensor, kwargs: dict, reference: Tensor | None = None
    ) -> LayerWindow:
        """The window of decoder layer ``index`` of ``model`` on ``hidden`` (and ``reference``)."""
        return cls(decoder_layers(model)[index], hidden, kwargs, attention_shape(model), reference)

    def target_window(self) -> LayerWindow:
        """The window the dense targets are computed on: the dense model's input H⁰ if given, else
        this one."""
        if self.reference is None:
            return self
        return LayerWindow(self.layer, self.reference, self.kwargs, self.shape)

    def drift(self, rows: Tensor) -> Tensor:
        """H⁰ − H (b, T, d) of the sequences ``rows``: what the layers below changed in the residual
        stream (a window with a reference only)."""
        if self.reference is None:
            raise ValueError("drift needs the dense model's hidden states: build the window with a reference")
        return self.reference[rows] - self.hidden[rows]

    @property
    def n_sequences(self) -> int:
        return self.hidden.shape[0]

    def dense(self, name: str) -> Tensor:
        """W⁰ of the linear layer ``name`` ("q", "k", …), detached."""
        return self.module(name).weight.detach()

    def module(self, name: str) -> nn.Linear:
        return self.layer.get_submodule(MODULES[name])

    def bias(self, name: str) -> Tensor | None:
        """The bias of the linear layer ``name``, detached (None without one)."""
        bias = self.module(name).bias
        return None if bias is None else bias.detach()

    def weight(self, weights: Weights, name: str) -> Tensor:
        """W̃ of ``name``: from ``weights`` if given there, else the dense W⁰."""
        return weights[name] if name in weights else self.dense(name)

    def queries_keys(self, weights: Weights, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Rotated queries (b, h, T, k) and keys (b, g, T, k) of the sequences ``rows``."""
        cos, sin = (t if t.shape[0] == 1 else t[rows] for t in self.kwargs["position_embeddings"])
        Wq, Wk = self.weight(weights, "q"), self.weight(weights, "k")
        return queries_keys(self.X[rows], Wq, Wk, cos, sin, self.shape, self.bias("q"), self.bias("k"))

    def log_probabilities(self, q: Tensor, k: Tensor) -> Tensor:
        """log P (b, h, T, T): the causal row log-softmax of Q Kᵀ/√k, with the entries above the
        diagonal at the most negative float (so that 0·log P is 0 there, and finite)."""
        b, _, T, hd = q.shape
        grouped = q.reshape(b, self.shape.kv_heads, self.shape.group_size, T, hd)  # (b, g, h/g, T, k)
        S = (grouped @ k.unsqueeze(2).transpose(-1, -2)).reshape(b, self.shape.heads, T, T) / math.sqrt(hd)
        return torch.log_softmax(S.masked_fill(future_mask(0, T, S.device), torch.finfo(S.dtype).min), dim=-1)

    def attention_output(self, weights: Weights, rows: Tensor) -> Tensor:
        """O(W̃) (b, T, d): softmax(C ∘ QKᵀ/√k) V, heads concatenated, through o_proj. The product
        P V is torch's fused causal attention (``scaled_dot_product_attention``, query head i
        reading KV head i // (h/g)), which never forms P: about 3× faster forward and backward
        at T = 512 on a CPU than P @ V, and equal to it to float32 rounding (tested)."""
        q, k = self.queries_keys(weights, rows)  # (b, h, T, k), (b, g, T, k)
        X = self.X[rows]
        b, T, _ = X.shape
        s = self.shape
        V = nn.functional.linear(X, self.weight(weights, "v"), self.bias("v"))
        V = V.view(b, T, s.kv_heads, s.head_dim).transpose(1, 2)  # (b, g, T, k)
        context = nn.functional.scaled_dot_product_attention(q, k, V, is_causal=True, enable_gqa=True)  # (b, h, T, k)
        context = context.transpose(1, 2).reshape(b, T, s.heads * s.head_dim)  # (b, T, h·k)
        return nn.functional.linear(context, self.weight(weights, "o"), self.bias("o"))

    def block_output(self, weights: Weights, rows: Tensor) -> Tensor:
        """Y(W̃) (b, T, d): the decoder block with ``weights`` in place of its own."""
        own = {name: p.detach() for name, p in self.layer.named_parameters()}  # no gradient into W⁰
        overrides = own | {f"{MODULES[name]}.weight": W for name, W in weights.items()}
        out = functional_call(self.layer, overrides, (self.hidden[rows],), self.kwargs)
        return out[0] if isinstance(out, tuple) else out

    def linear_inputs(self, weights: Weights, names: Iterable[str]) -> dict[str, Tensor]:
        """The input of each linear layer ``names`` (N, T, in) in the block run with ``weights``:
        what Wanda's and SparseGPT's statistics are taken from (forward pre-hooks)."""
        seen: dict[str, list[Tensor]] = {name: [] for name in names}
        hooks = [
            self.module(name).register_forward_pre_hook(lambda m, args, name=name: seen[name].append(args[0]))
            for name in seen
        ]
        try:
            with torch.no_grad():
                for rows in torch.arange(self.n_sequences).split(8):
                    self.block_output(weights, rows)
        finally:
            for hook in hooks:
                hook.remove()
        return {name: torch.cat(parts) for name, parts in seen.items()}


class Objective:
    """The interface of every objective on a :class:`LayerWindow`: ``error(W̃, rows)`` is the summed
    error of the sequences ``rows`` (differentiable in W̃), ``scale(rows)`` its normaliser; the
    relative error of a minibatch is Σ error / Σ scale. ``reads`` names the linear layers that
    can move it (a refit of other layers would not change it)."""

    name: ClassVar[str]
    label: ClassVar[str]
    reads: ClassVar[tuple[str, ...]]

    def __init__(self, window: LayerWindow) -> None:
        self.window = window
        self._scales = self._dense_scales()

    def error(self, weights: Weights, rows: Tensor) -> Tensor:
        raise NotImplementedError

    def scale(self, rows: Tensor) -> float:
        return float(self._scales[rows].sum())

    @torch.no_grad()
    def relative_error(self, weights: Weights, batch_size: int = 8) -> float:
        """Σ error / Σ scale over every sequence of the window, for weights W̃."""
        chunks = torch.arange(self.window.n_sequences).split(batch_size)
        return sum(float(self.error(weights, rows)) for rows in chunks) / self.scale(slice(None))

    def _dense_scales(self) -> Tensor:
        raise NotImplementedError


class ProbabilityFrobenius(Objective):
    """‖P(W̃) − P(W⁰)‖²_F / ‖P(W⁰)‖²_F (the paper's objective, Definition 3.2 on the real layer)."""

    name, label, reads = "frobenius", "probabilities, Frobenius", ("q", "k")

    def _dense_scales(self) -> Tensor:
        target = self.window.target_window()
        self._dense_qk = _by_chunks(target, lambda rows: target.queries_keys({}, rows))
        return torch.stack([self._target(torch.tensor([i])).square().sum() for i in range(self.window.n_sequences)])

    def _target(self, rows: Tensor) -> Tensor:
        q, k = (t[rows] for t in self._dense_qk)
        return probabilities_from(q, k, self.window.shape)

    def error(self, weights: Weights, rows: Tensor) -> Tensor:
        with torch.no_grad():
            target = self._target(rows)
        return probability_error(*self.window.queries_keys(weights, rows), target, self.window.shape)


class ProbabilityKL(ProbabilityFrobenius):
    """The mean over sequences, heads and query rows of KL(P(W⁰)_row ‖ P(W̃)_row) (D²Prune's)."""

    name, label, reads = "kl", "probabilities, KL", ("q", "k")

    def _dense_scales(self) -> Tensor:
        target = self.window.target_window()
        self._dense_qk = _by_chunks(target, lambda rows: target.queries_keys({}, rows))
        rows_per_sequence = self.window.shape.heads * self.window.X.shape[1]
        return torch.full((self.window.n_sequences,), float(rows_per_sequence), dtype=torch.float64)

    def error(self, weights: Weights, rows: Tensor) -> Tensor:
        with torch.no_grad():
            log_target = self.window.log_probabilities(*(t[rows] for t in self._dense_qk))
        log_p = self.window.log_probabilities(*self.window.queries_keys(weights, rows))
        return (log_target.exp() * (log_target - log_p)).sum()


class AttentionOutput(Objective):
    """‖O(W̃) − O(W⁰)‖²_F / ‖O(W⁰)‖²_F, the output of the attention block."""

    name, label, reads = "output", "attention output", ("q", "k", "v", "o")

    def _dense_scales(self) -> Tensor:
        target = self.window.target_window()
        (dense,) = _by_chunks(target, lambda rows: (target.attention_output({}, rows),))
        self._target = dense  # (N, T, d): O(W⁰; X), or aiming at the dense model O(W⁰; X⁰) + H⁰ − H
        if self.window.reference is not None:
            self._target = dense + self.window.drift(slice(None))
        return dense.double().square().sum(dim=(1, 2))

    def error(self, weights: Weights, rows: Tensor) -> Tensor:
        return (self.window.attention_output(weights, rows) - self._target[rows]).square().sum()


class BlockOutput(Objective):
    """‖Y(W̃) − Y(W⁰)‖²_F / ‖Y(W⁰) − H‖²_F, the output of the whole decoder block."""

    name, label, reads = "block", "block output", tuple(MODULES)

    def _dense_scales(self) -> Tensor:
        target = self.window.target_window()
        (self._target,) = _by_chunks(target, lambda rows: (target.block_output({}, rows),))
        return (self._target - target.hidden).double().square().sum(dim=(1, 2))

    def error(self, weights: Weights, rows: Tensor) -> Tensor:
        return (self.window.block_output(weights, rows) - self._target[rows]).square().sum()


OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (ProbabilityFrobenius, ProbabilityKL, AttentionOutput, BlockOutput)
}
"""The registry of objectives, by name."""


def objective_for(name: str, window: LayerWindow) -> Objective:
    """The objective ``name`` (one of :data:`OBJECTIVES`) on ``window``."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name](window)


@torch.no_grad()
def _by_chunks(window: LayerWindow, compute, batch_size: int = 8) -> tuple[Tensor, ...]:
    """``compute(rows)`` (a tuple of tensors, sequences first) over every sequence, concatenated."""
    parts = [compute(rows) for rows in torch.arange(window.n_sequences).split(batch_size)]
    return tuple(torch.cat(group) for group in zip(*parts, strict=True))
