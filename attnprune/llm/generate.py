"""Text the dense model writes itself: a calibration source that belongs to no evaluation text.

Self-calibration (Williams et al., 2025, "Self-calibration for language model quantization and
pruning") replaces the calibration corpus by sequences sampled from the model being compressed,
so that the calibration inputs X follow the model's own distribution rather than one domain's.
The tuning run of chapter 11's refit (``scripts/tune_refit.py --calibration``) uses it to ask
whether the refit's weak transfer from Austen to news text is a matter of the calibration text.

**[choice]** Plain ancestral sampling at temperature τ = 1 (no top-k, no top-p), from the start
token alone, never stopping at an end-of-text token (what follows it reads as a new document, as
in a concatenated corpus). One ``torch.Generator`` seeded by ``seed`` draws every token, so a rerun
on the same machine gives the same ids; on another CPU or BLAS, float32 logits that differ in the
last bit may, rarely, flip one draw and everything after it in that sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnprune.core.checks import check_positive, check_positive_int
from attnprune.llm.batches import batches, model_device
from attnprune.llm.data import _check_seq_len


def start_token_id(tokenizer) -> int:
    """The token every generated sequence starts from: the tokenizer's BOS, else its EOS (what a
    document follows in a concatenated corpus)."""
    for token in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token is not None:
            return int(token)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token; pass start_id to generated_sequences")


def generated_sequences(
    model: nn.Module,
    n_sequences: int,
    seq_len: int,
    *,
    start_id: int,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> torch.LongTensor:
    """(n_sequences, seq_len) token ids: ``start_id``, then seq_len − 1 tokens, each drawn from
    softmax(logits / τ) of ``model`` given the tokens before it (key/value cache), ``batch_size``
    sequences at a time, deterministic in ``seed`` (module docstring)."""
    _check_arguments(model, n_sequences, seq_len, start_id, seed, temperature, batch_size)
    generator = torch.Generator().manual_seed(seed)
    device = model_device(model)
    chunks = []
    for rows in batches(n_sequences, batch_size):
        start = torch.full((rows.stop - rows.start, 1), start_id, dtype=torch.long)  # (b, 1)
        chunks.append(_sample(model, start, seq_len, temperature, generator, device))
    return torch.cat(chunks)


@torch.no_grad()
def _sample(
    model: nn.Module, start: Tensor, seq_len: int, temperature: float, generator: torch.Generator, device
) -> Tensor:
    """One batch: ``start`` (b, 1) extended to (b, seq_len) by sampling, one token a forward."""
    tokens, cache = [start], None
    for _ in range(seq_len - 1):
        out = model(input_ids=tokens[-1].to(device), past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        probs = torch.softmax(out.logits[:, -1].double().cpu() / temperature, dim=-1)  # (b, V)
        tokens.append(torch.multinomial(probs, 1, generator=generator))  # (b, 1)
    return torch.cat(tokens, dim=1)  # (b, seq_len)


def _check_arguments(
    model: nn.Module, n_sequences: int, seq_len: int, start_id: int, seed: int, temperature: float, batch_size: int
) -> None:
    check_positive_int("n_sequences", n_sequences)
    check_positive_int("batch_size", batch_size)
    _check_seq_len(seq_len)
    vocab = model.config.vocab_size
    if isinstance(start_id, bool) or not isinstance(start_id, int) or not 0 <= start_id < vocab:
        raise ValueError(f"start_id must be a token id in [0, {vocab}), got {start_id!r}; see start_token_id")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    check_positive("temperature", temperature)
