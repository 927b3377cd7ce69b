"""Loading models: shapes from the config, the three kinds of name, and the loading errors."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
import transformers

from attnprune.llm import assets, models
from attnprune.llm.models import AttentionShape, attention_shape, linear_weight_count, load_model


def test_tiny_llama_has_llama32_shape_features(tiny_llama):
    shape = attention_shape(tiny_llama.config)
    assert shape == AttentionShape(layers=2, heads=8, kv_heads=2, head_dim=64, hidden=512)
    assert shape.group_size == 4
    assert attention_shape(tiny_llama) == shape  # a model is read through its config
    assert tiny_llama.model.rotary_emb.rope_type == "llama3"
    assert tiny_llama.lm_head.weight is tiny_llama.model.embed_tokens.weight
    assert tiny_llama.config.vocab_size == 128256


def test_attention_shape_without_head_dim_or_kv_heads():
    config = SimpleNamespace(num_hidden_layers=3, num_attention_heads=4, hidden_size=96)
    assert attention_shape(config) == AttentionShape(3, 4, 4, 24, 96)
    bad = SimpleNamespace(num_hidden_layers=1, num_attention_heads=6, num_key_value_heads=4, hidden_size=96)
    with pytest.raises(ValueError, match="KV heads"):
        attention_shape(bad)


def test_linear_weight_count_is_the_decoder_linears(tiny_llama):
    d, kv, ffn = 512, 2 * 64, 1024
    per_layer = d * d + kv * d + kv * d + d * d + 3 * d * ffn  # q, k, v, o; gate, up, down
    assert linear_weight_count(tiny_llama) == 2 * per_layer  # lm_head (tied) is not counted


def test_local_folder_round_trip(tiny_llama, llama3_tokenizer, tmp_path):
    tiny_llama.save_pretrained(tmp_path)
    llama3_tokenizer.save_pretrained(tmp_path)
    model, tokenizer = load_model(str(tmp_path))
    assert not model.training and model.dtype == torch.float32
    assert model.config.rope_parameters["rope_type"] == "llama3"
    assert tokenizer("Hello").input_ids[0] == 128000  # BOS, as the Llama 3 tokenizer adds it
    ids = torch.tensor([tokenizer("It is a truth universally acknowledged").input_ids])
    reference = tiny_llama.state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in model.state_dict().items())  # bit for bit
    with torch.no_grad():  # float32 logits of size ~1; their last bits may depend on memory layout (MKL)
        torch.testing.assert_close(model(ids).logits, tiny_llama(ids).logits, rtol=1e-5, atol=1e-5)
    half, _ = load_model(tmp_path, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


def test_unknown_alias_says_what_is_accepted():
    with pytest.raises(ValueError, match="smollm2-135m"):
        load_model("smollm3-offline")


def test_hub_id_offline_fails_fast_naming_the_offline_profile():
    started = time.perf_counter()
    with pytest.raises(assets.HubUnavailableError) as raised:
        load_model(models.PAPER_MODEL)
    assert time.perf_counter() - started < 20
    message = str(raised.value)
    assert "HF_HUB_OFFLINE" in message and "--profile quick" in message and "smollm2-135m" in message
    assert isinstance(raised.value, OSError)  # callers catching OSError still catch it


def test_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such local model folder"):
        load_model(str(tmp_path / "pruned" / "model"))
    with pytest.raises(FileNotFoundError, match="no such local model folder"):
        load_model("./no-such-checkpoint")


def test_folder_without_config_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"config\.json"):
        load_model(str(tmp_path))
    with pytest.raises(ValueError, match="dtype"):
        load_model(models.OFFLINE_MODEL, dtype="float32")
    with pytest.raises(ValueError, match="name_or_path"):
        load_model(None)


def test_offline_model_conversion_is_atomic(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNPRUNE_CACHE", str(tmp_path))

    def broken(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        assets.prepare_offline_model()
    assert not assets.offline_model_dir().exists()
    assert list((tmp_path / "models").iterdir()) == []  # no half-written folder is left


def test_offline_model_from_the_cache():
    """The real SmolLM2-135M-Instruct, from its safetensors copy (made by the setup)."""
    model, tokenizer = load_model(models.OFFLINE_MODEL)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert attention_shape(model.config) == AttentionShape(30, 9, 3, 64, 576)
    assert linear_weight_count(model) == 30 * (2 * 576 * 576 + 2 * 192 * 576 + 3 * 576 * 1536)
    assert model.dtype == torch.float32 and model.config.vocab_size == 49152
    assert tokenizer.bos_token_id not in tokenizer("Emma Woodhouse").input_ids  # no BOS added
    assert (assets.offline_model_dir() / "model.safetensors").exists()


def test_assets_module_does_not_import_transformers():
    code = "import sys, attnprune.llm.assets; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
