"""The Llama-like decoder layer this package can slice, and its shape per layer.

A model is Llama-like when it is a ``transformers`` ``LlamaForCausalLM`` (SmolLM2 and Llama 3.x
are): every decoder layer has ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj``
``nn.Linear`` modules, SwiGLU, and heads laid out as HF's ``LlamaAttention`` does (query head j
reads KV head j // (h/g)). Anything else is refused with a clear error rather than sliced wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import LlamaForCausalLM

from ..llm.models import decoder_layers

ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LINEARS = ("gate_proj", "up_proj", "down_proj")


def llama_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of ``model``, checked to be Llama-like (see the module docstring)."""
    if not isinstance(model, LlamaForCausalLM):
        raise ValueError(
            f"model must be a Llama-like causal LM (transformers LlamaForCausalLM, e.g. SmolLM2 or Llama 3.2), "
            f"got {type(model).__name__}; structured pruning slices q/k/v/o per head and gate/up/down per channel"
        )
    layers = decoder_layers(model)
    for index, layer in enumerate(layers):
        for parent, names in (("self_attn", ATTENTION_LINEARS), ("mlp", MLP_LINEARS)):
            for name in names:
                if not isinstance(getattr(getattr(layer, parent, None), name, None), nn.Linear):
                    raise ValueError(f"model: decoder layer {index} has no nn.Linear {parent}.{name}; not Llama-like")
    return layers


@dataclass(frozen=True)
class LayerShape:
    """The sizes of one decoder layer: h query heads sharing g KV heads of dimension k, MLP width m,
    residual width d, and which linear layers carry a bias."""

    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    channels: int
    attention_bias: bool
    mlp_bias: bool

    @property
    def group_size(self) -> int:
        """Query heads per KV head (h / g)."""
        return self.heads // self.kv_heads

    @property
    def head_params(self) -> int:
        """Parameters of one query head: its k rows of q_proj (and their bias) and k columns of o_proj."""
        return self.head_dim * (2 * self.hidden + self.attention_bias)

    @property
    def kv_params(self) -> int:
        """Parameters of one KV head: its k rows of k_proj and of v_proj (and their biases)."""
        return 2 * self.head_dim * (self.hidden + self.attention_bias)

    @property
    def channel_params(self) -> int:
        """Parameters of one MLP channel: a row of gate_proj and up_proj, a column of down_proj."""
        return 3 * self.hidden + 2 * self.mlp_bias

    @property
    def total_params(self) -> int:
        """Every parameter of the layer's seven linear layers (weights and biases)."""
        fixed = self.hidden * (self.attention_bias + self.mlp_bias)  # o_proj and down_proj biases
        return (
            self.heads * self.head_params + self.kv_heads * self.kv_params + self.channels * self.channel_params + fixed
        )


def layer_shapes(model: nn.Module) -> list[LayerShape]:
    """The :class:`LayerShape` of every decoder layer, read from its modules (so a sliced model too)."""
    shapes = []
    for layer in llama_layers(model):
        attention, mlp = layer.self_attn, layer.mlp
        k = attention.head_dim
        shapes.append(
            LayerShape(
                heads=attention.q_proj.out_features // k,
                kv_heads=attention.k_proj.out_features // k,
                head_dim=k,
                hidden=attention.q_proj.in_features,
                channels=mlp.down_proj.in_features,
                attention_bias=attention.q_proj.bias is not None,
                mlp_bias=mlp.gate_proj.bias is not None,
            )
        )
    return shapes
