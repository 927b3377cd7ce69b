"""The synthetic experiment of Figure 2 (chapter 06): data, the methods compared, and the runner.

Data ([choice], see the reproduction notes): X ∈ ℝ^{n×d} with i.i.d. N(0, 1) entries, and
W_Q, W_K ∈ ℝ^{d×k} with i.i.d. N(0, σ²) entries, σ² = s / (d√k). Then every logit
S_ij = x_i W_Q W_Kᵀ x_jᵀ (i ≠ j) has mean 0 and standard deviation s, the ``logit_scale``: it sets
how peaked the dense attention is (s → 0 is uniform, s large is one-hot), whatever d and k. A
second matrix X' from the same distribution is the held-out input (our protocol: every error is
also measured on inputs the mask never saw).

Methods, each giving a pruned fused weight W̃ (d × d) scored by the relative error
‖Att(W̃) − Att(W)‖²_F / ‖Att(W)‖²_F on X (fitted) and on X' (held-out):

- ``ours``: Algorithm 1 (:func:`attnprune.core.solver.prune`) on L(M) of Definition 1.2/3.2, variants
  ``plain`` and ``projected``, outputs ``mask-only`` (B∘W) and ``reweighted`` (B∘M∘W);
- ``magnitude``, ``wanda``, ``sparsegpt`` (:mod:`attnprune.core.baselines`), applied two ways:
  ``factors``: the query and key layers x ↦ x W_Q and x ↦ x W_K, i.e. ``nn.Linear`` weights W_Qᵀ
  and W_Kᵀ (k × d) with input X, each pruned at ρ, and W̃ = W̃_Q W̃_Kᵀ; ``fused``: S = (X W) Xᵀ,
  so W acts as the linear layer x ↦ x W, whose ``nn.Linear`` weight is Wᵀ (d × d), input X.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from ..core.attention import attention_matrix, row_entropy
from ..core.baselines import APPLICATIONS, BASELINES, prune_attention
from ..core.checks import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_sparsity,
)
from ..core.masks import sparsity_of
from ..core.objective import PruningProblem
from ..core.solver import OUTPUTS, VARIANTS, prune
from ..records.compare import ratio_to_best
from ..records.results import versions


# -- the data ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticTask:
    """One draw of the synthetic problem: X (n × d, fitted), X' (n × d, held-out), W_Q, W_K (d × k)."""

    X: Tensor
    X_heldout: Tensor
    W_Q: Tensor
    W_K: Tensor
    causal: bool = False

    @property
    def W(self) -> Tensor:
        """The fused weight W = W_Q W_Kᵀ (d × d)."""
        return self.W_Q @ self.W_K.T

    def entropy(self) -> float:
        """Mean row entropy (nats) of the dense attention Att(W) on X; uniform rows give log n."""
        return row_entropy(attention_matrix(self.X, self.W, self.causal))


def factor_scale(d: int, k: int, logit_scale: float) -> float:
    """σ such that W_Q, W_K ~ N(0, σ²) give logits S_ij of standard deviation s: σ² = s/(d√k)."""
    return math.sqrt(logit_scale / (d * math.sqrt(k)))


def make_task(
    n: int,
    d: int,
    k: int,
    seed: int,
    *,
    logit_scale: float = 2.0,
    causal: bool = False,
    dtype: torch.dtype = torch.float64,
) -> SyntheticTask:
    """Draw W_Q, W_K (d × k, N(0, s/(d√k))), then X and X' (n × d, N(0, 1)) from ``seed``.

    The weights are drawn first, so for one seed they do not depend on n.
    """
    for name, value in (("n", n), ("d", d), ("k", k)):
        check_positive_int(name, value)
    check_positive("logit_scale", logit_scale)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer ≥ 0, got {seed!r}")
    gen = torch.Generator().manual_seed(seed)
    sigma = factor_scale(d, k, logit_scale)
    W_Q = sigma * torch.randn(d, k, generator=gen, dtype=dtype)
    W_K = sigma * torch.randn(d, k, generator=gen, dtype=dtype)
    X = torch.randn(n, d, generator=gen, dtype=dtype)
    X_heldout = torch.randn(n, d, generator=gen, dtype=dtype)
    return SyntheticTask(X, X_heldout, W_Q, W_K, causal)


