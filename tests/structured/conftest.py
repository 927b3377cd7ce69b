"""Fixtures of the structured-pruning tests: two small Llama-like models, 4:1 and 3:1 grouped-query
attention, with a small vocabulary (so copying, saving and reloading them is quick), and their
calibration statistics."""

from __future__ import annotations

import copy

import pytest
import torch

from attnprune.llm.models import PAPER_MODEL_SHAPE
from attnprune.structured.stats import capture_layer_stats

SMALL_VOCAB = {"vocab_size": 512, "bos_token_id": 1, "eos_token_id": 2}


def _model(**shape):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**shape)
    return LlamaForCausalLM(config).to(torch.float32).eval()


@pytest.fixture(scope="session")
def llama_4to1():
    """Llama 3.2's shape (rope llama3, 4 query heads per KV head, tied embeddings) in small: 3 layers
    of width 256, 8 heads sharing 2 KV heads of dimension 32, MLP width 384."""
    shape = {**copy.deepcopy(PAPER_MODEL_SHAPE), **SMALL_VOCAB}
    shape |= {"hidden_size": 256, "intermediate_size": 384, "num_hidden_layers": 3, "num_attention_heads": 8}
    return _model(**shape | {"num_key_value_heads": 2, "head_dim": 32})


@pytest.fixture(scope="session")
def smol_3to1():
    """SmolLM2-135M's shape in small (3 query heads per KV head, head_dim 64, rope θ 100000, tied
    embeddings): 3 layers of width 384, 6 heads sharing 2 KV heads, MLP width 512."""
    return _model(
        **SMALL_VOCAB,
        hidden_size=384,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=64,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        max_position_embeddings=2048,
    )


@pytest.fixture(scope="session")
def token_ids():
    """Four seeded sequences of 48 token ids below 512: calibration and evaluation input."""
    return torch.randint(512, (4, 48), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def model_stats(llama_4to1, smol_3to1, token_ids):
    """``{"4:1": stats, "3:1": stats}``: the layer statistics of both models on ``token_ids``."""
    return {
        "4:1": capture_layer_stats(llama_4to1, token_ids, batch_size=2),
        "3:1": capture_layer_stats(smol_3to1, token_ids, batch_size=2),
    }
