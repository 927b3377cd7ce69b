"""``attnprune prune --objective/--scope``: attention-aware reconstruction from the command line, on
a saved small Llama with the real Llama 3 tokenizer and a local text file (or Austen, whose
held-out split gives the early-stopping sequences): the checkpoint reloads with exactly the
sparsity in every pruned row, the bad combinations are one line naming the flag, and a killed run
resumes to the same weights, bit for bit (a subprocess stopped at ``ATTNPRUNE_TEST_PAUSE_AT``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from attnprune import cli
from attnprune.core.masks import n_pruned
from attnprune.llm.models import decoder_layers
from attnprune.llm.objectives import MODULES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paths(small_llama, llama3_tokenizer, tmp_path_factory, random_text) -> dict[str, str]:
    base = tmp_path_factory.mktemp("refit")
    model = base / "mini"
    small_llama(vocab_size=128256, max_position_embeddings=131072).save_pretrained(model)
    llama3_tokenizer.save_pretrained(model)
    (base / "calib.txt").write_text(random_text(1500), encoding="utf-8")
    return {"model": str(model), "calib": str(base / "calib.txt")}


def _prune(paths: dict, out: Path, *extra: str, method: str = "wanda", calib: str | None = None) -> list[str]:
    return ["prune", "--model", paths["model"], "--method", method, "--sparsity", "0.5",
            "--calib", calib or paths["calib"], "--out", str(out), "--n-calibration", "2", "--seq-len", "16",
            "--no-progress", *extra]  # fmt: skip


def _refit(paths: dict, out: Path, *extra: str, **options) -> list[str]:
    """A refit on the local text file: no held-out split there, so no early stopping."""
    return _prune(paths, out, "--steps", "2", "--n-validation", "0", *extra, **options)


def _run_ok(argv: list[str], capsys) -> dict:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _check_rows(folder: Path, names: tuple[str, ...], sparsity: float = 0.5) -> None:
    """Every pruned row of the reloaded checkpoint has exactly round(ρ·d) zeros; the rest is dense."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    for block in decoder_layers(model):
        for name, path in MODULES.items():
            W = block.get_submodule(path).weight
            zeros = (W == 0).sum(1)
            if name in names:
                assert torch.all(zeros == n_pruned(W.shape[1], sparsity)), name
            else:
                assert int(zeros.sum()) == 0, name