# -- the baselines applied to attention ----------------------------------------------------------
def baseline_weight(method: str, application: str, task: SyntheticTask, sparsity: float) -> tuple[Tensor, float]:
    """The pruned fused weight W̃ (d × d) of a linear baseline applied to the factors or to W,
    and the fraction of zeros in what was pruned (both factors together, or W)."""
    return prune_attention(method, application, task.W_Q.T, task.W_K.T, task.X, sparsity, lambda q, k: q.T @ k)


# -- the grid ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepGrid:
    """Figure 2's three sweeps: λ, n and ρ each vary over their grid, the others at their default.

    A grid point is (n, λ, ρ); the union of the three sweeps is run once (the default point is
    shared by the three panels).
    """

    lams: Sequence[float]
    ns: Sequence[int]
    rhos: Sequence[float]
    lam: float
    n: int
    rho: float

    def __post_init__(self) -> None:
        for name, values, check in (
            ("lams", self.lams, check_nonnegative),
            ("ns", self.ns, check_positive_int),
            ("rhos", self.rhos, check_sparsity),
        ):
            if len(values) == 0:
                raise ValueError(f"{name} must hold at least one value")
            for value in values:
                check(name, value)
        check_nonnegative("lam", self.lam)
        check_positive_int("n", self.n)
        check_sparsity("rho", self.rho)

    def points(self) -> list[tuple[int, float, float]]:
        """The distinct (n, λ, ρ) of the three sweeps, sorted."""
        sweep = {(self.n, float(lam), self.rho) for lam in self.lams}
        sweep |= {(int(n), self.lam, self.rho) for n in self.ns}
        sweep |= {(self.n, self.lam, float(rho)) for rho in self.rhos}
        return sorted(sweep)

    def sweep(self, frame: pd.DataFrame, axis: str) -> pd.DataFrame:
        """The rows of ``frame`` on the sweep along ``axis`` ("lam", "n" or "rho")."""
        check_choice("axis", axis, ("lam", "n", "rho"))
        fixed = {"lam": self.lam, "n": self.n, "rho": self.rho}
        del fixed[axis]
        keep = pd.Series(True, index=frame.index)
        for column, value in fixed.items():
            keep &= frame[column] == value
        return frame[keep]


@dataclass(frozen=True)
class SolverSettings:
    """How Algorithm 1 is run for ``ours``: variants, number of steps, step-size rule, score."""

    variants: Sequence[str] = VARIANTS
    steps: int = 100
    step_size: float | str = "armijo"
    score: str = "magnitude"
    group: str = "matrix"
    ramp: float = 0.5

    def __post_init__(self) -> None:
        for variant in self.variants:
            check_choice("variants", variant, VARIANTS)
        check_positive_int("steps", self.steps)


# -- the runner ----------------------------------------------------------------------------------
def run_point(task: SyntheticTask, lam: float, rho: float, solver: SolverSettings) -> Iterator[dict]:
    """Every method on one task at (λ, ρ): one dict per (method, variant, output/application) with
    the fitted and held-out relative errors, the measured sparsity and the time taken."""
    problem = PruningProblem(task.X, task.W, lam, task.causal)
    heldout = PruningProblem(task.X_heldout, task.W, 0.0, task.causal)
    for variant in solver.variants:
        start = time.perf_counter()
        result = prune(
            problem,
            rho,
            variant=variant,
            steps=solver.steps,
            step_size=solver.step_size,
            score=solver.score,
            group=solver.group,
            ramp=solver.ramp,
        )
        seconds = time.perf_counter() - start
        for output in OUTPUTS:
            weight = result.pruned_weight(output)
            zeros = sparsity_of(result.mask)
            yield _row("ours", variant, output, weight, zeros, problem, heldout, seconds)
    for method in BASELINES:
        for application in APPLICATIONS:
            start = time.perf_counter()
            weight, zeros = baseline_weight(method, application, task, rho)
            seconds = time.perf_counter() - start
            yield _row(method, "", application, weight, zeros, problem, heldout, seconds)


