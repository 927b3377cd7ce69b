"""The experiment driver of the structured-pruning chapter: nested statistics, recipe runs, checkpoints."""

from __future__ import annotations

import pytest
import torch

from attnprune.experiments.structured import (
    FLAP,
    OURS,
    UNIFORM,
    Recipe,
    layer_allocation,
    max_logit_difference,
    nested_stats,
    recipe_runs,
    save_checkpoints,
)
from attnprune.structured.prune import StructuredConfig, load_pruned, prune_from_stats, prune_structured
from attnprune.structured.stats import capture_layer_stats


def test_nested_stats_equal_a_capture_of_the_prefix(smol_3to1, token_ids):
    stats, seconds = nested_stats(smol_3to1, token_ids, [1, 3, 4], batch_size=2)
    assert sorted(stats) == [1, 3, 4] and seconds[1] <= seconds[3] <= seconds[4]
    direct = capture_layer_stats(smol_3to1, token_ids[:3])
    for nested, alone in zip(stats[3], direct, strict=True):
        for a, b in ((nested.attention, alone.attention), (nested.mlp, alone.mlp)):
            assert a.count == b.count
            torch.testing.assert_close(a.H, b.H, rtol=1e-9, atol=1e-9 * float(b.H.abs().max()))


def test_nested_stats_refuse_sizes_beyond_the_calibration_set(smol_3to1, token_ids):
    with pytest.raises(ValueError, match="sizes"):
        nested_stats(smol_3to1, token_ids, [2, 5])


def test_prune_from_stats_is_prune_structured(smol_3to1, token_ids, model_stats):
    config = StructuredConfig(0.3, score="numerical", compensation="refit", batch_size=2)  # as model_stats
    a, report_a = prune_structured(smol_3to1, token_ids, config)
    b, report_b = prune_from_stats(smol_3to1, model_stats["3:1"], config, calib_shape=tuple(token_ids.shape))
    assert report_a.layers == report_b.layers and report_a.n_calibration == report_b.n_calibration
    assert max_logit_difference(a, b, token_ids[:1]) == 0.0


def test_recipe_runs_give_one_row_per_recipe_ratio_and_text(smol_3to1, token_ids, model_stats):
    recipes = [OURS, FLAP, UNIFORM]
    summary, ppl = recipe_runs(
        smol_3to1, model_stats["3:1"], recipes, [0.2, 0.4], {"a": token_ids[:2], "b": token_ids[2:]},
        calib_shape=tuple(token_ids.shape), batch_size=2,
    )  # fmt: skip
    assert len(summary) == 6 and len(ppl) == 2 + 6 * 2
    assert set(ppl["candidate"]) == {"dense", OURS.label, FLAP.label, UNIFORM.label}
    assert all(len(w) == 2 for w in ppl["window_nll"])
    assert (summary["realised_ratio"] > 0).all() and (summary["parameters"] > 0).all()
    uniform = summary[summary["candidate"] == UNIFORM.label]
    assert all(len(set(heads)) == 1 for heads in uniform["kept_heads"])  # the same in every layer
    allocation = layer_allocation(summary, heads=6, channels=512)
    assert len(allocation) == 6 * 3 * 2 and allocation["removed"].between(0, 1).all()


def test_saved_checkpoints_reload_with_the_same_logits(smol_3to1, token_ids, model_stats, tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
    shape = tuple(token_ids.shape)
    written = save_checkpoints(smol_3to1, tokenizer, model_stats["3:1"], OURS, [0.0, 0.3], tmp_path, calib_shape=shape)
    assert sorted(written) == [0.0, 0.3]
    sliced, _ = prune_from_stats(smol_3to1, model_stats["3:1"], OURS.config(0.3), calib_shape=shape)
    reloaded, _ = load_pruned(str(written[0.3]))
    assert max_logit_difference(sliced, reloaded, token_ids[:1]) == 0.0


def test_a_recipe_names_its_bad_argument():
    with pytest.raises(ValueError, match="compensation"):
        Recipe("x", "numerical", "lagrange")
    with pytest.raises(ValueError, match="allocation"):
        Recipe("x", "numerical", "refit", "per-layer")
    with pytest.raises(ValueError):
        Recipe("x", "newtonian", "refit")


def test_scores_passed_in_give_the_same_model(smol_3to1, token_ids, model_stats):
    from attnprune.structured.scores import score_model

    config = StructuredConfig(0.4, score="flap", compensation="bias")
    shape = tuple(token_ids.shape)
    given = score_model(smol_3to1, model_stats["3:1"], config.score, config.score_options)
    a, report_a = prune_from_stats(smol_3to1, model_stats["3:1"], config, calib_shape=shape, scores=given)
    b, report_b = prune_from_stats(smol_3to1, model_stats["3:1"], config, calib_shape=shape)
    assert report_a.layers == report_b.layers
    assert max_logit_difference(a, b, token_ids[:1]) == 0.0
