"""Physical slicing (spec §5): slicing is exact (= zeroing the pruned o_proj/down_proj columns), the
sliced model is smaller, runs with a KV cache, and save → reload gives bit-identical logits."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from attnprune.structured.allocation import Allocation, AllocationConfig, allocate
from attnprune.structured.compensation import compensate_model, head_columns, pruned_of
from attnprune.structured.layers import layer_shapes
from attnprune.structured.scores import score_model
from attnprune.structured.slicing import CONFIG_KEY, SlicedLlamaForCausalLM, load_sliced, slice_model
from attnprune.structured.stats import capture_layer_stats


def _allocation(model, stats, ratio=0.3, **config):
    return allocate(score_model(model, stats, "numerical"), layer_shapes(model), AllocationConfig(ratio, **config))


def _zeroed(model, allocation):
    """A copy of ``model`` whose pruned o_proj columns and down_proj columns are zero."""
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for layer, heads, channels in zip(zeroed.model.layers, allocation.heads, allocation.channels, strict=True):
            o_proj, down_proj = layer.self_attn.o_proj, layer.mlp.down_proj
            o_proj.weight[:, pruned_of(head_columns(heads, layer.self_attn.head_dim), o_proj.in_features)] = 0
            down_proj.weight[:, pruned_of(channels, down_proj.in_features)] = 0
    return zeroed


def test_slicing_the_tiny_llama_equals_zeroing_its_pruned_columns(tiny_llama):
    ids = torch.randint(1000, (2, 20), generator=torch.Generator().manual_seed(1))
    stats = capture_layer_stats(tiny_llama, ids)
    allocation = _allocation(tiny_llama, stats, 0.4, gqa="group", min_heads=1)
    assert any(h.numel() < 8 for h in allocation.heads)  # a KV group goes (4:1, group rule)
    with torch.no_grad():
        expected = _zeroed(tiny_llama, allocation)(ids).logits
        sliced = slice_model(tiny_llama, allocation)
        got = sliced(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert sliced.model.layers[0].self_attn.k_proj.out_features == 64 * allocation.heads[0].numel() // 4


@pytest.mark.parametrize("fixture", ["llama_4to1", "smol_3to1"])
@pytest.mark.parametrize("gqa", ["query", "group"])
def test_slicing_is_exact_and_smaller(request, model_stats, token_ids, fixture, gqa):
    model = request.getfixturevalue(fixture)
    stats = model_stats["4:1" if fixture == "llama_4to1" else "3:1"]
    allocation = _allocation(model, stats, 0.35, gqa=gqa)
    with torch.no_grad():
        expected = _zeroed(model, allocation)(token_ids).logits
        sliced = slice_model(model, allocation)
        got = sliced(token_ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    dense_count = sum(p.numel() for p in model.parameters())
    assert dense_count - sum(p.numel() for p in sliced.parameters()) == allocation.removed_params
    assert sum(p.numel() for p in model.parameters()) == dense_count  # the model is not changed


def test_the_sliced_model_runs_with_a_kv_cache(smol_3to1, model_stats, token_ids):
    sliced = slice_model(smol_3to1, _allocation(smol_3to1, model_stats["3:1"], 0.4))
    with torch.no_grad():
        full = sliced(token_ids[:1]).logits[0, -1]
        cache = sliced(token_ids[:1, :-1], use_cache=True).past_key_values
        step = sliced(token_ids[:1, -1:], past_key_values=cache, use_cache=True).logits[0, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4 * full.abs().max().item())


@pytest.mark.parametrize("fixture", ["llama_4to1", "smol_3to1"])
@pytest.mark.parametrize(("allocation_kind", "compensation"), [("uniform", "refit"), ("global", "bias")])
def test_save_and_reload_give_bit_identical_logits(
    request, model_stats, token_ids, tmp_path, fixture, allocation_kind, compensation
):
    model = request.getfixturevalue(fixture)
    stats = model_stats["4:1" if fixture == "llama_4to1" else "3:1"]
    allocation = _allocation(model, stats, 0.4, allocation=allocation_kind)
    sliced = slice_model(model, allocation, compensate_model(model, stats, allocation, compensation))
    sliced.save_pretrained(tmp_path)
    reloaded = load_sliced(tmp_path)
    assert isinstance(reloaded, SlicedLlamaForCausalLM)
    with torch.no_grad():
        assert torch.equal(reloaded(token_ids).logits, sliced(token_ids).logits)
    sizes = json.loads((tmp_path / "config.json").read_text())[CONFIG_KEY]
    assert [s["num_attention_heads"] for s in sizes] == [h.numel() for h in allocation.heads]
    assert [s["intermediate_size"] for s in sizes] == [c.numel() for c in allocation.channels]
    assert all(s["down_proj_bias"] == (compensation == "bias") for s in sizes)
    if allocation_kind == "global":
        assert len({(s["num_attention_heads"], s["intermediate_size"]) for s in sizes}) > 1  # non-uniform


def test_a_plain_from_pretrained_refuses_a_sliced_checkpoint(smol_3to1, model_stats, tmp_path):
    from transformers import AutoModelForCausalLM

    slice_model(smol_3to1, _allocation(smol_3to1, model_stats["3:1"], 0.3)).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="mismatch"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_bad_inputs_name_the_argument(smol_3to1, model_stats, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    allocation = _allocation(smol_3to1, model_stats["3:1"], 0.3)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match=r"model must be a Llama-like causal LM.*GPT2LMHeadModel"):
        slice_model(gpt2, allocation)
    with pytest.raises(ValueError, match="model must be a Llama-like"):
        capture_layer_stats(gpt2, torch.zeros(1, 4, dtype=torch.long))
    uneven = Allocation([torch.tensor([0, 1, 3]), *allocation.heads[1:]], allocation.channels, 0, 1)
    with pytest.raises(ValueError, match=r"allocation\.heads of layer 0 .* unequal numbers of query heads per KV"):
        slice_model(smol_3to1, uneven)
    outside = Allocation(allocation.heads, [torch.tensor([0, 512]), *allocation.channels[1:]], 0, 1)
    with pytest.raises(ValueError, match=r"allocation.channels\[0\] must hold distinct indices in \[0, 512\)"):
        slice_model(smol_3to1, outside)
    with pytest.raises(ValueError, match="allocation must describe the model's 3 layers"):
        slice_model(smol_3to1, Allocation(allocation.heads[:1], allocation.channels[:1], 0, 1))
    smol_3to1.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is not a sliced Llama checkpoint"):
        load_sliced(tmp_path)
