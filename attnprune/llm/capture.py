"""Calibration inputs X of each layer's attention, from the dense model or sequentially.

X for layer ℓ is what its attention sees: the output of the layer's input norm (RMSNorm) on the
residual stream, (N, T, d) for N sequences of T tokens. Two ways to get it:

- **dense** (:func:`capture_attention_inputs`): one forward pass of the model as it is, with
  forward hooks on the input norms. Every layer's X comes from the unpruned layers below it.
- **sequential** (:func:`layer_inputs`, :func:`attention_input` and :func:`run_layer`): the
  SparseGPT/Wanda recipe. The hidden states entering layer 0 are captured once; then, layer by
  layer, X_ℓ is computed from the layers below *as pruned so far*, the caller prunes layer ℓ, and
  layer ℓ is run with its pruned weights passed in (``overrides``, nothing written into the
  model) to give the input of layer ℓ + 1. :func:`attnprune.llm.prune.prune_model` is that loop.

**[choice]** The sequential form is the default for pruning a whole model (the deployable
experiment): each layer is fitted to the inputs it will see once the layers below are pruned,
which is what Wanda and SparseGPT do, so the comparison with them is like for like. The dense
form is for studying one layer at a time on the same X for every method (the fused experiment).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .batches import batches, check_input_ids, model_device
from .models import decoder_layers


class _Stop(Exception):
    """Raised by a hook to end a forward pass once what was needed is captured."""


def check_layers(model: nn.Module, layers: list[int] | None) -> list[int]:
    """The sorted distinct layer indices of ``layers`` (all layers if None), checked against the model."""
    count = len(decoder_layers(model))
    if layers is None:
        return list(range(count))
    if isinstance(layers, (int, str)) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count for i in layers
    ):  # a bool is an int in Python: [True] would silently mean layer 1
        raise ValueError(f"layers must be a list of integer layer indices in [0, {count}), got {layers!r}")
    if not layers:
        raise ValueError("layers must name at least one layer (or be None for all)")
    return sorted(set(layers))


@torch.no_grad()
def capture_attention_inputs(
    model: nn.Module, input_ids: Tensor, layers: list[int] | None = None, *, batch_size: int = 1
) -> dict[int, Tensor]:
    """X_ℓ for each layer ℓ in ``layers`` (all if None): layer index → (N, T, d).

    The input of layer ℓ's self-attention (the output of its ``input_layernorm``), captured with
    forward hooks during forward passes of ``model`` as it is (dense, or pruned so far), in
    batches of ``batch_size`` sequences. The pass stops after the last requested layer.
    """
    input_ids = check_input_ids(input_ids, model)
    layers = check_layers(model, layers)
    blocks = decoder_layers(model)
    captured: dict[int, list[Tensor]] = {i: [] for i in layers}

    def hook(index: int):
        def store(module, args, output):
            captured[index].append(output.detach())
            if index == layers[-1]:
                raise _Stop

        return store

    handles = [blocks[i].input_layernorm.register_forward_hook(hook(i)) for i in layers]
    try:
        for rows in batches(input_ids.shape[0], batch_size):
            with contextlib.suppress(_Stop):
                model(input_ids[rows].to(model_device(model)), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return {i: torch.cat(parts) for i, parts in captured.items()}


@torch.no_grad()
def layer_inputs(model: nn.Module, input_ids: Tensor, *, batch_size: int = 1) -> tuple[Tensor, dict]:
    """The hidden states entering layer 0, (N, T, d), and the keyword arguments every decoder
    layer needs, to run the layers one at a time (the SparseGPT/Wanda "sequential" recipe).

    Both are taken from the model's own forward pass (a hook on layer 0 stops it there), so the
    rotary embedding (``position_embeddings`` = (cos, sin), computed once by the model), the
    causal mask (None under SDPA, which applies it itself) and ``position_ids`` are exactly what
    the full forward pass uses. They depend only on T: they are taken from a batch of one
    sequence, so they broadcast over any batch size.
    """
    input_ids = check_input_ids(input_ids, model)
    hidden = [_enter_first_layer(model, input_ids[rows])[0] for rows in batches(len(input_ids), batch_size)]
    return torch.cat(hidden), _enter_first_layer(model, input_ids[:1])[1]


def _enter_first_layer(model: nn.Module, input_ids: Tensor) -> tuple[Tensor, dict]:
    """What layer 0 receives in a forward pass on ``input_ids``: its hidden states and kwargs."""
    seen: dict[str, object] = {}

    def catch(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    handle = decoder_layers(model)[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        model(input_ids.to(model_device(model)), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "hidden" not in seen:
        raise RuntimeError("the forward pass never reached decoder layer 0")
    return seen["hidden"], seen["kwargs"]


@torch.no_grad()
def run_layer(
    model: nn.Module,
    layer_idx: int,
    hidden: Tensor,
    layer_kwargs: dict,
    *,
    batch_size: int = 1,
    overrides: dict[str, Tensor] | None = None,
) -> Tensor:
    """The output of decoder layer ``layer_idx`` on ``hidden`` (N, T, d), in batches;
    ``layer_kwargs`` come from :func:`layer_inputs`. ``overrides`` (parameter name within the
    layer, e.g. ``"self_attn.q_proj.weight"`` → tensor) replace the layer's own parameters for
    this call only (:func:`torch.func.functional_call`): the model is not changed."""
    layer = _layer(model, layer_idx)
    outputs = []
    for rows in batches(hidden.shape[0], batch_size):
        if overrides:
            out = functional_call(layer, overrides, (hidden[rows],), layer_kwargs)
        else:
            out = layer(hidden[rows], **layer_kwargs)
        outputs.append(out[0] if isinstance(out, tuple) else out)
    return torch.cat(outputs)


@torch.no_grad()
def attention_input(model: nn.Module, layer_idx: int, hidden: Tensor) -> Tensor:
    """X_ℓ from the hidden states entering layer ℓ: its input norm applied to them, (N, T, d)."""
    return _layer(model, layer_idx).input_layernorm(hidden)


def _layer(model: nn.Module, layer_idx: int) -> nn.Module:
    layers = decoder_layers(model)
    if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or not 0 <= layer_idx < len(layers):
        raise ValueError(f"layer_idx must be an integer in [0, {len(layers)}), got {layer_idx!r}")
    return layers[layer_idx]
