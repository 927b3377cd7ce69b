"""The ``attnprune`` command line: --help, and a tiny prune + eval end to end on a saved tiny
Llama-3.2-shaped model with the real Llama 3 tokenizer and a local text file."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from attnprune import cli
from attnprune.core.masks import n_pruned
from attnprune.llm.models import qk_modules


@pytest.fixture(scope="module")
def saved_model(tiny_llama, llama3_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tiny_llama.save_pretrained(folder)
    llama3_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, random_text):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(random_text(1500), encoding="utf-8")
    return path


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    assert "prune" in capsys.readouterr().out
    for command, options in {
        "prune": [
            "--model",
            "--method",
            "--sparsity",
            "--calib",
            "--out",
            "--n-calibration",
            "--seq-len",
            "--layers",
            "--capture",
            "--steps",
            "--support",
            "--device",
            "--no-progress",
            "--overwrite",
            "--resume",
        ],
        "eval": ["--model", "--data", "--split", "--seq-len", "--max-sequences", "--summary"],
    }.items():
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        for option in options:
            assert option in text, f"{command} --help does not mention {option}"
        assert text.count("default") >= 3


def _prune(model, text, out, method: str, sparsity: str, *extra: str) -> list[str]:
    """The argv of ``attnprune prune`` with the four required options, then ``extra``."""
    return ["prune", "--model", str(model), "--method", method, "--sparsity", sparsity,
            "--calib", str(text), "--out", str(out), *extra]  # fmt: skip


def test_prune_then_eval_end_to_end(saved_model, text_file, tmp_path, capsys):
    out = tmp_path / "pruned"
    small = ("--n-calibration", "2", "--seq-len", "16", "--layers", "1", "--steps", "3", "--no-progress")
    code = cli.main(_prune(saved_model, text_file, out, "ours", "0.5", *small))
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((out / cli.SUMMARY).read_text())
    assert summary["method"] == "ours" and summary["layers"] == [1] and summary["n_calibration"] == 2
    assert summary["options"]["steps"] == 3 and summary["sparsity_summary"]["pruned_weights"] == 0.5
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    for module in qk_modules(reloaded, 1):
        assert torch.all((module.weight == 0).sum(1) == n_pruned(module.weight.shape[1], 0.5))
    assert all(int((m.weight == 0).sum()) == 0 for m in qk_modules(reloaded, 0))

    report = tmp_path / "eval.json"
    argv = ["eval", "--model", str(out), "--data", str(text_file), "--seq-len", "16", "--max-sequences", "3"]
    assert cli.main([*argv, "--no-progress", "--summary", str(report)]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation == json.loads(report.read_text())
    assert evaluation["n_sequences"] == 3 and evaluation["perplexity"] > 1.0


def test_baseline_prune_and_errors(saved_model, text_file, tmp_path, capsys):
    out = tmp_path / "wanda"
    small = ("--n-calibration", "2", "--seq-len", "16", "--no-progress")
    assert cli.main(_prune(saved_model, text_file, out, "wanda", "0.3", *small)) == 0
    assert json.loads(capsys.readouterr().out)["sparsity_summary"]["pruned_weights"] == pytest.approx(0.3, abs=2e-3)
    with pytest.raises(SystemExit) as exit_:
        cli.main(_prune(saved_model, text_file, out, "wanda", "0.3", "--steps", "3"))
    assert exit_.value.code == 2
    assert "--steps apply to --method ours only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(_prune(saved_model, text_file, out, "wanda", "1.5"))
    assert "sparsity" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", "--model", str(tmp_path / "missing"), "--data", str(text_file)])
    assert "no such local model folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(_prune(saved_model, text_file, out, "obs", "0.3"))
    assert "invalid choice" in capsys.readouterr().err


def test_relative_paths_are_relative_to_the_current_directory(saved_model, text_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # outside the repository: the files land here, not under the repository root
    small = ("--n-calibration", "1", "--seq-len", "8", "--layers", "0", "--no-progress")
    assert cli.main(_prune(saved_model, text_file, "pruned", "magnitude", "0.5", *small)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (tmp_path / "pruned" / "config.json").is_file()
    assert json.loads((tmp_path / "pruned" / cli.SUMMARY).read_text()) == summary
    argv = ["eval", "--model", "pruned", "--data", str(text_file), "--seq-len", "8", "--max-sequences", "1"]
    assert cli.main([*argv, "--no-progress", "--summary", "reports/eval.json"]) == 0
    assert json.loads((tmp_path / "reports" / "eval.json").read_text()) == json.loads(capsys.readouterr().out)
