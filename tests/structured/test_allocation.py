"""The allocation: the grouped-query units, the global cut by real parameter counts, the uniform
cut, the minimum kept per layer, and the config's errors."""

from __future__ import annotations

import pytest
import torch

from attnprune.structured import allocation as al
from attnprune.structured.layers import LayerShape, layer_shapes
from attnprune.structured.scores import LayerScores, ScoreOptions, score_model
from attnprune.structured.slicing import slice_model

GQA_4TO1 = LayerShape(heads=8, kv_heads=2, head_dim=4, hidden=16, channels=10, attention_bias=False, mlp_bias=False)


def test_query_rule_removes_one_head_per_group_and_keeps_the_kv_heads():
    scores = torch.tensor([0.4, 0.1, 0.3, 0.2, 0.9, 0.6, 0.5, 0.8])
    units = al.attention_units(scores, GQA_4TO1, "query")
    assert units.heads.tolist() == [[1, 6], [3, 5], [2, 7], [0, 4]]  # r-th weakest of group 0 and of group 1
    assert torch.all(units.scores.diff() >= 0)  # removed in order by any cut in score order
    assert units.params.tolist() == [2 * 4 * (2 * 16)] * 4  # two heads: q rows and o columns, no k/v
    assert al.kept_kv_heads(torch.tensor([2, 7]), 4).tolist() == [0, 1]


def test_group_rule_removes_whole_kv_groups_with_their_kv_rows():
    scores = torch.tensor([0.4, 0.1, 0.3, 0.2, 0.9, 0.6, 0.5, 0.8])
    units = al.attention_units(scores, GQA_4TO1, "group")
    assert units.heads.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    torch.testing.assert_close(units.scores, torch.tensor([0.25, 0.7], dtype=torch.float64))
    assert units.params.tolist() == [4 * 4 * 32 + 2 * 4 * 16] * 2
    assert al.kept_kv_heads(torch.tensor([4, 5, 6, 7]), 4).tolist() == [1]


def test_multi_head_attention_removes_single_heads_under_both_rules():
    mha = LayerShape(heads=3, kv_heads=3, head_dim=4, hidden=16, channels=10, attention_bias=True, mlp_bias=False)
    for rule in al.GQA_RULES:
        units = al.attention_units(torch.tensor([0.3, 0.1, 0.2]), mha, rule)
        assert units.heads.tolist() == [[0], [1], [2]]
        assert units.params.tolist() == [mha.head_params + mha.kv_params] * 3 == [4 * 33 + 2 * 4 * 17] * 3


@pytest.mark.parametrize("fixture", ["llama_4to1", "smol_3to1"])
@pytest.mark.parametrize("gqa", al.GQA_RULES)
def test_global_cut_counts_the_parameters_really_removed(request, model_stats, fixture, gqa):
    model = request.getfixturevalue(fixture)
    stats = model_stats["4:1" if fixture == "llama_4to1" else "3:1"]
    shapes = layer_shapes(model)
    allocation = al.allocate(score_model(model, stats, "numerical"), shapes, al.AllocationConfig(0.3, gqa=gqa))
    sliced = slice_model(model, allocation)
    dense_params = sum(shape.total_params for shape in shapes)
    assert dense_params == _linear_params(model)
    assert _linear_params(model) - _linear_params(sliced) == allocation.removed_params
    biggest = max(al.attention_units(torch.zeros(s.heads), s, gqa).params.max().item() for s in shapes)
    assert abs(allocation.removed_params - 0.3 * dense_params) <= biggest / 2  # the closest cut


def _linear_params(model) -> int:
    return sum(
        p.numel() for name, p in model.model.layers.named_parameters() if "_proj" in name
    )  # the seven linear layers' weights and biases (not the norms)


def test_uniform_cut_removes_the_same_share_of_every_layer(smol_3to1, model_stats):
    scores = score_model(smol_3to1, model_stats["3:1"], "wanda-sp")
    allocation = al.allocate(scores, layer_shapes(smol_3to1), al.AllocationConfig(0.5, allocation="uniform"))
    for layer_scores, heads, channels in zip(scores, allocation.heads, allocation.channels, strict=True):
        assert heads.numel() == 2  # 3 units of 2 heads (one per group): round(1.5) = 2 removed, 1 kept
        assert channels.numel() == 256
        assert channels.tolist() == sorted(torch.argsort(layer_scores.channels)[256:].tolist())  # the strongest


def test_global_cut_keeps_the_minimum_in_every_layer(llama_4to1):
    shapes = layer_shapes(llama_4to1)
    scores = [
        LayerScores(torch.full((8,), -1.0 if i == 0 else 1.0), torch.full((384,), -1.0 if i == 0 else 1.0))
        for i in range(3)
    ]  # fmt: skip  (layer 0 is the weakest everywhere)
    config = al.AllocationConfig(0.3, min_heads=4, min_channels=100)
    allocation = al.allocate(scores, shapes, config)
    assert allocation.heads[0].numel() == 4 and allocation.channels[0].numel() == 100
    assert allocation.ratio == pytest.approx(0.3, abs=0.05)


def test_an_unreachable_ratio_names_the_ratio(llama_4to1):
    scores = [LayerScores(torch.rand(8), torch.rand(384)) for _ in range(3)]
    with pytest.raises(ValueError, match=r"ratio 0\.95 cannot be reached"):
        al.allocate(scores, layer_shapes(llama_4to1), al.AllocationConfig(0.95, min_heads=8))


def test_a_uniform_ratio_that_empties_a_layer_names_the_ratio(smol_3to1):
    scores = [LayerScores(torch.rand(6), torch.rand(512)) for _ in range(3)]
    with pytest.raises(ValueError, match=r"ratio 0\.9 would leave 0 of the 3 attention units of layer 0"):
        al.allocate(scores, layer_shapes(smol_3to1), al.AllocationConfig(0.9, allocation="uniform"))


def test_ratio_zero_keeps_everything(smol_3to1, model_stats):
    scores = score_model(smol_3to1, model_stats["3:1"], "flap", ScoreOptions())
    allocation = al.allocate(scores, layer_shapes(smol_3to1), al.AllocationConfig(0.0))
    assert allocation.removed_params == 0
    assert all(
        h.tolist() == list(range(6)) and c.numel() == 512
        for h, c in zip(allocation.heads, allocation.channels, strict=True)
    )


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"ratio": 1.0}, "ratio"), ({"ratio": -0.01}, "ratio"), ({"ratio": "0.5"}, "ratio"),
     ({"ratio": 0.5, "score": "obd"}, "score"), ({"ratio": 0.5, "allocation": "layerwise"}, "allocation"),
     ({"ratio": 0.5, "gqa": "kv"}, "gqa"), ({"ratio": 0.5, "min_heads": 0}, "min_heads"),
     ({"ratio": 0.5, "min_channels": 1.5}, "min_channels")],
)  # fmt: skip
def test_bad_config_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        al.AllocationConfig(**kwargs)


def test_a_minimum_above_the_layer_names_the_argument(smol_3to1):
    scores = [LayerScores(torch.rand(6), torch.rand(512)) for _ in range(3)]
    with pytest.raises(ValueError, match="min_heads"):
        al.allocate(scores, layer_shapes(smol_3to1), al.AllocationConfig(0.2, min_heads=7))
    with pytest.raises(ValueError, match="scores has 1 layers"):
        al.allocate(scores[:1], layer_shapes(smol_3to1), al.AllocationConfig(0.2))