def run_grid(
    grid: SweepGrid,
    *,
    d: int,
    ks: Sequence[int],
    seeds: Sequence[int],
    solver: SolverSettings,
    logit_scale: float = 2.0,
    causal: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Run every method at every grid point, head dimension k and seed: one row per run.

    The columns hold every parameter (d, k, n, λ, ρ, seed, logit scale, causal, solver settings),
    the method, its variant and output (``ours``) or application (baselines), the relative error on
    the fitted X and on the held-out X', the dense attention's mean row entropy, the fraction of
    zeros in the pruned object, the time in seconds, and the library versions. One task (X, X',
    W_Q, W_K) is drawn per (k, seed, n) and shared by every λ and ρ.
    """
    from tqdm import tqdm

    if not ks or not seeds:
        raise ValueError("ks and seeds must each hold at least one value")
    jobs = [(k, seed, n, lam, rho) for k in ks for seed in seeds for n, lam, rho in grid.points()]
    stamp = {f"version_{name}": value for name, value in versions().items()}
    settings = {
        "d": d,
        "logit_scale": logit_scale,
        "causal": causal,
        "steps": solver.steps,
        "step_size": str(solver.step_size),
        "score": solver.score,
        "group": solver.group,
        "ramp": solver.ramp,
    }
    rows = []
    tasks: dict[tuple[int, int, int], tuple[SyntheticTask, float]] = {}
    for k, seed, n, lam, rho in tqdm(jobs, disable=not progress, desc="synthetic"):
        if (k, seed, n) not in tasks:
            task = make_task(n, d, k, seed, logit_scale=logit_scale, causal=causal)
            tasks[k, seed, n] = task, task.entropy()
        task, entropy = tasks[k, seed, n]
        point = {"k": k, "n": n, "lam": lam, "rho": rho, "seed": seed, "entropy": entropy}
        for row in run_point(task, lam, rho, solver):
            rows.append({**settings, **point, **row, **stamp})
    return pd.DataFrame(rows)


# -- summaries -----------------------------------------------------------------------------------
POINT = ["k", "n", "lam", "rho"]


def seed_summary(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean, min and max of ``value`` over seeds, per grid point (k, n, λ, ρ) and method label."""
    grouped = frame.groupby([*POINT, "method", "variant", "output", "label"], sort=True)[value]
    return grouped.agg(["mean", "min", "max"]).reset_index()


def margins(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per grid point and ``ours`` variant: its seed-mean ``value``, the best baseline's (lowest
    seed-mean over magnitude, Wanda, SparseGPT, factors or fused) and the ratio ours / best.

    A ratio below 1 means ours beats every baseline there; at most 1/2, by at least a factor 2
    (:mod:`attnprune.records.compare`, whose :func:`~attnprune.records.compare.ratio_to_best` this is).
    """
    means = seed_summary(frame, value)
    table = ratio_to_best(means, "mean", POINT, is_baseline=means["method"] != "ours")
    table = table.rename(columns={"mean": "ours"})
    return table[[*POINT, "label", "ours", "best_baseline", "baseline", "ratio"]]


def method_label(method: str, variant: str, output: str) -> str:
    """A short legend label: "ours projected, reweighted", "SparseGPT (fused)", ..."""
    if method == "ours":
        return f"ours {variant}, {output}"
    return f"{BASELINES[method].label} ({output})"


def _row(
    method: str,
    variant: str,
    output: str,
    weight: Tensor,
    zeros: float,
    problem: PruningProblem,
    heldout: PruningProblem,
    seconds: float,
) -> dict:
    return {
        "method": method,
        "variant": variant,
        "output": output,
        "label": method_label(method, variant, output),
        "err_fit": problem.relative_error(weight),
        "err_heldout": heldout.relative_error(weight),
        "sparsity": zeros,
        "time_s": seconds,
    }