def test_help_mentions_every_new_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["prune", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("--objective", "--scope", "--n-validation", "frobenius", "kl", "output", "block", "qkvo",
                 "recommended", "D²Prune", "needed for --scope all", "with --objective: Adam steps",
                 "--refit-window", "--damping", "published 0.01"):  # fmt: skip
        assert part in text, part


def test_objective_output_end_to_end(paths, tmp_path, capsys):
    out = tmp_path / "refit"
    summary = _run_ok(_refit(paths, out, "--objective", "output"), capsys)
    assert summary == json.loads((out / cli.SUMMARY).read_text())
    assert (summary["method"], summary["objective"], summary["scope"], summary["sparsity"]) == (
        "wanda", "output", "qk", 0.5
    )  # fmt: skip
    assert summary["layers"] == [0, 1] and summary["resumed_layers"] == [] and summary["n_validation"] == 0
    assert summary["config"]["refit"]["steps"] == 2 and summary["config"]["refit"]["objective"] == "output"
    assert [row["layer"] for row in summary["per_layer"]] == [0, 1]
    assert all(row["calibration"] is not None and row["validation"] is None for row in summary["per_layer"])
    assert summary["sparsity_summary"]["pruned_weights"] == 0.5
    assert summary["sparsity_summary"]["by_name"] == {"q": 0.5, "k": 0.5}
    assert {"model", "calib", "seed", "out", "versions"} <= set(summary)
    _check_rows(out, ("q", "k"))
    linear = tmp_path / "linear"  # the refit moved the kept weights away from the linear method's
    _run_ok(_prune(paths, linear, "--layers", "0"), capsys)
    refitted, alone = load_file(out / "model.safetensors"), load_file(linear / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert ((refitted[name] == 0) == (alone[name] == 0)).float().mean() > 0.95
    assert not torch.equal(refitted[name], alone[name])
    v_proj = "model.layers.0.self_attn.v_proj.weight"  # the window's dense v_proj moved and stays dense
    assert not torch.equal(refitted[v_proj], alone[v_proj]) and bool((refitted[v_proj] != 0).all())
    kept = tmp_path / "kept"  # --refit-window pruned: the kept weights alone, v_proj untouched
    _run_ok(_refit(paths, kept, "--objective", "output", "--refit-window", "pruned"), capsys)
    assert torch.equal(load_file(kept / "model.safetensors")[v_proj], alone[v_proj])


def test_scope_qkvo_with_output(paths, tmp_path, capsys):
    out = tmp_path / "qkvo"
    summary = _run_ok(_refit(paths, out, "--objective", "output", "--scope", "qkvo", method="sparsegpt"), capsys)
    assert summary["scope"] == "qkvo" and set(summary["sparsity_summary"]["by_name"]) == {"q", "k", "v", "o"}
    assert summary["config"]["damping"] is None and summary["config"]["refit"]["damping"] == cli.REFIT.damping
    _check_rows(out, ("q", "k", "v", "o"))
    own = tmp_path / "own"  # SparseGPT's published dampening: another support
    argv = _refit(paths, own, "--objective", "output", "--scope", "qkvo", "--damping", "0.01", method="sparsegpt")
    assert _run_ok(argv, capsys)["config"]["damping"] == 0.01
    ours, theirs = load_file(out / "model.safetensors"), load_file(own / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(ours[name] == 0, theirs[name] == 0)


def test_scope_all_with_block(paths, tmp_path, capsys):
    out = tmp_path / "all"
    summary = _run_ok(_refit(paths, out, "--objective", "block", "--scope", "all", "--layers", "1"), capsys)
    assert summary["layers"] == [1] and summary["sparsity_summary"]["pruned_weights"] == 0.5
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    for index, block in enumerate(decoder_layers(model)):
        for path in MODULES.values():
            W = block.get_submodule(path).weight
            expected = n_pruned(W.shape[1], 0.5) if index == 1 else 0
            assert torch.all((W == 0).sum(1) == expected), (index, path)


def test_scope_qkvo_without_objective_is_the_linear_method_alone(paths, tmp_path, capsys):
    out = tmp_path / "linear"
    summary = _run_ok(_prune(paths, out, "--scope", "qkvo", method="magnitude"), capsys)
    assert summary["objective"] is None and summary["config"]["refit"] is None
    _check_rows(out, ("q", "k", "v", "o"))


def test_early_stopping_on_the_held_out_split(paths, tmp_path, capsys):
    argv = _prune(paths, tmp_path / "austen", "--objective", "output", "--steps", "5", "--n-validation", "2",
                  "--layers", "1", calib="austen")  # fmt: skip
    summary = _run_ok(argv, capsys)
    assert summary["n_validation"] == 2
    (row,) = summary["per_layer"]
    assert row["validation"] is not None and row["validation"] <= row["validation_start"]


def test_output_folder_resume_files_hold_every_weight_of_the_scope(tmp_path):
    out = cli.Output(str(tmp_path / "out"), overwrite=False, resume=True, model="x")
    weights = {name: torch.randn(4, 4) for name in ("q", "k", "v", "o")}
    out.save_layer(0, weights)
    done = out.finished_layers("cpu", ("q", "k", "v", "o"))
    assert list(done) == [0] and all(torch.equal(done[0][n], weights[n]) for n in weights)
    with pytest.raises(cli.CommandError, match="--resume: cannot read the finished layer"):
        out.finished_layers("cpu", tuple(MODULES))


# Each case: the arguments after the common ones, then what the one-line error must contain.
BAD = {
    "ours-with-objective": (("--objective", "output"), "ours", ["--objective", "--method ours", "linear"]),
    "kl-cannot-refit-v-o": (("--objective", "kl", "--scope", "qkvo"), "wanda", ["--objective 'kl'", "--scope"]),
    "output-cannot-refit-the-mlp": (("--objective", "output", "--scope", "all"), "wanda", ["--objective", "--scope"]),
    "lam-with-objective": (("--objective", "output", "--lam", "0.1"), "wanda", ["--lam", "--objective"]),
    "support-with-objective": (("--objective", "output", "--support", "wanda"), "wanda", ["--support"]),
    "scope-with-ours": (("--scope", "qkvo"), "ours", ["--scope qkvo", "--method ours"]),
    "n-validation-without-objective": (("--n-validation", "2"), "wanda", ["--n-validation", "--objective"]),
    "n-validation-negative": (("--objective", "output", "--n-validation", "-1"), "wanda", ["--n-validation"]),
    "refit-window-without-objective": (("--refit-window", "pruned"), "wanda", ["--refit-window", "--objective"]),
    "refit-window-unknown": (("--objective", "output", "--refit-window", "v"), "wanda", ["--refit-window"]),
    "steps-without-objective": (("--scope", "qkvo", "--steps", "2"), "wanda", ["--steps", "--method ours"]),
    "capture-dense-with-objective": (("--objective", "output", "--capture", "dense"), "wanda", ["--capture"]),
    "objective-unknown": (("--objective", "mse"), "wanda", ["--objective", "invalid choice"]),
    "scope-unknown": (("--scope", "mlp"), "wanda", ["--scope", "invalid choice"]),
    "objective-with-structured": (("--structured", "--objective", "output"), "flap", ["--objective", "--structured"]),
    "damping-without-objective": (("--damping", "0.1"), "sparsegpt", ["--damping", "--objective"]),
    "damping-with-wanda": (("--objective", "output", "--damping", "0.1"), "wanda", ["--damping", "sparsegpt"]),
    "damping-negative": (("--objective", "output", "--damping", "-1"), "sparsegpt", ["--damping"]),
    "damping-with-structured": (("--structured", "--damping", "0.1"), "flap", ["--damping", "--structured"]),
}


@pytest.mark.parametrize("name", [*BAD, "text-file-has-no-heldout-split"])
def test_bad_combinations_are_one_line_naming_the_flag(name, paths, tmp_path, monkeypatch, refused):
    from attnprune.llm import models

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_model", forbidden)
    monkeypatch.setattr(models, "load_model", forbidden)
    if name == "text-file-has-no-heldout-split":  # --n-validation defaults to 4
        argv = _prune(paths, tmp_path / "pruned", "--objective", "output")
        expected = ["--calib", "held-out", "--n-validation 0"]
    else:
        extra, method, expected = BAD[name]
        argv = _prune(paths, tmp_path / "pruned", *extra, method=method)
    refused(argv, tmp_path / "pruned", expected)


# -- resume: a subprocess killed after its first layer, then --resume ---------------------------------


def test_resume_after_a_kill_gives_the_uninterrupted_weights_bit_for_bit(
    paths, tmp_path, capsys, cli_process, weights_hash
):
    argv = lambda out, *extra: _refit(paths, out, "--objective", "output", "--scope", "qkvo", *extra)
    whole = tmp_path / "whole"
    assert cli.main(argv(whole)) == 0
    capsys.readouterr()
    out = tmp_path / "resumed"
    process = cli_process.start(argv(out), "layer")
    cli_process.wait_for_pause(process, "layer")
    process.kill()
    process.wait(timeout=30)
    partial = tmp_path / (".resumed" + cli.PARTIAL)
    (layer,) = sorted((partial / "resume").glob("layer-*"))
    assert layer.name == "layer-0000.safetensors" and sorted(load_file(layer)) == ["k", "o", "q", "v"]
    with pytest.raises(SystemExit) as exit_:  # other arguments: refused, naming what changed
        cli.main(_replace(argv(out, "--resume"), "--objective", "block"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--resume" in err and "objective: 'output' then, 'block' now" in err
    assert cli.main(argv(out, "--resume")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed_layers"] == [0] and not partial.exists()
    assert weights_hash(out) == weights_hash(whole)


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv
