"""The library under bad input (``attnprune.llm``): each case raises the documented exception with a
message that names the argument. Core cases (masks, solver, baselines) are in tests/core/test_checks.py."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from attnprune.llm import assets
from attnprune.llm.batches import check_input_ids, context_length
from attnprune.llm.capture import capture_attention_inputs, check_layers, layer_inputs
from attnprune.llm.data import evaluation_sequences, load_texts, token_sequences
from attnprune.llm.evaluate import layer_errors, perplexity
from attnprune.llm.models import load_model, model_config
from attnprune.llm.prune import FitConfig, PruneConfig, prune_model


def _ids(*shape, high=1000):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def short_model():
    """A small Llama with a context of 8 tokens and a vocabulary of 1000."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=8,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


# -- layer indices: integers in range, never bools ----------------------------------------------------
@pytest.mark.parametrize("layers", [[True], [False, 1], [0, True], [2], [-1], "0", 0, [0.0], [1.0], []])
def test_check_layers_refuses(layers, tiny_llama):
    with pytest.raises(ValueError, match="layers"):
        check_layers(tiny_llama, layers)


def test_check_layers_accepts_indices(tiny_llama):
    assert check_layers(tiny_llama, [1, 0, 1]) == [0, 1] and check_layers(tiny_llama, None) == [0, 1]


@pytest.mark.parametrize("layers", [[True], (1, False), [-2], ["1"], [], 3])
def test_prune_config_refuses_layers(layers):
    with pytest.raises(ValueError, match="layers"):
        PruneConfig("magnitude", 0.5, layers=layers)


def test_capture_refuses_bool_layers(tiny_llama):
    with pytest.raises(ValueError, match="layers"):
        capture_attention_inputs(tiny_llama, _ids(1, 4), [True])


# -- token ids: a (N, T) LongTensor, in the vocabulary, within the context length -------------------------
@pytest.mark.parametrize(
    ("ids", "match"),
    [
        (_ids(2, 4).float(), "LongTensor"),
        (_ids(8), "LongTensor"),
        (_ids(1, 2, 4), "LongTensor"),
        ([[1, 2, 3]], "LongTensor"),
        (torch.zeros(0, 4, dtype=torch.long), "at least one token"),
        (torch.zeros(2, 0, dtype=torch.long), "at least one token"),
    ],
)
def test_check_input_ids_refuses(ids, match):
    with pytest.raises(ValueError, match=match):
        check_input_ids(ids)


@pytest.mark.parametrize("bad", [1000, 5000, -1])
def test_ids_outside_the_vocabulary_are_refused(short_model, bad):
    ids = _ids(2, 6)
    ids[1, 3] = bad
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, 1000\)"):
        check_input_ids(ids, short_model)
    with pytest.raises(ValueError, match="vocabulary"):
        perplexity(short_model, ids)


def test_ids_outside_the_vocabulary_are_refused_by_the_pruning_driver(short_model):
    ids = _ids(2, 6)
    ids[0, 0] = 1000
    with pytest.raises(ValueError, match="vocabulary"):
        prune_model(short_model, ids, PruneConfig("wanda", 0.5))
    with pytest.raises(ValueError, match="vocabulary"):
        layer_inputs(short_model, ids)
    with pytest.raises(ValueError, match="vocabulary"):
        capture_attention_inputs(short_model, ids)


def test_sequences_past_the_context_length_are_refused(short_model):
    assert context_length(short_model) == 8
    ids = _ids(2, 9)
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        perplexity(short_model, ids)
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        layer_errors(short_model, ids, {"a": {}})
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        prune_model(short_model, ids, PruneConfig("magnitude", 0.5))
    assert perplexity(short_model, _ids(2, 8)) > 1.0  # exactly the context length is fine


# -- configs name the parameter -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: PruneConfig("wanda", 1.0), "sparsity"),
        (lambda: PruneConfig("wanda", float("nan")), "sparsity"),
        (lambda: PruneConfig("wanda", 0.5, batch_size=0), "batch_size"),
        (lambda: PruneConfig("wanda", 0.5, batch_size=True), "batch_size"),
        (lambda: FitConfig(sequences_per_step=0), "sequences_per_step"),
        (lambda: FitConfig(steps=0), "steps"),
        (lambda: FitConfig(lr=-1.0), "lr"),
    ],
)
def test_configs_name_the_bad_parameter(make, name):
    with pytest.raises(ValueError, match=name):
        make()


# -- model folders -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(short_model, llama3_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("short")
    short_model.save_pretrained(folder)
    llama3_tokenizer.save_pretrained(folder)
    return folder


def test_a_folder_without_tokenizer_files_says_how_to_add_them(saved, tmp_path):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).symlink_to(saved / name)
    with pytest.raises(ValueError, match=r"no tokenizer files.*tokenizer\.save_pretrained") as raised:
        load_model(tmp_path)
    assert "sentencepiece" not in str(raised.value)


@pytest.mark.parametrize("keep", [0, 7, 4096])
def test_truncated_weights_are_a_clear_error(saved, tmp_path, keep):
    for path in saved.iterdir():
        if path.name != "model.safetensors":
            (tmp_path / path.name).symlink_to(path)
    (tmp_path / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes()[:keep])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", ["", None, 3])
def test_an_empty_model_name_is_refused(name):
    with pytest.raises(ValueError, match="name_or_path"):
        load_model(name)


def test_model_config_reads_the_shapes_without_the_weights(saved, tmp_path):
    assert model_config(saved).max_position_embeddings == 8
    with pytest.raises(FileNotFoundError, match="no such local model folder"):
        model_config(str(tmp_path / "missing" / "model"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json"):
        model_config(tmp_path / "broken")


# -- texts ---------------------------------------------------------------------------------------
def test_a_binary_text_file_is_named_in_the_error(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_bytes(b"\x00\x01\xff\xfe" * 16)
    with pytest.raises(ValueError, match=r"weights\.txt.*not UTF-8"):
        load_texts(path, "calibration")


def test_a_folder_is_not_a_text_file(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        load_texts(str(tmp_path) + "/", "calibration")


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda tok: token_sequences(tok, ["some text"], 0, 4), "n_sequences"),
        (lambda tok: token_sequences(tok, ["some text"], 2, 1), "seq_len"),
        (lambda tok: token_sequences(tok, ["some text"], 2, True), "seq_len"),
        (lambda tok: token_sequences(tok, [], 2, 4), "texts"),
        (lambda tok: token_sequences(tok, "some text", 2, 4), "texts"),
        (lambda tok: token_sequences(tok, ["some text"], 2, 4, seed=1.5), "seed"),
        (lambda tok: evaluation_sequences(tok, ["some text"], 4, 0), "max_sequences"),
        (lambda tok: evaluation_sequences(tok, ["two words"], 64), "seq_len=64"),
    ],
)
def test_token_windows_name_the_bad_argument(llama3_tokenizer, call, name):
    with pytest.raises(ValueError, match=name):
        call(llama3_tokenizer)


def test_the_offline_hint_speaks_to_command_line_users_too():
    assert "--model smollm2-135m --calib austen" in assets.OFFLINE_HINT
    assert "--profile quick" in assets.OFFLINE_HINT  # and to the chapters' runner


def test_the_context_length_of_a_model_without_one_is_unknown():
    assert context_length(nn.Linear(2, 2)) is None
    assert context_length(json.loads('{"a": 1}')) is None
