"""``attnprune prune --structured`` (Part II, arXiv 2412.12441) and ``attnprune eval`` of what it writes:
a sliced checkpoint that is smaller, reloads and evaluates; every bad argument refused in one line
naming the flag, before the model loads; the output written whole or not at all."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from attnprune import cli
from attnprune.structured import prune as structured_prune
from attnprune.structured.slicing import CONFIG_KEY, load_sliced


@pytest.fixture(scope="module")
def paths(small_llama, llama3_tokenizer, tmp_path_factory, random_text) -> dict[str, str]:
    base = tmp_path_factory.mktemp("structured")
    small_llama(vocab_size=128256).save_pretrained(base / "mini")  # fits the Llama 3 tokenizer
    llama3_tokenizer.save_pretrained(base / "mini")
    (base / "calib.txt").write_text(random_text(1500), encoding="utf-8")
    (base / "gpt2").mkdir()
    (base / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    return {"mini": str(base / "mini"), "calib": str(base / "calib.txt"), "gpt2": str(base / "gpt2")}


def _prune(paths: dict, out, *extra: str, method: str = "numerical", sparsity: str = "0.3") -> list[str]:
    return ["prune", "--structured", "--model", paths["mini"], "--method", method, "--sparsity", sparsity,
            "--calib", paths["calib"], "--out", str(out), "--n-calibration", "4", "--seq-len", "16",
            "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def pruned(paths, tmp_path_factory) -> tuple[Path, dict]:
    """One structured prune (numerical, global, refit) of the mini model: its folder and printed summary."""
    out = tmp_path_factory.mktemp("pruned") / "numerical"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(_prune(paths, out)) == 0
    return out, json.loads(printed.getvalue())


def test_help_says_what_structured_changes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--structured", "--allocation", "--compensation", "--gqa", "--min-heads", "--min-channels"):
        assert option in text
    assert "With --structured, one of numerical, flap, wanda-sp, magnitude, random" in text
    assert f"without --structured, one of {', '.join(cli.METHODS)}" in text


def test_prune_structured_then_eval_round_trip(pruned, paths, tmp_path, capsys):
    out, summary = pruned
    assert summary == json.loads((out / cli.SUMMARY).read_text())
    assert summary["structured"] and summary["method"] == "numerical" and summary["sparsity"] == 0.3
    assert summary["options"]["allocation"] == "global" and summary["options"]["compensation"] == "refit"
    parameters, linear = summary["parameters"], summary["linear_parameters"]
    assert parameters["after"] < parameters["before"]
    assert parameters["before"] - parameters["after"] == linear["before"] - linear["after"]
    assert linear["removed_fraction"] == pytest.approx(0.3, abs=0.05)
    assert [row["heads"] for row in summary["per_layer"]] == [4, 4]
    assert all(1 <= row["kept_channels"] < row["channels"] == 128 for row in summary["per_layer"])
    assert CONFIG_KEY in json.loads((out / "config.json").read_text())
    reloaded = load_sliced(out)
    assert sum(p.numel() for p in reloaded.parameters()) == parameters["after"]
    argv = ["eval", "--model", str(out), "--data", paths["calib"], "--seq-len", "16", "--max-sequences", "2"]
    assert cli.main([*argv, "--no-progress"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["structured"] and evaluation["parameters"] == parameters["after"]
    assert evaluation["n_sequences"] == 2 and 1.0 < evaluation["perplexity"] < float("inf")


def test_uniform_flap_with_bias_and_whole_kv_groups(paths, tmp_path, capsys):
    out = tmp_path / "flap"
    extra = ("--allocation", "uniform", "--compensation", "bias", "--gqa", "group")
    assert cli.main(_prune(paths, out, *extra, method="flap", sparsity="0.5")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(row["kept_heads"], row["kept_kv_heads"], row["kept_channels"]) for row in summary["per_layer"]] == [
        (2, 1, 64),
        (2, 1, 64),
    ]
    sizes = json.loads((out / "config.json").read_text())[CONFIG_KEY]
    assert all(layer["o_proj_bias"] and layer["down_proj_bias"] for layer in sizes)  # FLAP's bias
    model = load_sliced(out)
    assert model.model.layers[0].self_attn.k_proj.out_features == 16  # one KV head of dimension 16 left


def test_relative_out_replaces_an_earlier_model_with_overwrite(paths, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pruned").mkdir()
    (tmp_path / "pruned" / "config.json").write_text("{}")  # an earlier model folder
    (tmp_path / "pruned" / "stale.txt").write_text("from the earlier run\n")
    assert cli.main(_prune(paths, "pruned", "--overwrite", method="random", sparsity="0.2")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "pruned" / cli.SUMMARY).read_text()) == summary and summary["method"] == "random"
    assert not (tmp_path / "pruned" / "stale.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]


# -- bad input: one line naming the flag, exit 2, before the model loads -----------------------------------
# Each case: {flag: new value} (None: the flag removed), the flags added, what the one-line error must contain.
CASES = {
    "sparsity-1": ({"--sparsity": "1"}, (), ["--sparsity", "[0, 1)"]),
    "sparsity-negative": ({"--sparsity": "-0.1"}, (), ["--sparsity", "[0, 1)"]),
    "method-ours": ({"--method": "ours"}, (), ["--method 'ours'", "with --structured use one of numerical"]),
    "method-unknown": ({"--method": "obs"}, (), ["--method", "invalid choice", "with --structured from numerical"]),
    "uniform-empties-a-layer": (
        {"--sparsity": "0.9"},
        ("--allocation", "uniform"),
        ["--sparsity 0.9 would leave 0 of the 2 attention units of layer 0", "--min-heads", "--allocation global"],
    ),
    "global-unreachable": ({"--sparsity": "0.9"}, (), ["--sparsity 0.9 cannot be reached", "--min-heads"]),
    "min-heads-above-the-heads": ({}, ("--min-heads", "9"), ["--min-heads (9) is more than layer 0's 4 query heads"]),
    "min-channels-0": ({}, ("--min-channels", "0"), ["--min-channels", "positive"]),
    "compensation-unknown": ({}, ("--compensation", "obs"), ["--compensation", "invalid choice"]),
    "resume": ({}, ("--resume",), ["--resume does not apply to --structured"]),
    "layers": ({}, ("--layers", "0"), ["--layers do not apply to --structured"]),
    "capture": ({}, ("--capture", "dense"), ["--capture do not apply to --structured"]),
    "ours-option": ({}, ("--steps", "3"), ["--steps do not apply to --structured"]),
    "not-llama": ({"--model": "{gpt2}"}, (), ["--model", "Llama-like", "'gpt2'"]),
    "compensation-without-structured": (
        {"--structured": None, "--method": "wanda"},
        ("--compensation", "bias"),
        ["--compensation apply to --structured only"],
    ),
    "structured-method-without-structured": (
        {"--structured": None, "--method": "flap"},
        (),
        ["--method 'flap' is a structured score", "add --structured"],
    ),
}


def _argv(paths: dict, out: Path, replace: dict, extra: tuple) -> list[str]:
    argv = _prune(paths, out, *extra)
    for flag, value in replace.items():
        if value is None:
            argv.remove(flag)
        else:
            argv[argv.index(flag) + 1] = value.format(**paths)
    return argv


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_naming_the_flag_before_the_model_loads(name, paths, tmp_path, monkeypatch, refused):
    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_model", forbidden)
    monkeypatch.setattr(structured_prune, "load_pruned", forbidden)
    replace, extra, expected = CASES[name]
    refused(_argv(paths, tmp_path / "pruned", replace, extra), tmp_path / "pruned", expected)


def test_q_k_pruning_of_a_sliced_checkpoint_is_refused(pruned, paths, tmp_path, capsys):
    argv = _prune(paths, tmp_path / "again", method="wanda")
    argv.remove("--structured")
    argv[argv.index("--model") + 1] = str(pruned[0])
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "structured-pruned (sliced) checkpoint" in err and "--model" in err


def test_a_failure_while_writing_leaves_the_earlier_model_and_nothing_else(
    pruned, paths, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "config.json").write_text("{}")  # an earlier model, replaced only when the new one is whole

    def fail(point: str) -> None:
        if point == "save":  # the weights are written in the hidden folder, the tokenizer not yet
            raise OSError("disk full")

    monkeypatch.setattr(cli, "_pause", fail)
    with pytest.raises(SystemExit) as exit_:
        cli.main(_prune(paths, out, "--overwrite"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "disk full" in err
    assert [p.name for p in tmp_path.iterdir()] == ["pruned"] and [p.name for p in out.iterdir()] == ["config.json"]
