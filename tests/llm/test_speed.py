"""Speed measurement in-process (``attnprune.llm.speed``): the report's fields and units, the greedy
loop equal to ``generate``, the decode bound as the ratio of parameter counts, the bytes of a
checkpoint, and bad input refused naming the argument. No timing is asserted beyond "positive"."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attnprune.llm import speed
from attnprune.llm.speed import SpeedConfig, SpeedReport


@pytest.fixture(scope="module")
def model(small_llama):
    """A tiny Llama (vocabulary 512, tied embeddings) with a context of 64 tokens: quick to run,
    and a short context to check the prompts against."""
    return small_llama(max_position_embeddings=64)


SMALL = SpeedConfig(prompt_len=16, new_tokens=4, repeats=2, decode_prompt_len=8)


def test_prompt_ids_are_seeded_and_within_the_vocabulary():
    ids = speed.prompt_ids(512, 40, seed=3)
    assert ids.shape == (1, 40) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < 512
    assert torch.equal(ids, speed.prompt_ids(512, 40, seed=3))
    assert not torch.equal(ids, speed.prompt_ids(512, 40, seed=4))


def test_measure_model_reports_positive_speeds_and_its_settings(model):
    report = speed.measure_model(model, SMALL)
    assert report.prefill_tokens_per_s > 0 and report.decode_tokens_per_s > 0
    assert report.parameters == speed.parameter_count(model)
    assert (report.prompt_len, report.new_tokens, report.repeats, report.decode_prompt_len) == (16, 4, 2, 8)
    assert report.threads == torch.get_num_threads()
    assert report.bytes_on_disk is None and report.peak_memory_bytes is None and report.baseline_memory_bytes is None
    assert list(report.to_dict()) == [field.name for field in dataclasses.fields(SpeedReport)]
    assert SpeedReport(**report.to_dict()) == report


def test_parameter_count_counts_a_tied_head_once(model):
    assert model.lm_head.weight is model.model.embed_tokens.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert speed.parameter_count(model) == sum(unique.values())
    assert speed.parameter_count(model) < sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


def test_prefill_and_decode_speeds_are_positive(model):
    assert speed.prefill_speed(model, speed.prompt_ids(512, 16), repeats=1) > 0
    assert speed.decode_speed(model, speed.prompt_ids(512, 8), new_tokens=3, repeats=1) > 0


def test_greedy_decode_gives_the_tokens_of_generate(model):
    prompt = speed.prompt_ids(512, 8, seed=1)
    tokens, seconds = speed.greedy_decode(model, prompt, 5)
    assert tokens.shape == (1, 5) and seconds > 0
    with torch.no_grad():  # generate's first token comes from the prompt pass, untimed in greedy_decode
        generated = model.generate(
            prompt, do_sample=False, max_new_tokens=6, min_new_tokens=6, pad_token_id=0, attention_mask=None
        )
    assert torch.equal(tokens, generated[:, 9:])
    assert torch.equal(tokens, speed.greedy_decode(model, prompt, 5)[0])  # deterministic


def test_decode_bound_is_the_ratio_of_parameter_counts():
    assert speed.decode_bound(1000, 500) == 2.0
    assert speed.decode_bound(135_000_000, 90_000_000) == pytest.approx(1.5)
    assert speed.decode_bound(7, 7) == 1.0


def test_bytes_on_disk_is_the_sum_of_the_safetensors_files(tmp_path, model):
    model.save_pretrained(tmp_path / "checkpoint")
    (tmp_path / "checkpoint" / "notes.txt").write_text("not weights\n")
    files = list((tmp_path / "checkpoint").glob("*.safetensors"))
    assert files and speed.bytes_on_disk(tmp_path / "checkpoint") == sum(f.stat().st_size for f in files)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^folder .*empty.* no \*\.safetensors"):
        speed.bytes_on_disk(tmp_path / "empty")


def test_peak_rss_is_bytes_and_never_falls():
    first = speed.peak_rss_bytes()
    assert first > 10 * 1024**2  # a Python process with torch holds more than 10 MB: bytes, not kB
    assert speed.peak_rss_bytes() >= first


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"new_tokens": 0}, "new_tokens"),
        ({"repeats": -1}, "repeats"),
        ({"prompt_len": 0}, "prompt_len"),
        ({"prompt_len": True}, "prompt_len"),
        ({"threads": 0}, "threads"),
        ({"decode_prompt_len": 2.5}, "decode_prompt_len"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_refuses_bad_settings_naming_them(options, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        SpeedConfig(**options)


def test_bad_calls_are_refused_naming_the_argument(model):
    prompt = speed.prompt_ids(512, 8)
    cases = [
        (lambda: speed.prefill_speed(model, prompt, repeats=0), "repeats"),
        (lambda: speed.prefill_speed(model, prompt.repeat(2, 1), repeats=1), "input_ids"),
        (lambda: speed.prefill_speed(model, prompt + 512, repeats=1), "input_ids"),
        (lambda: speed.decode_speed(model, prompt, new_tokens=0, repeats=1), "new_tokens"),
        (lambda: speed.decode_speed(model, prompt, new_tokens=2, repeats=-1), "repeats"),
        (lambda: speed.greedy_decode(model, prompt.float(), 2), "prompt_ids"),
        (lambda: speed.decode_speed(model, prompt.repeat(2, 1), new_tokens=2, repeats=1), "prompt_ids"),
        (lambda: speed.decode_bound(0, 5), "params_dense"),
        (lambda: speed.decode_bound(5, 2.5), "params_pruned"),
        (lambda: speed.prompt_ids(0, 5), "vocab_size"),
        (lambda: speed.measure_model(model, {"prompt_len": 8}), "config"),
        (lambda: speed.measure_model(model, SpeedConfig(prompt_len=65)), "prompt_len"),
        (lambda: speed.measure_model(model, SpeedConfig(prompt_len=8, new_tokens=40)), "new_tokens"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            call()
