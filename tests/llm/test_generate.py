"""Self-calibration text: sequences the model samples itself (attnprune.llm.generate)."""

import pytest
import torch

from attnprune.llm.generate import generated_sequences, start_token_id


@pytest.fixture(scope="module")
def model(small_llama):
    return small_llama()


def test_sequences_start_from_the_start_token_and_stay_in_the_vocabulary(model):
    ids = generated_sequences(model, 3, 10, start_id=1, batch_size=2)
    assert ids.shape == (3, 10) and ids.dtype == torch.long
    assert (ids[:, 0] == 1).all() and ids.min() >= 0 and ids.max() < model.config.vocab_size


def test_a_seed_gives_the_same_sequences_and_another_seed_others(model):
    first = generated_sequences(model, 2, 12, start_id=1, seed=3)
    assert torch.equal(first, generated_sequences(model, 2, 12, start_id=1, seed=3))
    assert not torch.equal(first, generated_sequences(model, 2, 12, start_id=1, seed=4))


def test_at_a_low_temperature_each_token_is_the_full_forwards_most_likely_one(model):
    """The cached one-token-a-step forward matches the full forward: near τ → 0 every draw is the
    argmax of the full forward's logits at the position before it (up to a float32 near-tie)."""
    ids = generated_sequences(model, 2, 16, start_id=1, temperature=1e-4)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1].double()  # (2, 15, V): predicts ids[:, 1:]
    chosen = logits.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (2, 15)
    best = logits.max(dim=-1).values
    assert torch.allclose(chosen, best, rtol=1e-4, atol=1e-4 * float(best.abs().max()))


def test_sampling_follows_the_models_distribution(model):
    """The second token's empirical frequencies over many draws match softmax(logits) of the
    first position / τ: total variation about 0.09 here (sampling noise of 4000 draws), where a
    sampler that ignored τ (or drew uniformly) would be about 0.6 away."""
    n, temperature = 4000, 0.1
    ids = generated_sequences(model, n, 2, start_id=1, batch_size=n, temperature=temperature)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1]])).logits[0, -1].double()  # (V,)
    counts = torch.bincount(ids[:, 1], minlength=logits.numel()).double() / n
    assert 0.5 * (counts - torch.softmax(logits / temperature, dim=-1)).abs().sum() < 0.2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_sequences": 0}, "n_sequences"),
        ({"seq_len": 1}, "seq_len"),
        ({"start_id": 512}, "start_id"),
        ({"start_id": -1}, "start_id"),
        ({"seed": 1.5}, "seed"),
        ({"temperature": 0.0}, "temperature"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_refused_by_name(model, kwargs, name):
    arguments = {"n_sequences": 2, "seq_len": 4, "start_id": 1} | kwargs
    with pytest.raises(ValueError, match=name):
        generated_sequences(model, **arguments)


def test_the_start_token_is_bos_else_eos_and_neither_is_refused():
    class Tokenizer:
        def __init__(self, bos, eos):
            self.bos_token_id, self.eos_token_id = bos, eos

    assert start_token_id(Tokenizer(1, 2)) == 1 and start_token_id(Tokenizer(None, 2)) == 2
    with pytest.raises(ValueError, match="start_id"):
        start_token_id(Tokenizer(None, None))
