"""The synthetic experiment of Figure 2: data, baselines applied to attention, grid and runner."""

import math

import pandas as pd
import pytest
import torch
import yaml

from attnprune import notebooks
from attnprune.core.attention import scores
from attnprune.core.baselines import magnitude_prune, wanda_prune
from attnprune.core.masks import n_pruned
from attnprune.experiments.synthetic import (
    APPLICATIONS,
    BASELINES,
    SolverSettings,
    SweepGrid,
    baseline_weight,
    make_task,
    margins,
    run_grid,
    seed_summary,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small matrices: one torch thread is fastest, and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_make_task_shapes_dtype_and_determinism():
    task = make_task(40, 12, 5, seed=3)
    assert task.X.shape == task.X_heldout.shape == (40, 12)
    assert task.W_Q.shape == task.W_K.shape == (12, 5)
    assert task.W.shape == (12, 12) and task.X.dtype == torch.float64
    again = make_task(40, 12, 5, seed=3)
    assert torch.equal(task.X, again.X) and torch.equal(task.W, again.W)
    other = make_task(40, 12, 5, seed=4)
    assert not torch.equal(task.X, other.X)
    assert not torch.equal(task.X, task.X_heldout)


def test_the_weights_of_a_seed_do_not_depend_on_n():
    assert torch.equal(make_task(16, 8, 4, seed=1).W, make_task(64, 8, 4, seed=1).W)


@pytest.mark.parametrize("k", [4, 16, 64])
def test_logit_scale_is_the_standard_deviation_of_the_logits(k):
    stds = []
    for seed in range(20):
        task = make_task(64, 64, k, seed, logit_scale=1.5)
        S = scores(task.X, task.W)
        stds.append(float(S[~torch.eye(64, dtype=torch.bool)].std()))
    assert abs(sum(stds) / len(stds) - 1.5) < 0.15


def test_default_regime_is_neither_uniform_nor_one_hot():
    for n in (32, 128, 512):
        task = make_task(n, 64, 16, seed=0)
        ratio = task.entropy() / math.log(n)
        assert 0.4 < ratio < 0.9, (n, ratio)
    assert make_task(128, 64, 16, 0, logit_scale=0.05).entropy() > 0.99 * math.log(128)
    assert make_task(128, 64, 16, 0, logit_scale=50.0).entropy() < 0.2 * math.log(128)


def test_make_task_refuses_bad_input():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        make_task(0, 8, 4, seed=0)
    with pytest.raises(ValueError, match="logit_scale"):
        make_task(8, 8, 4, seed=0, logit_scale=0.0)
    with pytest.raises(ValueError, match="seed"):
        make_task(8, 8, 4, seed=-1)


@pytest.mark.parametrize("method", BASELINES)
def test_factors_prune_both_linear_layers_at_rho_and_fuse_them(method):
    task = make_task(50, 16, 6, seed=2)
    W_tilde, zeros = baseline_weight(method, "factors", task, 0.5)
    assert W_tilde.shape == (16, 16)
    assert zeros == pytest.approx(2 * 6 * n_pruned(16, 0.5) / (2 * 6 * 16))
    if method == "magnitude":
        query = magnitude_prune(task.W_Q.T, 0.5).weight
        key = magnitude_prune(task.W_K.T, 0.5).weight
        torch.testing.assert_close(W_tilde, query.T @ key)


def test_fused_prunes_W_as_the_layer_x_to_xW():
    """The nn.Linear weight of x ↦ xW is Wᵀ: each column of W is one output row, with X as input."""
    task = make_task(50, 16, 6, seed=2)
    W_tilde, zeros = baseline_weight("wanda", "fused", task, 0.25)
    expected = wanda_prune(task.W.T, task.X, 0.25).weight.T
    torch.testing.assert_close(W_tilde, expected, rtol=0, atol=0)
    assert ((W_tilde == 0).sum(dim=0) == n_pruned(16, 0.25)).all()
    assert zeros == pytest.approx(n_pruned(16, 0.25) / 16)


@pytest.mark.parametrize("application", APPLICATIONS)
def test_baselines_at_zero_sparsity_keep_the_attention(application):
    task = make_task(30, 8, 8, seed=5)
    for method in BASELINES:
        W_tilde, _ = baseline_weight(method, application, task, 0.0)
        torch.testing.assert_close(W_tilde, task.W)


def test_sweep_grid_runs_the_union_of_three_sweeps_once():
    grid = SweepGrid(lams=[0.0, 0.1], ns=[8, 16], rhos=[0.25, 0.5], lam=0.1, n=16, rho=0.5)
    assert grid.points() == [(8, 0.1, 0.5), (16, 0.0, 0.5), (16, 0.1, 0.25), (16, 0.1, 0.5)]
    frame = pd.DataFrame(grid.points(), columns=["n", "lam", "rho"])
    assert grid.sweep(frame, "lam")["lam"].tolist() == [0.0, 0.1]
    assert grid.sweep(frame, "n")["n"].tolist() == [8, 16]
    assert grid.sweep(frame, "rho")["rho"].tolist() == [0.25, 0.5]
    with pytest.raises(ValueError, match="axis"):
        grid.sweep(frame, "k")
    with pytest.raises(ValueError, match="rhos"):
        SweepGrid(lams=[0.0], ns=[8], rhos=[1.0], lam=0.0, n=8, rho=0.5)
    with pytest.raises(ValueError, match="ns must hold"):
        SweepGrid(lams=[0.0], ns=[], rhos=[0.5], lam=0.0, n=8, rho=0.5)


@pytest.fixture(scope="module")
def tiny_runs():
    grid = SweepGrid(lams=[0.0, 1e-3], ns=[12, 24], rhos=[0.5], lam=1e-3, n=24, rho=0.5)
    solver = SolverSettings(steps=5)
    return grid, run_grid(grid, d=8, ks=[2, 8], seeds=[0, 1], solver=solver)


def test_run_grid_gives_one_row_per_point_seed_and_method(tiny_runs):
    grid, runs = tiny_runs
    per_point = 2 * 2 + len(BASELINES) * len(APPLICATIONS)  # ours: 2 variants × 2 outputs
    assert len(runs) == len(grid.points()) * 2 * 2 * per_point
    assert not runs.duplicated(["k", "n", "lam", "rho", "seed", "method", "variant", "output"]).any()
    for column in (
        "d",
        "k",
        "n",
        "lam",
        "rho",
        "seed",
        "logit_scale",
        "causal",
        "steps",
        "entropy",
        "err_fit",
        "err_heldout",
        "sparsity",
        "time_s",
        "version_torch",
        "version_attnprune",
    ):
        assert column in runs.columns, column
    assert (runs["err_fit"] >= 0).all() and (runs["err_heldout"] >= 0).all()
    assert (runs["time_s"] > 0).all()


def test_every_method_prunes_exactly_rho(tiny_runs):
    _, runs = tiny_runs
    ours = runs[runs["method"] == "ours"]
    assert (ours["sparsity"] == n_pruned(64, 0.5) / 64).all()
    assert (runs[runs["method"] != "ours"]["sparsity"] == 0.5).all()


def test_the_fitted_error_is_the_paper_metric_on_the_fitted_x(tiny_runs):
    _, runs = tiny_runs
    row = runs[
        (runs["method"] == "magnitude")
        & (runs["output"] == "fused")
        & (runs["k"] == 8)
        & (runs["seed"] == 1)
        & (runs["n"] == 24)
        & (runs["lam"] == 0.0)
    ].iloc[0]
    task = make_task(24, 8, 8, seed=1)
    W_tilde = magnitude_prune(task.W.T, 0.5).weight.T
    from attnprune.core.attention import relative_error

    assert row["err_fit"] == pytest.approx(relative_error(task.X, W_tilde, task.W))
    assert row["err_heldout"] == pytest.approx(relative_error(task.X_heldout, W_tilde, task.W))


def test_seed_summary_and_margins():
    rows = []
    for seed, (ours, wanda, sgpt) in enumerate([(0.1, 0.4, 0.3), (0.3, 0.6, 0.5)]):
        base = {"k": 4, "n": 8, "lam": 0.0, "rho": 0.5, "seed": seed}
        rows += [
            {**base, "method": "ours", "variant": "plain", "output": "mask-only", "label": "o", "e": ours},
            {**base, "method": "wanda", "variant": "", "output": "fused", "label": "w", "e": wanda},
            {**base, "method": "sparsegpt", "variant": "", "output": "fused", "label": "s", "e": sgpt},
        ]
    frame = pd.DataFrame(rows)
    summary = seed_summary(frame, "e").set_index("label")
    assert summary.loc["o", "mean"] == pytest.approx(0.2)
    assert summary.loc["o", "min"] == pytest.approx(0.1) and summary.loc["o", "max"] == pytest.approx(0.3)
    table = margins(frame, "e")
    assert len(table) == 1
    assert table.loc[0, "best_baseline"] == "s"
    assert table.loc[0, "ratio"] == pytest.approx(0.2 / 0.4)


def test_margins_divide_each_variant_by_the_best_baseline_of_its_own_point():
    rows = []
    for rho, errors in [
        (0.5, {"o": 0.1, "p": 0.3, "w": 0.4, "s": 0.2}),
        (0.7, {"o": 0.9, "p": 0.3, "w": 0.6, "s": 0.8}),
    ]:
        for label, e in errors.items():
            method = "ours" if label in "op" else "baseline"
            rows.append(
                {
                    "k": 4,
                    "n": 8,
                    "lam": 0.0,
                    "rho": rho,
                    "seed": 0,
                    "method": method,
                    "variant": "",
                    "output": "",
                    "label": label,
                    "e": e,
                }
            )
    table = margins(pd.DataFrame(rows), "e")
    assert list(table.columns) == ["k", "n", "lam", "rho", "label", "ours", "best_baseline", "baseline", "ratio"]
    by = table.set_index(["rho", "label"])
    assert by["best_baseline"].to_dict() == {(0.5, "o"): "s", (0.5, "p"): "s", (0.7, "o"): "w", (0.7, "p"): "w"}
    assert by["ratio"].tolist() == pytest.approx([0.5, 1.5, 1.5, 0.5])


def test_the_chapter_profiles():
    """quick is the chapter's defaults; full is the paper-sized grid with at least 5 seeds."""
    profiles = yaml.safe_load((notebooks.NOTEBOOKS / "profiles" / "06_synthetic.yml").read_text())
    full = profiles["full"]
    assert len(full["seeds"]) >= 5
    assert full["ks"] == [16, 64]
    chapter = (notebooks.NOTEBOOKS / "06_synthetic.md").read_text()
    parameters = chapter.split(":tags: [parameters]", 1)[1].split("```", 1)[0]
    for name in full:
        assert f"\n{name} = " in parameters, f"profile parameter {name} is not in the parameters cell"
    assert "\nd = 64" in parameters and "\nks = [16, 64]" in parameters
    grid = SweepGrid(lams=full["lams"], ns=full["ns"], rhos=full["rhos"], lam=1e-3, n=128, rho=0.5)
    assert len(grid.points()) >= len(full["lams"]) + len(full["ns"]) + len(full["rhos"]) - 2
    assert max(full["ns"]) >= 1024 and 0.5 in full["rhos"]
