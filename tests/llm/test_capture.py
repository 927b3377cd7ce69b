"""Calibration inputs X of each layer's attention: dense capture and the sequential recipe."""

from __future__ import annotations

import copy

import pytest
import torch

from attnprune.llm import capture as calibration
from attnprune.llm.capture import attention_input, capture_attention_inputs, layer_inputs, run_layer


@pytest.fixture(scope="module")
def input_ids(llama3_tokenizer):
    """Three sequences of 24 tokens starting with BOS, as the paper profile's data path makes."""
    text = (
        "It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife. However little known the feelings or views of such "
        "a man may be on his first entering a neighbourhood, this truth is so well fixed."
    )
    from attnprune.llm.data import token_sequences

    return token_sequences(llama3_tokenizer, [text], 3, 24, seed=0)


def full_forward(model, input_ids):
    with torch.no_grad():
        return model(input_ids, output_hidden_states=True, use_cache=False)


def sequential_final_hidden(model, input_ids, batch_size):
    hidden, kwargs = layer_inputs(model, input_ids, batch_size=batch_size)
    for index in range(model.config.num_hidden_layers):
        hidden = run_layer(model, index, hidden, kwargs, batch_size=batch_size)
    with torch.no_grad():
        return model.model.norm(hidden)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_running_layers_one_by_one_gives_the_final_hidden_states(tiny_llama, input_ids, batch_size):
    expected = full_forward(tiny_llama, input_ids).hidden_states[-1]  # after the final norm
    got = sequential_final_hidden(tiny_llama, input_ids, batch_size)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_layer_inputs_carry_the_models_rotary_embedding_and_positions(tiny_llama, input_ids):
    hidden, kwargs = layer_inputs(tiny_llama, input_ids, batch_size=2)
    torch.testing.assert_close(hidden, tiny_llama.model.embed_tokens(input_ids), atol=0, rtol=0)
    cos, sin = kwargs["position_embeddings"]
    assert cos.shape == sin.shape == (1, 24, 64)
    assert torch.equal(kwargs["position_ids"], torch.arange(24)[None])


def test_sequential_path_under_eager_attention_with_an_explicit_mask(tiny_llama, input_ids):
    model = copy.deepcopy(tiny_llama)
    model.set_attn_implementation("eager")
    _, kwargs = layer_inputs(model, input_ids)
    mask = kwargs["attention_mask"]
    assert mask.shape == (1, 1, 24, 24)  # taken from one sequence, it broadcasts over a batch
    future = torch.ones(24, 24, dtype=torch.bool).triu(1)  # causal: no token sees a later one
    assert (mask[0, 0][future] < -1e30).all() and (mask[0, 0][~future] == 0).all()
    expected = full_forward(model, input_ids).hidden_states[-1]
    torch.testing.assert_close(sequential_final_hidden(model, input_ids, 2), expected, atol=1e-5, rtol=1e-5)


def test_capture_is_the_output_of_each_input_norm(tiny_llama, input_ids):
    states = full_forward(tiny_llama, input_ids).hidden_states
    captured = capture_attention_inputs(tiny_llama, input_ids, batch_size=2)
    assert sorted(captured) == [0, 1]
    for index, X in captured.items():
        assert X.shape == (3, 24, 512)
        with torch.no_grad():
            expected = tiny_llama.model.layers[index].input_layernorm(states[index])
        torch.testing.assert_close(X, expected, atol=1e-5, rtol=1e-5)  # float32, batch 2 vs 3: BLAS-dependent rounding
    only = capture_attention_inputs(tiny_llama, input_ids, [1])
    assert list(only) == [1] and torch.allclose(only[1], captured[1], rtol=1e-5, atol=1e-5)


def test_overrides_run_the_layer_with_other_weights_and_leave_it_unchanged(tiny_llama, input_ids):
    hidden, kwargs = layer_inputs(tiny_llama, input_ids, batch_size=2)
    attention = tiny_llama.model.layers[0].self_attn
    dense = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    halved = {
        name: w.detach().clone()
        for name, w in (("q_proj.weight", attention.q_proj.weight), ("k_proj.weight", attention.k_proj.weight))
    }
    for w in halved.values():
        w[:, ::2] = 0
    overrides = {f"self_attn.{name}": w for name, w in halved.items()}
    got = run_layer(tiny_llama, 0, hidden, kwargs, batch_size=2, overrides=overrides)
    assert all(torch.equal(v, dense[k]) for k, v in tiny_llama.state_dict().items())
    model = copy.deepcopy(tiny_llama)  # the same weights written in: the same computation, exactly
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.copy_(halved["q_proj.weight"])
        model.model.layers[0].self_attn.k_proj.weight.copy_(halved["k_proj.weight"])
    assert torch.equal(got, run_layer(model, 0, hidden, kwargs, batch_size=2))
    X1 = attention_input(model, 1, got)  # layer 1 sees the pruned layer 0, as a dense capture of that model does
    torch.testing.assert_close(X1, capture_attention_inputs(model, input_ids, [1])[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(X1, capture_attention_inputs(tiny_llama, input_ids, [1])[1], atol=1e-3)


def test_arguments_are_checked(tiny_llama, input_ids):
    with pytest.raises(ValueError, match="input_ids"):
        capture_attention_inputs(tiny_llama, input_ids.float())
    with pytest.raises(ValueError, match="input_ids"):
        layer_inputs(tiny_llama, input_ids[0])
    with pytest.raises(ValueError, match="layers"):
        capture_attention_inputs(tiny_llama, input_ids, [2])
    with pytest.raises(ValueError, match="batch_size"):
        capture_attention_inputs(tiny_llama, input_ids, batch_size=0)
    hidden, kwargs = layer_inputs(tiny_llama, input_ids[:1])
    with pytest.raises(ValueError, match="layer_idx"):
        run_layer(tiny_llama, 2, hidden, kwargs)
    with pytest.raises(ValueError, match="decoder layers"):
        calibration.attention_input(torch.nn.Linear(2, 2), 0, hidden)
