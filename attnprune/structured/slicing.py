"""A physically smaller model: sliced q/k/v/o per head and gate/up/down per channel (spec §5).

``LlamaConfig`` (transformers 5.x) has one ``num_attention_heads``, ``num_key_value_heads`` and
``intermediate_size`` for every layer, and it even refuses a head count that does not divide
``hidden_size`` (e.g. 6 heads of a 512-wide model). So it cannot describe a pruned model, not even
a uniform one in general. We therefore keep the dense config and add one key to it,
``structured_layers``: per layer, the kept ``num_attention_heads``, ``num_key_value_heads``,
``intermediate_size`` and whether ``o_proj``/``down_proj`` carry a bias (FLAP's compensation adds
one). :class:`SlicedLlamaForCausalLM` is ``LlamaForCausalLM`` with each layer built to those
sizes, so the checkpoint is a plain ``save_pretrained`` folder and reloads in one documented call:

    model.save_pretrained(folder)           # config.json carries structured_layers
    model = load_sliced(folder)             # = SlicedLlamaForCausalLM.from_pretrained(folder)

A plain ``AutoModelForCausalLM.from_pretrained(folder)`` builds the dense shapes and stops with
transformers' size-mismatch error; it never loads a sliced checkpoint silently wrong. Attention
runs in HF's own code: each layer's ``num_key_value_groups`` is set to its h'/g', which requires
every kept KV head to keep the same number of query heads (the allocation's GQA rules ensure it).
Runs with the dynamic cache (the default of ``generate``); a static cache sized from the config's
dense head counts is not supported.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM

from .allocation import Allocation, kept_kv_heads
from .compensation import head_columns
from .layers import llama_layers

CONFIG_KEY = "structured_layers"
"""The config.json key holding the per-layer sizes of a sliced model."""


@dataclass(frozen=True)
class LayerSizes:
    """The sizes of one sliced decoder layer, as stored under ``config.structured_layers``."""

    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    o_proj_bias: bool
    down_proj_bias: bool


class SlicedLlamaForCausalLM(LlamaForCausalLM):
    """``LlamaForCausalLM`` whose decoder layer ℓ has the sizes ``config.structured_layers[ℓ]``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        sizes = getattr(config, CONFIG_KEY, None)
        if not isinstance(sizes, list) or len(sizes) != config.num_hidden_layers:
            raise ValueError(f"config.{CONFIG_KEY} must list the sizes of all {config.num_hidden_layers} layers")
        for layer, layer_sizes in zip(self.model.layers, sizes, strict=True):
            _rebuild(layer, LayerSizes(**layer_sizes), config)


def _rebuild(layer: nn.Module, sizes: LayerSizes, config: LlamaConfig) -> None:
    """Replace the seven linear layers of ``layer`` by (uninitialised-content) ones of ``sizes``."""
    attention, mlp = layer.self_attn, layer.mlp
    d, k = config.hidden_size, attention.head_dim
    h, g, m = sizes.num_attention_heads, sizes.num_key_value_heads, sizes.intermediate_size
    if h % g:
        raise ValueError(f"{CONFIG_KEY}: {h} query heads cannot share {g} KV heads equally")
    attention.q_proj = nn.Linear(d, h * k, bias=config.attention_bias)
    attention.k_proj = nn.Linear(d, g * k, bias=config.attention_bias)
    attention.v_proj = nn.Linear(d, g * k, bias=config.attention_bias)
    attention.o_proj = nn.Linear(h * k, d, bias=sizes.o_proj_bias)
    attention.num_key_value_groups = h // g  # HF's repeat_kv / SDPA enable_gqa read this per module
    mlp.gate_proj = nn.Linear(d, m, bias=config.mlp_bias)
    mlp.up_proj = nn.Linear(d, m, bias=config.mlp_bias)
    mlp.down_proj = nn.Linear(m, d, bias=sizes.down_proj_bias)
    mlp.intermediate_size = m


Replacement = dict[str, tuple[Tensor, Tensor | None]]


@torch.no_grad()
def slice_model(
    model: nn.Module, allocation: Allocation, replacements: list[Replacement] | None = None
) -> SlicedLlamaForCausalLM:
    """A new, physically smaller copy of the Llama-like ``model`` keeping, in layer ℓ, the query heads
    ``allocation.heads[ℓ]`` (q rows, o columns), the KV heads they read (k and v rows) and the MLP
    channels ``allocation.channels[ℓ]`` (gate and up rows, down columns). ``replacements[ℓ]`` may give
    the new (weight, bias) of ``"self_attn.o_proj"`` / ``"mlp.down_proj"`` on the kept columns (from
    :func:`~attnprune.structured.compensation.compensate_model`). ``model`` is not changed."""
    layers = llama_layers(model)
    if len(allocation.heads) != len(layers) or len(allocation.channels) != len(layers):
        raise ValueError(f"allocation must describe the model's {len(layers)} layers, got {len(allocation.heads)}")
    if replacements is not None and len(replacements) != len(layers):
        raise ValueError(f"replacements must hold one dict per layer ({len(layers)}), got {len(replacements)}")
    state = {name: tensor for name, tensor in model.state_dict().items() if ".layers." not in name}
    sizes = []
    for index, layer in enumerate(layers):
        extra = replacements[index] if replacements is not None else {}
        layer_state, layer_sizes = _slice_layer(
            layer, allocation.heads[index], allocation.channels[index], extra, index
        )
        state |= {f"model.layers.{index}.{name}": tensor for name, tensor in layer_state.items()}
        sizes.append(asdict(layer_sizes))
    config = copy.deepcopy(model.config)
    setattr(config, CONFIG_KEY, sizes)
    sliced = SlicedLlamaForCausalLM(config).to(dtype=model.dtype, device=model.device)
    sliced.load_state_dict(state, strict=True)
    sliced.generation_config = copy.deepcopy(model.generation_config)
    return sliced.eval()


