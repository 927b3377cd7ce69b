"""The ``attnprune`` command line under bad input: each case exits with status 2 and one line that
names the flag, before the model is loaded wherever the argument alone is wrong; outputs are
atomic (an interrupted or failed prune leaves no partial --out); runs are deterministic and an
interrupted run resumes to the same weights, bit for bit.

In-process cases run ``cli.main``; the interruption tests run ``python -m attnprune.cli`` in a
subprocess and stop it with SIGINT or SIGKILL at a test-only pause (``ATTNPRUNE_TEST_PAUSE_AT``).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from attnprune import cli

ROOT = Path(__file__).resolve().parents[1]


def _link_folder(source: Path, target: Path, skip: tuple[str, ...] = ()) -> Path:
    target.mkdir()
    for path in source.iterdir():
        if path.name not in skip:
            (target / path.name).symlink_to(path)
    return target


@pytest.fixture(scope="module")
def paths(tiny_llama, small_llama, llama3_tokenizer, tmp_path_factory, random_text) -> dict[str, str]:
    """The models, texts and files the cases name: {placeholder: path}."""
    base = tmp_path_factory.mktemp("bad")
    model = base / "tiny"
    tiny_llama.save_pretrained(model)
    llama3_tokenizer.save_pretrained(model)
    mini = base / "mini"
    small_llama(vocab_size=128256, max_position_embeddings=131072).save_pretrained(mini)
    llama3_tokenizer.save_pretrained(mini)
    small_vocab = base / "small_vocab"  # the Llama 3 tokenizer's ids run past this model's 1000 embeddings
    small_llama(vocab_size=1000, max_position_embeddings=131072).save_pretrained(small_vocab)
    llama3_tokenizer.save_pretrained(small_vocab)
    _link_folder(mini, base / "no_tokenizer", skip=("tokenizer.json", "tokenizer_config.json"))
    truncated = _link_folder(mini, base / "truncated", skip=("model.safetensors",))
    (truncated / "model.safetensors").write_bytes((mini / "model.safetensors").read_bytes()[:4096])
    short_context = _link_folder(mini, base / "short_context", skip=("config.json",))
    config = json.loads((mini / "config.json").read_text())
    (short_context / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 8}))
    (base / "calib.txt").write_text(random_text(1500), encoding="utf-8")
    (base / "empty.txt").write_text("  \n\n", encoding="utf-8")
    (base / "short.txt").write_text("fox\n", encoding="utf-8")
    (base / "binary.txt").write_bytes(b"PK\x03\x04\xff\xfe\x00\x00" * 64)
    (base / "a_file").write_text("not a folder\n")
    (base / "not_a_model").mkdir()
    (base / "not_a_model" / "notes.txt").write_text("keep me\n")
    names = (
        "tiny",
        "mini",
        "small_vocab",
        "no_tokenizer",
        "truncated",
        "short_context",
        "calib.txt",
        "empty.txt",
        "short.txt",
        "binary.txt",
        "a_file",
        "not_a_model",
    )
    return {name.split(".")[0]: str(base / name) for name in names} | {"base": str(base)}


def _prune(*extra: str, model: str = "{mini}", out: str = "{out}") -> list[str]:
    return [
        "prune",
        "--model",
        model,
        "--method",
        "wanda",
        "--sparsity",
        "0.5",
        "--calib",
        "{calib}",
        "--out",
        out,
        "--n-calibration",
        "2",
        "--seq-len",
        "16",
        "--no-progress",
        *extra,
    ]


def _eval(*extra: str, model: str = "{mini}", data: str = "{calib}") -> list[str]:
    return [
        "eval",
        "--model",
        model,
        "--data",
        data,
        "--seq-len",
        "16",
        "--max-sequences",
        "2",
        "--no-progress",
        *extra,
    ]


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


# Each case: the arguments, then what the one-line error must contain (the flag first). The comment
# is what the command did before this suite: clear, misleading, traceback (a raw traceback) or
# silent (a wrong result without a word).
CASES = {
    # -- the sparsity: checked when parsed, or against the model's width right after its config
    "sparsity-above-1": (_replace(_prune(), "--sparsity", "1.5"), ["--sparsity", "[0, 1)"]),  # clear, late
    "sparsity-1": (_replace(_prune(), "--sparsity", "1"), ["--sparsity"]),  # clear, late
    "sparsity-negative": (_replace(_prune(), "--sparsity", "-0.1"), ["--sparsity"]),  # clear, late
    "sparsity-nan": (_replace(_prune(), "--sparsity", "nan"), ["--sparsity", "finite"]),  # clear, late
    "sparsity-word": (_replace(_prune(), "--sparsity", "half"), ["--sparsity", "'half'"]),  # clear
    "sparsity-keeps-no-weight": (
        _replace(_prune(), "--sparsity", "0.995"),
        ["--sparsity", "keeps no weight"],
    ),  # silent: q/k all zero
    # -- layers
    "layers-beyond-depth": (_prune("--layers", "0,5"), ["--layers", "2 layers"]),  # clear, after the model loads
    "layers-negative": (_prune("--layers", "-1"), ["--layers", "≥ 0"]),  # clear, late
    "layers-word": (_prune("--layers", "first"), ["--layers"]),  # clear
    "layers-float": (_prune("--layers", "1.5"), ["--layers"]),  # clear
    "layers-empty": (_prune("--layers", ","), ["--layers"]),  # misleading: layers must name at least one layer
    # -- counts and numbers
    "n-calibration-0": (_replace(_prune(), "--n-calibration", "0"), ["--n-calibration", "positive"]),  # misleading
    "n-calibration-negative": (_replace(_prune(), "--n-calibration", "-2"), ["--n-calibration"]),  # misleading
    "seq-len-1": (_replace(_prune(), "--seq-len", "1"), ["--seq-len", "≥ 2"]),  # misleading: seq_len
    "seq-len-past-context": (
        _replace(_prune(model="{short_context}"), "--seq-len", "16"),
        ["--seq-len", "max_position_embeddings=8"],
    ),  # silent
    "batch-size-0": (_prune("--batch-size", "0"), ["--batch-size", "positive"]),  # misleading: batch_size
    "seed-negative": (_prune("--seed", "-1"), ["--seed"]),  # silent: accepted
    "seed-huge": (_prune("--seed", str(2**64)), ["--seed"]),  # traceback: Overflow when unpacking long long
    "steps-0": (_replace(_prune("--steps", "0"), "--method", "ours"), ["--steps", "positive"]),  # misleading: steps
    "steps-float": (_replace(_prune("--steps", "2.5"), "--method", "ours"), ["--steps", "integer"]),  # clear
    "sequences-per-step-0": (
        _replace(_prune("--sequences-per-step", "0"), "--method", "ours"),
        ["--sequences-per-step"],
    ),  # misleading: reported batch_size
    "lr-0": (_replace(_prune("--lr", "0"), "--method", "ours"), ["--lr", "> 0"]),  # misleading: lr
    "lr-inf": (_replace(_prune("--lr", "inf"), "--method", "ours"), ["--lr", "finite"]),  # misleading: lr
    "anchor-negative": (_replace(_prune("--anchor", "-1"), "--method", "ours"), ["--anchor", "≥ 0"]),  # misleading
    "lam-nan": (_replace(_prune("--lam", "nan"), "--method", "ours"), ["--lam", "finite"]),  # misleading: lam
    "ours-option-with-wanda": (_prune("--steps", "3"), ["--steps", "--method ours only"]),  # clear
    "straight-through-reweighted": (
        _replace(_prune("--selection", "straight-through"), "--method", "ours"),
        ["--selection", "--output"],
    ),  # misleading: selection=, output=
    "support-mask-only": (
        _replace(_prune("--support", "wanda", "--output", "mask-only"), "--method", "ours"),
        ["--support", "--output"],
    ),  # misleading
    "method-unknown": (_replace(_prune(), "--method", "obs"), ["--method", "invalid choice"]),  # clear
    "capture-unknown": (_prune("--capture", "lazy"), ["--capture", "invalid choice"]),  # clear
    # -- the device
    "device-foo": (_prune("--device", "foo"), ["--device", "unknown device"]),  # traceback
    "device-empty": (_prune("--device", ""), ["--device"]),  # traceback
    "device-gpu-index": (_prune("--device", "cuda:7"), ["--device", "cuda"]),  # traceback
    "device-xla": (_prune("--device", "xla"), ["--device", "not supported"]),  # traceback
    # -- --out
    "out-empty": (_prune(out=""), ["--out", "empty"]),  # silent: files scattered in the current folder
    "out-blank": (_prune(out="  "), ["--out", "empty"]),  # silent
    "out-is-a-file": (_prune(out="{a_file}"), ["--out", "is a file"]),  # silent: exit 0, no model saved
    "out-under-a-file": (_prune(out="{a_file}/pruned"), ["--out", "is a file"]),  # traceback after the prune
    "out-not-empty": (_prune(out="{not_a_model}"), ["--out", "not empty", "--overwrite"]),  # silent: written into
    "out-overwrite-not-a-model": (_prune("--overwrite", out="{not_a_model}"), ["--out", "no config.json"]),  # silent
    "out-is-the-model": (_prune("--overwrite", out="{mini}"), ["--out", "--model folder"]),  # silent
    "out-current-folder": (_prune("--overwrite", out="."), ["--out", "current folder"]),  # silent
    "out-missing": (_prune()[:9] + _prune()[11:], ["--out", "required"]),  # clear
    # -- --model
    "model-empty": (_prune(model=""), ["--model", "empty"]),  # misleading: not a model folder (no config.json)
    "model-missing-folder": (_prune(model="./no/such/model"), ["--model", "no such local model folder"]),  # clear
    "model-not-a-model-folder": (_prune(model="{not_a_model}"), ["--model", "config.json"]),  # clear
    "model-unknown-name": (_prune(model="llama-tiny"), ["--model", "smollm2-135m"]),  # clear
    "model-hub-offline": (
        _prune(model="meta-llama/Llama-3.2-1B"),
        ["--model", "--model smollm2-135m --calib austen"],
    ),  # misleading: --profile quick
    "model-no-tokenizer": (
        _prune(model="{no_tokenizer}"),
        ["--model", "no tokenizer files", "tokenizer.save_pretrained"],
    ),  # misleading: sentencepiece
    "model-truncated-weights": (_prune(model="{truncated}"), ["--model", "truncated"]),  # traceback: SafetensorError
    "model-vocabulary-too-small": (_prune(model="{small_vocab}"), ["--model", "vocabulary of 1000"]),  # traceback
    # -- --calib
    "calib-empty-name": (_replace(_prune(), "--calib", ""), ["--calib", "empty"]),  # misleading
    "calib-lee": (_replace(_prune(), "--calib", "lee"), ["--calib", "evaluation only"]),  # clear, after loading
    "calib-missing-file": (
        _replace(_prune(), "--calib", "{base}/missing.txt"),
        ["--calib", "no such text file"],
    ),  # clear, after loading
    "calib-unknown-name": (_replace(_prune(), "--calib", "bookcorpus"), ["--calib", "'austen')"]),  # clear, late
    "calib-empty-file": (_replace(_prune(), "--calib", "{empty}"), ["--calib", "empty"]),  # traceback
    "calib-binary": (_replace(_prune(), "--calib", "{binary}"), ["--calib", "binary.txt", "UTF-8"]),  # misleading
    "calib-folder": (_replace(_prune(), "--calib", "{base}"), ["--calib", "folder"]),  # misleading
    "calib-too-short": (_replace(_prune(), "--calib", "{short}"), ["--calib", "--seq-len"]),  # misleading: seq_len
    # -- eval
    "eval-seq-len-past-context": (_eval(model="{short_context}"), ["--seq-len", "max_position_embeddings"]),  # silent
    "eval-summary-empty": (_eval("--summary", ""), ["--summary", "empty"]),  # silent: nothing written
    "eval-summary-folder": (_eval("--summary", "{base}"), ["--summary", "folder"]),  # traceback after the eval
    "eval-summary-under-a-file": (_eval("--summary", "{a_file}/eval.json"), ["--summary", "is a file"]),  # late
    "eval-max-sequences-0": (_replace(_eval(), "--max-sequences", "0"), ["--max-sequences"]),  # misleading
    "eval-seq-len-0": (_replace(_eval(), "--seq-len", "0"), ["--seq-len"]),  # misleading
    "eval-batch-size-0": (_eval("--batch-size", "0"), ["--batch-size"]),  # misleading
    "eval-device-foo": (_eval("--device", "foo"), ["--device"]),  # traceback
    "eval-data-empty": (_eval(data=""), ["--data", "empty"]),  # misleading
    "eval-data-missing": (_eval(data="{base}/missing.txt"), ["--data", "no such text file"]),  # clear
    "eval-data-binary": (_eval(data="{binary}"), ["--data", "UTF-8"]),  # misleading
    "eval-data-too-short": (_eval(data="{short}"), ["--data", "--seq-len"]),  # misleading
    "eval-split-unknown": (_eval("--split", "dev", data="austen"), ["--split", "'dev'"]),  # misleading: split
    "eval-lee-calibration": (_eval("--split", "calibration", data="lee"), ["--split", "evaluation only"]),  # misleading
    "eval-model-truncated": (_eval(model="{truncated}"), ["--model", "truncated"]),  # traceback
    "eval-model-no-tokenizer": (_eval(model="{no_tokenizer}"), ["--model", "tokenizer.save_pretrained"]),  # misleading
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line_naming_the_flag(name, paths, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, expected = CASES[name]
    if name == "device-gpu-index" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    argv = [part.format(**paths, out=str(tmp_path / "pruned")) for part in argv]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith(f"attnprune {argv[0]}: error: ") and err.count("\n") == 1, err
    for part in expected:
        assert part in err, f"{part!r} not in {err!r}"
    assert not (tmp_path / "pruned").exists() and not list(tmp_path.glob(".*attnprune-partial"))
    assert "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_cuda_without_a_gpu(paths, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([part.format(**paths, out="x") for part in _prune("--device", "cuda")])
    assert exit_.value.code == 2 and "--device" in capsys.readouterr().err


def test_calib_help_lists_only_what_calibration_accepts(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "--help"])
    calib = capsys.readouterr().out.split("\n  --calib CALIB")[1].split("\n  --out")[0]
    assert "austen" in calib and "lee" not in calib


def test_bad_arguments_are_refused_before_the_model_loads(paths, tmp_path, capsys, monkeypatch):
    from attnprune.llm import models

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_model", forbidden)
    monkeypatch.setattr(models, "load_model", forbidden)
    for argv in (
        _prune("--layers", "9"),
        _replace(_prune(), "--sparsity", "0.999"),
        _replace(_prune(), "--calib", "{empty}"),
        _prune(out="{not_a_model}"),
        _eval(model="{short_context}"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main([part.format(**paths, out=str(tmp_path / "o")) for part in argv])
        assert exit_.value.code == 2, capsys.readouterr().err


# -- outputs: written whole, replaced only when asked, readable --------------------------------------
def _run_ok(argv: list[str], paths: dict, out: Path, capsys) -> dict:
    assert cli.main([part.format(**paths, out=str(out)) for part in argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_overwrite_replaces_a_model_folder_whole(paths, tmp_path, capsys):
    out = tmp_path / "pruned"
    _run_ok(_prune("--layers", "0"), paths, out, capsys)
    (out / "stale.txt").write_text("from the first run\n")
    summary = _run_ok(_replace(_prune("--layers", "1", "--overwrite"), "--method", "magnitude"), paths, out, capsys)
    assert summary["layers"] == [1] and not (out / "stale.txt").exists()
    assert json.loads((out / cli.SUMMARY).read_text())["method"] == "magnitude"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]  # no temporary folder left


def test_an_empty_out_folder_is_used_and_files_are_0644(paths, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    _run_ok(_prune("--layers", "0"), paths, out, capsys)
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_no_progress_hides_hugging_faces_bars_too(paths, tmp_path, capsys):
    _run_ok(_prune("--layers", "0"), paths, tmp_path / "pruned", capsys)
    assert "Writing model shards" not in capsys.readouterr().err


@pytest.mark.parametrize("method", ["ours", "sparsegpt"])
def test_two_runs_give_identical_weights(method, paths, tmp_path, capsys, weights_hash):
    argv = _replace(_prune(*(["--steps", "3"] if method == "ours" else [])), "--method", method)
    hashes = []
    for run in ("a", "b"):
        _run_ok(argv, paths, tmp_path / run, capsys)
        hashes.append(weights_hash(tmp_path / run))
    assert hashes[0] == hashes[1]


# -- interruptions: a subprocess stopped during the prune or the save leaves no partial --out ---------


def _ours(paths: dict, out: Path, *extra: str) -> list[str]:
    argv = _replace(_prune("--steps", "3", *extra), "--method", "ours")
    return [part.format(**paths, out=str(out)) for part in argv]


@pytest.mark.parametrize("point", ["layer", "save"])
def test_ctrl_c_exits_130_in_one_line_and_leaves_nothing(point, paths, tmp_path, cli_process):
    out = tmp_path / "pruned"
    process = cli_process.start(_ours(paths, out), point)
    cli_process.wait_for_pause(process, point)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "attnprune prune: interrupted" and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == [] and stdout == ""


@pytest.mark.parametrize("point", ["layer", "save"])
def test_a_kill_leaves_no_partial_out(point, paths, tmp_path, capsys, cli_process):
    out = tmp_path / "pruned"
    process = cli_process.start(_ours(paths, out), point)
    cli_process.wait_for_pause(process, point)
    process.kill()
    process.wait(timeout=30)
    assert not out.exists()  # only the hidden temporary folder beside it
    assert [p.name for p in tmp_path.iterdir()] == [".pruned" + cli.PARTIAL]
    with pytest.raises(SystemExit) as exit_:  # a new run without --resume does not silently drop the layers
        cli.main(_ours(paths, out))
    assert exit_.value.code == 2 and "--resume" in capsys.readouterr().err


def test_resume_after_a_kill_gives_the_uninterrupted_weights_bit_for_bit(
    paths, tmp_path, capsys, cli_process, weights_hash
):
    whole = tmp_path / "whole"
    assert cli.main(_ours(paths, whole)) == 0
    capsys.readouterr()
    out = tmp_path / "resumed"
    process = cli_process.start(_ours(paths, out), "layer")
    cli_process.wait_for_pause(process, "layer")
    process.kill()
    process.wait(timeout=30)
    partial = tmp_path / (".resumed" + cli.PARTIAL)
    assert [p.name for p in sorted((partial / "resume").glob("layer-*"))] == ["layer-0000.safetensors"]
    with pytest.raises(SystemExit) as exit_:  # other arguments: refused, naming what changed
        cli.main(_replace(_ours(paths, out, "--resume"), "--sparsity", "0.25"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--resume" in err and "sparsity: 0.5 then, 0.25 now" in err
    assert cli.main(_ours(paths, out, "--resume")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed_layers"] == [0] and not partial.exists()
    assert weights_hash(out) == weights_hash(whole)
    expected = json.loads((whole / cli.SUMMARY).read_text())["per_layer"]
    assert [row["fit_error"] for row in summary["per_layer"]] == [row["fit_error"] for row in expected]


def test_a_failed_resumable_run_keeps_its_finished_layers(paths, tmp_path, capsys, monkeypatch):
    out = tmp_path / "pruned"

    def fail_at_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cli.Output, "commit", fail_at_save)
    with pytest.raises(SystemExit) as exit_:
        cli.main(_ours(paths, out, "--resume"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "disk full" in err and "--resume" in err
    assert not out.exists() and len(list((tmp_path / (".pruned" + cli.PARTIAL) / "resume").glob("layer-*"))) == 2
