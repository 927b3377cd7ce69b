"""The driver of a whole structured pruning (capture → scores → allocation → compensation → slicing),
its checks from config.json alone, and the loading of a sliced checkpoint with its tokenizer."""

from __future__ import annotations

import pytest
import torch

from attnprune.structured.allocation import AllocationConfig, allocate
from attnprune.structured.compensation import compensate_model
from attnprune.structured.layers import layer_shapes
from attnprune.structured.prune import (
    StructuredConfig,
    check_reachable,
    is_sliced,
    layer_shapes_of_config,
    load_pruned,
    parameter_count,
    prune_structured,
)
from attnprune.structured.scores import ScoreOptions, score_model
from attnprune.structured.slicing import slice_model
from attnprune.structured.stats import capture_layer_stats


def test_the_driver_is_the_composition_of_the_five_steps(llama_4to1, token_ids):
    config = StructuredConfig(0.3, score="wanda-sp", compensation="refit", batch_size=2)
    sliced, report = prune_structured(llama_4to1, token_ids, config)
    stats = capture_layer_stats(llama_4to1, token_ids, batch_size=2)
    scores = score_model(llama_4to1, stats, "wanda-sp", ScoreOptions(ratio=0.3))
    allocation = allocate(scores, layer_shapes(llama_4to1), AllocationConfig(0.3, score="wanda-sp"))
    by_hand = slice_model(llama_4to1, allocation, compensate_model(llama_4to1, stats, allocation, "refit"))
    with torch.no_grad():
        assert torch.equal(sliced(token_ids).logits, by_hand(token_ids).logits)
    assert report.parameters_before == parameter_count(llama_4to1)
    assert report.parameters_after == parameter_count(sliced) < report.parameters_before
    assert report.parameters_before - report.parameters_after == report.linear_parameters_removed
    assert report.ratio == pytest.approx(0.3, abs=0.05) and 0 < report.parameter_ratio < report.ratio
    assert [layer.kept_heads for layer in report.layers] == [h.numel() for h in allocation.heads]
    assert report.n_calibration == 4 and report.seq_len == 48 and set(report.seconds) >= {"statistics", "slicing"}
    summary = report.to_dict()
    assert summary["config"]["score"] == "wanda-sp" and len(summary["per_layer"]) == 3


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"ratio": 1.0}, "ratio"),
        ({"ratio": 0.3, "score": "ours"}, "score"),
        ({"ratio": 0.3, "compensation": "obs"}, "compensation"),
        ({"ratio": 0.3, "allocation": "layerwise"}, "allocation"),
        ({"ratio": 0.3, "min_heads": 0}, "min_heads"),
        ({"ratio": 0.3, "batch_size": 0}, "batch_size"),
        ({"ratio": 0.3, "damping": -1.0}, "damping"),
    ],
)
def test_a_bad_config_names_its_field(fields, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        StructuredConfig(**fields)


def test_the_driver_takes_a_structured_config_only(llama_4to1, token_ids):
    with pytest.raises(ValueError, match="StructuredConfig"):
        prune_structured(llama_4to1, token_ids, {"ratio": 0.3})


def test_shapes_from_the_config_alone_match_the_modules(smol_3to1, model_stats):
    assert layer_shapes_of_config(smol_3to1.config) == layer_shapes(smol_3to1)
    assert not is_sliced(smol_3to1.config)
    stats = model_stats["3:1"]
    allocation = allocate(score_model(smol_3to1, stats, "magnitude"), layer_shapes(smol_3to1), AllocationConfig(0.4))
    sliced = slice_model(smol_3to1, allocation)
    assert is_sliced(sliced.config) and layer_shapes_of_config(sliced.config) == layer_shapes(sliced)


def test_unreachable_ratios_are_found_from_the_sizes_alone(smol_3to1):
    shapes = layer_shapes_of_config(smol_3to1.config)
    check_reachable(shapes, StructuredConfig(0.5))
    with pytest.raises(ValueError, match=r"ratio 0.9 would leave 0 of the 3 attention units of layer 0"):
        check_reachable(shapes, StructuredConfig(0.9, allocation="uniform"))
    with pytest.raises(ValueError, match=r"ratio 0.99 cannot be reached"):
        check_reachable(shapes, StructuredConfig(0.99))
    with pytest.raises(ValueError, match=r"^min_heads"):
        check_reachable(shapes, StructuredConfig(0.2, min_heads=7))


def test_a_config_that_is_not_llama_like_is_refused():
    from transformers import GPT2Config

    with pytest.raises(ValueError, match=r"^model: .*Llama-like.*'gpt2'"):
        layer_shapes_of_config(GPT2Config(n_layer=1))


def test_load_pruned_needs_the_tokenizer_files(llama_4to1, model_stats, tmp_path):
    allocation = allocate(
        score_model(llama_4to1, model_stats["4:1"], "magnitude"), layer_shapes(llama_4to1), AllocationConfig(0.3)
    )
    slice_model(llama_4to1, allocation).save_pretrained(tmp_path / "sliced")
    with pytest.raises(ValueError, match="no tokenizer files"):
        load_pruned(str(tmp_path / "sliced"))
