"""``attnprune speed`` and the measuring process behind it (``attnprune.structured.speed``): a dense
and a sliced tiny checkpoint measured each in a fresh process, the table and the JSON file, the
bound as the ratio of parameter counts, the bytes on disk; bad input refused in one line naming the
argument. No timing is asserted beyond "positive"."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from attnprune import cli
from attnprune.llm.speed import SpeedConfig, parameter_count
from attnprune.structured import speed
from attnprune.structured.prune import StructuredConfig, prune_structured
from attnprune.structured.slicing import SlicedLlamaForCausalLM

TINY = ["--prompt-len", "8", "--new-tokens", "2", "--repeats", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def folders(small_llama, tmp_path_factory) -> dict[str, Path]:
    """``dense`` and ``sliced`` (numerical score, refit, half the linear parameters) checkpoints of
    the tiny model, and ``broken``: a config.json without weights. No tokenizer: speed needs none."""
    base = tmp_path_factory.mktemp("speed")
    dense = small_llama()
    dense.save_pretrained(base / "dense")
    ids = torch.randint(512, (4, 16), generator=torch.Generator().manual_seed(0))
    sliced, _ = prune_structured(dense, ids, StructuredConfig(ratio=0.5))
    sliced.save_pretrained(base / "sliced")
    (base / "broken").mkdir()
    (base / "broken" / "config.json").write_text((base / "dense" / "config.json").read_text())
    return {name: base / name for name in ("dense", "sliced", "broken")}


def _safetensors_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def test_load_checkpoint_loads_dense_and_sliced(folders):
    dense, sliced = speed.load_checkpoint(folders["dense"]), speed.load_checkpoint(folders["sliced"])
    assert not isinstance(dense, SlicedLlamaForCausalLM) and isinstance(sliced, SlicedLlamaForCausalLM)
    assert parameter_count(sliced) < parameter_count(dense)
    assert not dense.training and not sliced.training


def test_measure_here_adds_bytes_and_memory(folders):
    report = speed.measure_here(folders["sliced"], SpeedConfig(prompt_len=8, new_tokens=2, repeats=1))
    assert report.bytes_on_disk == _safetensors_bytes(folders["sliced"])
    assert report.peak_memory_bytes >= report.baseline_memory_bytes > 0
    assert report.prefill_tokens_per_s > 0 and report.decode_tokens_per_s > 0


def test_speed_measures_dense_and_sliced_in_fresh_processes(folders, small_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(folders["dense"].parent)  # relative paths: to the working directory
    assert cli.main(["speed", "dense", "sliced", *TINY, "--json", str(tmp_path / "out" / "speed.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| model | parameters |")
    assert lines[2].startswith("| dense |") and lines[3].startswith("| sliced |")
    payload = json.loads((tmp_path / "out" / "speed.json").read_text())
    assert (payload["command"], payload["prompt_len"], payload["new_tokens"], payload["repeats"]) == ("speed", 8, 2, 1)
    dense, sliced = payload["models"]
    expected = {
        "dense": parameter_count(small_llama()),
        "sliced": parameter_count(speed.load_checkpoint(folders["sliced"])),
    }
    for row in (dense, sliced):
        assert row["parameters"] == expected[row["folder"]]
        assert row["bytes_on_disk"] == _safetensors_bytes(folders[row["folder"]])
        assert row["peak_memory_bytes"] >= row["baseline_memory_bytes"] > 0
        assert row["prefill_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0
        assert (row["threads"], row["prompt_len"], row["new_tokens"], row["repeats"]) == (1, 8, 2, 1)
    assert dense["decode_speedup"] == dense["decode_bound"] == dense["prefill_speedup"] == 1.0
    assert sliced["decode_bound"] == pytest.approx(expected["dense"] / expected["sliced"])
    assert sliced["decode_speedup"] == pytest.approx(sliced["decode_tokens_per_s"] / dense["decode_tokens_per_s"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["speed", "missing"], "FOLDER 'missing': no such folder"),
        (["speed", "dense", "notes.txt"], "FOLDER 'notes.txt' is a file"),
        (["speed", "empty"], "FOLDER 'empty' is not a model folder (no config.json)"),
        (["speed", "dense", "--new-tokens", "0"], "argument --new-tokens: must be a positive integer, got '0'"),
        (["speed", "dense", "--repeats", "-1"], "argument --repeats: must be a positive integer, got '-1'"),
        (["speed", "dense", "--prompt-len", "x"], "argument --prompt-len: expected an integer, got 'x'"),
        (["speed", "dense", "--threads", "0"], "argument --threads: must be a positive integer"),
        (["speed", "dense", "--json", "empty"], "--json 'empty' is a folder"),
        (["speed"], "the following arguments are required: FOLDER"),
    ],
)
def test_bad_input_is_one_line_naming_the_argument(argv, expected, folders, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dense").symlink_to(folders["dense"])
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(speed, "measure_checkpoint", _forbidden)
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("attnprune speed: error: ") and err.count("\n") == 1, err
    assert expected in err and "Traceback" not in err


def _forbidden(*args, **kwargs):
    raise AssertionError("a bad argument must be refused before any measurement")


def test_a_failed_measurement_is_one_line_naming_the_folder(folders, monkeypatch, capsys):
    def fails(folder, **options):
        raise RuntimeError(f"folder {folder!r}: the measuring process failed (status -9): Killed")

    monkeypatch.setattr(speed, "measure_checkpoint", fails)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["speed", str(folders["dense"])])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert f"FOLDER {str(folders['dense'])!r}: the measuring process failed (status -9)" in err


def test_measure_checkpoint_checks_its_arguments_before_starting_a_process(folders, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _forbidden)
    with pytest.raises(FileNotFoundError, match=r"^folder 'nowhere': no such folder"):
        speed.measure_checkpoint("nowhere")
    for options, name in (({"new_tokens": 0}, "new_tokens"), ({"repeats": -2}, "repeats"), ({"threads": 0}, "threads")):
        with pytest.raises(ValueError, match=rf"^{name} must"):
            speed.measure_checkpoint(folders["dense"], **options)


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (2, ValueError, r"^folder '.*dense': cannot load its weights \(x\)$"),
        (2, ValueError, r"^folder '.*dense' is not a Llama$"),
        (-9, RuntimeError, r"^folder '.*dense': the measuring process failed \(status -9\): Killed$"),
    ],
)
def test_measure_checkpoint_reraises_the_childs_error_naming_the_folder(status, error, message, folders, monkeypatch):
    named = f"folder {str(folders['dense'].resolve())!r}"  # the measuring process names it by its absolute path
    stderr = {"cannot": "error: cannot load its weights (x)\n", "is not": f"error: {named} is not a Llama\n"}
    stderr = stderr[next(key for key in stderr if key in message)] if status == 2 else "Killed\n"
    monkeypatch.setattr(
        subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, status, "", stderr)
    )
    with pytest.raises(error, match=message):
        speed.measure_checkpoint(folders["dense"])


def test_the_measuring_process_reports_a_bad_checkpoint_on_stderr(folders, capsys):
    assert speed.main([str(folders["broken"]), "--json", "--prompt-len", "8"]) == speed.BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert "broken" in captured.err
