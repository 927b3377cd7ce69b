"""The scripts' pure parts: the tuning scripts' arguments (bad ones refused by name), the benchmark's plan,
table and time targets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from attnprune.llm.refit import RefitConfig

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tune_settings_are_parsed_as_steps_ramp_and_rows():
    args = load_script("tune_ours").parse(["--settings", "160:0.5", "150:0.25:half", "--layers", "3"])
    assert args.settings == [(160, 0.5, None), (150, 0.25, "half")] and args.layers == [3]
    assert args.seeds == [0, 1, 2]


@pytest.mark.parametrize(
    "settings", [["160"], ["a:0.5"], ["0:0.5"], ["130:0"], ["130:1.5"], ["130:0.25:third"], ["130:0.25:all:x"]]
)
def test_bad_tune_settings_are_refused_by_name(settings, capsys):
    with pytest.raises(SystemExit):
        load_script("tune_ours").parse(["--settings", *settings])
    assert "--settings" in capsys.readouterr().err


def test_refit_tune_settings_are_parsed_as_steps_lr_sequences_and_anchor():
    args = load_script("tune_refit").parse(["--settings", "12:0.002:4", "24:1e-3:8:0.1", "--rhos", "0.7"])
    assert args.settings == [(12, 0.002, 4, None), (24, 0.001, 8, 0.1)] and args.rhos == [0.7]
    default, refit = load_script("tune_refit").parse([]), RefitConfig()  # the first setting: the defaults
    assert default.settings[0] == (refit.steps, refit.lr, refit.sequences_per_step, None)  # μ: RefitConfig's
    assert default.objective == refit.objective


@pytest.mark.parametrize(
    "settings",
    [
        ["12"],
        ["12:0.002"],
        ["a:0.002:4"],
        ["0:0.002:4"],
        ["12:0:4"],
        ["12:0.002:0"],
        ["12:0.002:4:-1"],
        ["12:0.002:4:0.1:x"],
    ],
)
def test_bad_refit_tune_settings_are_refused_by_name(settings, capsys):
    with pytest.raises(SystemExit):
        load_script("tune_refit").parse(["--settings", *settings])
    assert "--settings" in capsys.readouterr().err


def test_a_bad_refit_objective_is_refused_by_name_before_the_model_loads():
    with pytest.raises(SystemExit, match="objective must be one of"):
        load_script("tune_refit").main(["--objective", "nope", "--model", "no-such-model"])


def test_refit_tune_calibration_sources_are_austen_generated_or_half_each(small_llama, llama3_tokenizer):
    from attnprune.llm.data import load_texts, token_sequences

    script, model = load_script("tune_refit"), small_llama(vocab_size=128256)
    austen = [token_sequences(llama3_tokenizer, load_texts("austen", "calibration"), n, 8) for n in (3, 1)]
    assert torch.equal(script.calibration_ids(model, llama3_tokenizer, "austen", "calibration", 3, 8), austen[0])
    mixed = script.calibration_ids(model, llama3_tokenizer, "mixed", "calibration", 3, 8)  # ⌊3/2⌋ Austen, 2 sampled
    assert mixed.shape == (3, 8) and torch.equal(mixed[:1], austen[1]) and (mixed[1:, 0] == 128000).all()
    calibration, held_out = (script.calibration_ids(model, llama3_tokenizer, "generated", split, 2, 8)
                             for split in ("calibration", "heldout"))  # fmt: skip
    assert torch.equal(calibration, mixed[1:]) and not torch.equal(calibration, held_out)  # seeds 0 and 1
    assert script.parse(["--calibration", "generated"]).calibration == "generated"


def test_a_bad_refit_tune_calibration_source_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        load_script("tune_refit").parse(["--calibration", "lee"])
    assert "--calibration" in capsys.readouterr().err


def test_the_benchmark_times_sparsegpt_before_and_after_the_other_methods():
    benchmark = load_script("benchmark")
    assert benchmark.qk_plan(["sparsegpt", "ours"]) == ["sparsegpt", "ours", "sparsegpt", "eval"]
    assert benchmark.qk_plan(["sparsegpt"]) == ["sparsegpt", "eval"]
    assert benchmark.qk_plan(["wanda", "ours"]) == ["wanda", "ours", "eval"]


def test_the_benchmark_divides_by_the_mean_of_sparsegpt_timings_and_judges_each():
    benchmark = load_script("benchmark")
    row = {"layers": 30, "peak_cpu_bytes": 2**30}
    results = [
        {"what": "sparsegpt", "seconds": 20.0, **row},
        {"what": "ours", "seconds": 105.0, **row},
        {"what": "sparsegpt", "seconds": 22.0, **row},
        {"what": "wanda", "error": "failed"},
        {"what": "eval", "seconds": 1.0},
    ]
    assert benchmark.yardstick_seconds(results) == [20.0, 22.0]
    lines = benchmark.table(results, "cpu").splitlines()
    assert lines[2:] == [
        "| sparsegpt | 30 | 20.0 | 1.0 | 1.00 |",
        "| ours | 30 | 105.0 | 5.0 | 1.00 |",
        "| sparsegpt (timed again) | 30 | 22.0 | 1.0 | 1.00 |",
        "| wanda | – | failed: failed | – | – |",
    ]
    assert benchmark.time_target(104.0, [20.0, 22.0]) == "holds with caveats (5.20×, 4.73×)"
    assert benchmark.time_target(95.0, [20.0, 22.0]).startswith("holds (")
    assert benchmark.time_target(120.0, [20.0, 22.0]).startswith("fails (")