def _slice_layer(layer: nn.Module, heads: Tensor, channels: Tensor, extra: Replacement, index: int):
    """The sliced state dict of one decoder layer (names relative to it) and its :class:`LayerSizes`."""
    attention, mlp = layer.self_attn, layer.mlp
    k = attention.head_dim
    heads = _check_kept("allocation.heads", heads, attention.q_proj.out_features // k, index)
    channels = _check_kept("allocation.channels", channels, mlp.down_proj.in_features, index)
    kv = _kv_heads(heads, attention.q_proj.out_features // attention.k_proj.out_features, index)
    q_rows, kv_rows = head_columns(heads, k), head_columns(kv, k)
    rows = {"self_attn.q_proj": q_rows, "self_attn.k_proj": kv_rows, "self_attn.v_proj": kv_rows}
    rows |= {"mlp.gate_proj": channels, "mlp.up_proj": channels}
    out = {name: tensor for name, tensor in layer.state_dict().items() if "_proj" not in name}  # the RMSNorms
    for name, kept in rows.items():  # output rows: weight and bias
        linear = layer.get_submodule(name)
        out[f"{name}.weight"] = linear.weight[kept]
        if linear.bias is not None:
            out[f"{name}.bias"] = linear.bias[kept]
    for name, kept in (("self_attn.o_proj", q_rows), ("mlp.down_proj", channels)):  # input columns
        linear = layer.get_submodule(name)
        weight, bias = extra.get(name, (linear.weight[:, kept], linear.bias))
        if weight.shape != (linear.out_features, kept.numel()):
            raise ValueError(f"replacements[{index}][{name!r}] weight must be {(linear.out_features, kept.numel())}")
        out[f"{name}.weight"] = weight
        if bias is not None:
            out[f"{name}.bias"] = bias
    has_bias = ("self_attn.o_proj.bias" in out, "mlp.down_proj.bias" in out)
    return out, LayerSizes(heads.numel(), kv.numel(), channels.numel(), *has_bias)


def _kv_heads(heads: Tensor, group_size: int, index: int) -> Tensor:
    """The KV heads the kept query heads ``heads`` read; each must keep the same number of them,
    since HF's ``LlamaAttention`` repeats every KV head ``num_key_value_groups`` times."""
    kv = kept_kv_heads(heads, group_size)
    per_head = heads.numel() // kv.numel()
    if heads.numel() % kv.numel() or not torch.equal(heads // group_size, kv.repeat_interleave(per_head)):
        raise ValueError(
            f"allocation.heads of layer {index} ({heads.tolist()}) keeps unequal numbers of query heads per KV "
            "head; HF LlamaAttention repeats every KV head equally: use an allocation from allocate()"
        )
    return kv


def _check_kept(name: str, kept: Tensor, width: int, layer: int) -> Tensor:
    if not isinstance(kept, Tensor) or kept.dtype != torch.long or kept.ndim != 1 or kept.numel() == 0:
        raise ValueError(f"{name}[{layer}] must be a non-empty 1-D LongTensor of kept indices, got {kept!r}")
    kept = kept.sort().values
    if int(kept[0]) < 0 or int(kept[-1]) >= width or kept.unique().numel() != kept.numel():
        raise ValueError(f"{name}[{layer}] must hold distinct indices in [0, {width}), got {kept.tolist()}")
    return kept


def load_sliced(
    folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> SlicedLlamaForCausalLM:
    """THE documented way to reload a sliced checkpoint written by ``save_pretrained``, uniform or
    not: ``SlicedLlamaForCausalLM.from_pretrained`` on a folder whose config.json has
    ``structured_layers``; in evaluation mode, in ``dtype`` on ``device``."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    if not isinstance(config, LlamaConfig) or not isinstance(getattr(config, CONFIG_KEY, None), list):
        raise ValueError(
            f"folder {os.fspath(folder)!r} is not a sliced Llama checkpoint (no {CONFIG_KEY} in its config.json); "
            "load a dense model with attnprune.llm.models.load_model"
        )
    model = SlicedLlamaForCausalLM.from_pretrained(folder, config=config, dtype=dtype)
    return model.to(device).eval()
