"""The "fused" experiment on a real model: the paper's objective on real weights and inputs
(chapter 07; the analogue of the paper's Figure 3).

For decoder layer ℓ and query head h, with KV head g(h) = h // (h_q/h_kv) under grouped-query
attention and head dimension k, the fused weight is

    W_h = W_{Q,h} W_{K,g(h)}ᵀ / √k   (d × d),   W_{Q,h} = q_proj.weight[h·k:(h+1)·k]ᵀ (d × k),

so X W_h Xᵀ = Q_h K_{g(h)}ᵀ/√k are the layer's attention logits *without the rotary embedding*,
with X the layer's attention input (after its input norm). Each head's Att(W_h) is causal
(Definition 3.1). All heads of a layer form one batched :class:`~attnprune.core.objective.PruningProblem`
(W: h × d × d, X: N × 1 × T × d, one mask per head, shared by the N sequences).

Methods, each giving pruned fused weights W̃_h:

- ``ours``: Algorithm 1 (:func:`attnprune.core.solver.prune`, projected variant, Armijo steps),
  outputs ``mask-only`` B∘W and ``reweighted`` B∘M∘W, at round(ρ·d²) zeros per head;
- ``ours-adam``: the same projected descent on the same loss and closed-form gradient, with
  Adam's per-entry steps instead of Armijo's one step size (:func:`adam_prune`; the optimiser of
  the deployable experiment), same outputs;
- ``magnitude``, ``wanda``, ``sparsegpt`` on the ``factors`` (q_proj and k_proj pruned at ρ as
  the linear layers they are, W̃_h fused from the pruned factors; pruning q_proj whole is pruning
  each head's rows, since all three choose and update row by row) or on the ``fused`` W_h (the
  linear layer x ↦ x W_h, ``nn.Linear`` weight W_hᵀ, input X, the heads stacked as rows).

Errors are ‖Att(W̃_h) − Att(W_h)‖²_F and ‖Att(W_h)‖²_F per head, on the calibration X and on
held-out X' of the evaluation text; :func:`per_layer` pools them into the relative error of a
layer, Σ_h‖Att(W̃_h) − Att(W_h)‖²_F / Σ_h‖Att(W_h)‖²_F.
"""

from __future__ import annotations

import math
import time

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..core.attention import attention_matrix
from ..core.baselines import APPLICATIONS, BASELINES, LINEAR, prune_attention
from ..core.checks import check_positive_int, check_sparsity
from ..core.masks import sparsity_of
from ..core.objective import PruningProblem
from ..core.solver import OUTPUTS, Adam, PruneResult, prune, prune_with
from ..llm.capture import capture_attention_inputs
from ..llm.models import AttentionShape, attention_shape, qk_modules

SPLITS = ("calibration", "held-out")
COLUMNS = ["layer", "head", "rho", "method", "variant", "split", "sq_error", "norm", "sparsity", "seconds"]


def fused_weights(Wq: Tensor, Wk: Tensor, shape: AttentionShape) -> Tensor:
    """W_h = W_{Q,h} W_{K,g(h)}ᵀ/√k for every query head h: (h, d, d), from ``nn.Linear`` weights
    W_q (h·k × d) and W_k (h_kv·k × d)."""
    q = Wq.reshape(shape.heads, shape.head_dim, shape.hidden)
    k = Wk.reshape(shape.kv_heads, shape.head_dim, shape.hidden).repeat_interleave(shape.group_size, dim=0)
    return q.transpose(-1, -2) @ k / math.sqrt(shape.head_dim)


def head_errors(
    X: Tensor, W_pruned: Tensor, W: Tensor, *, batch_size: int = 8, reference: list[Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Per head h: ‖Att(W̃_h) − Att(W_h)‖²_F and ‖Att(W_h)‖²_F summed over the sequences of X
    (N × T × d), causal, computed ``batch_size`` sequences at a time. Two tensors of shape (h,).
    ``reference`` may hold the dense Att(W) of each chunk (:func:`dense_attention`), to reuse it."""
    check_positive_int("batch_size", batch_size)
    chunks = X.split(batch_size)
    reference = dense_attention(X, W, batch_size=batch_size) if reference is None else reference
    error = torch.zeros(W.shape[0], dtype=torch.float64, device=W.device)
    norm = torch.zeros(W.shape[0], dtype=torch.float64, device=W.device)
    with torch.no_grad():
        for chunk, dense in zip(chunks, reference, strict=True):
            pruned = attention_matrix(chunk.unsqueeze(1), W_pruned, causal=True)
            error += (pruned - dense).square().sum((0, 2, 3)).double()
            norm += dense.square().sum((0, 2, 3)).double()
    return error.cpu(), norm.cpu()


def dense_attention(X: Tensor, W: Tensor, *, batch_size: int = 8) -> list[Tensor]:
    """Att(W_h) for every head, causal, per chunk of ``batch_size`` sequences of X (N × T × d)."""
    with torch.no_grad():
        return [attention_matrix(chunk.unsqueeze(1), W, causal=True) for chunk in X.split(batch_size)]


def baseline_fused_weights(
    method: str, application: str, Wq: Tensor, Wk: Tensor, X: Tensor, shape: AttentionShape, sparsity: float
) -> tuple[Tensor, float]:
    """A linear baseline's pruned fused weights (h, d, d) and the fraction of zeros in what it
    pruned (the two factors, or the fused weights): :func:`~attnprune.core.baselines.prune_attention`."""
    return prune_attention(method, application, Wq, Wk, X, sparsity, lambda q, k: fused_weights(q, k, shape))


def adam_prune(
    problem: PruningProblem,
    sparsity: float,
    *,
    steps: int = 60,
    lr: float = 0.01,
    ramp: float = 0.5,
    score: str = "magnitude",
    group: str = "matrix",
    schedule: str = "final-decay",
) -> PruneResult:
    """Projected descent on L(M) with Adam steps: M ← Adam(M, ∇L(M)) with the closed-form gradient
    of chapter 02, then the hard mask at ρ_t (:func:`~attnprune.core.solver.target_sparsity`): the
    loop of :func:`~attnprune.core.solver.prune`'s projected variant (Algorithm 1) with the step
    rule :class:`~attnprune.core.solver.Adam` (per-entry steps, lr scheduled by ``schedule``)."""
    return prune_with(
        problem, sparsity, Adam(lr, schedule), variant="projected", steps=steps, score=score, group=group, ramp=ramp
    )


def fused_layer(
    layer: int,
    X: Tensor,
    X_heldout: Tensor,
    Wq: Tensor,
    Wk: Tensor,
    shape: AttentionShape,
    sparsities: list[float],
    *,
    steps: int = 50,
    step_size: float | str = "armijo",
    adam_steps: int = 60,
    adam_lr: float = 0.01,
    lam: float = 0.0,
    score: str = "magnitude",
    group: str = "matrix",
    ramp: float = 0.5,
    batch_size: int = 8,
) -> list[dict]:
    """Every method on one layer at every ρ: one row per (ρ, method, variant, split, head) with
    the squared error and the norm of the dense attention (see :data:`COLUMNS`)."""
    W = fused_weights(Wq, Wk, shape)
    problem = PruningProblem(X.unsqueeze(1), W, lam, causal=True)
    rows: list[dict] = []
    inputs = dict(zip(SPLITS, (X, X_heldout), strict=True))
    references = {split: dense_attention(x, W, batch_size=batch_size) for split, x in inputs.items()}

    def add(rho: float, method: str, variant: str, W_pruned: Tensor, zeros: float, seconds: float) -> None:
        for split in SPLITS:
            error, norm = head_errors(inputs[split], W_pruned, W, batch_size=batch_size, reference=references[split])
            rows.extend(
                {
                    "layer": layer,
                    "head": h,
                    "rho": rho,
                    "method": method,
                    "variant": variant,
                    "split": split,
                    "sq_error": float(error[h]),
                    "norm": float(norm[h]),
                    "sparsity": zeros,
                    "seconds": seconds,
                }
                for h in range(W.shape[0])
            )

    for rho in sparsities:
        rho = check_sparsity("sparsities", rho)
        start = time.perf_counter()
        result = prune(
            problem, rho, variant="projected", steps=steps, step_size=step_size, score=score, group=group, ramp=ramp
        )
        seconds = time.perf_counter() - start
        for output in OUTPUTS:
            add(rho, "ours", output, result.pruned_weight(output), sparsity_of(result.mask), seconds)
        start = time.perf_counter()
        result = adam_prune(problem, rho, steps=adam_steps, lr=adam_lr, score=score, group=group, ramp=ramp)
        seconds = time.perf_counter() - start
        for output in OUTPUTS:
            add(rho, "ours-adam", output, result.pruned_weight(output), sparsity_of(result.mask), seconds)
        for method in LINEAR:
            for application in APPLICATIONS:
                start = time.perf_counter()
                W_pruned, zeros = baseline_fused_weights(method, application, Wq, Wk, X, shape, rho)
                add(rho, method, application, W_pruned, zeros, time.perf_counter() - start)
    return rows


def fused_experiment(
    model: nn.Module,
    calib_ids: Tensor,
    heldout_ids: Tensor,
    layers: list[int],
    sparsities: list[float],
    *,
    batch_size: int = 8,
    progress: bool = False,
    **solver_options,
) -> pd.DataFrame:
    """The fused experiment on ``layers`` of ``model``: X from the dense model on ``calib_ids``
    (N, T) and X' on ``heldout_ids``; returns the tidy table of :func:`fused_layer` rows."""
    if not sparsities:
        raise ValueError("sparsities must hold at least one ρ in [0, 1)")
    shape = attention_shape(model)
    inputs = capture_attention_inputs(model, calib_ids, layers, batch_size=batch_size)
    heldout = capture_attention_inputs(model, heldout_ids, layers, batch_size=batch_size)
    rows: list[dict] = []
    for layer in tqdm(sorted(inputs), desc="fused", unit="layer", disable=not progress):
        q, k = qk_modules(model, layer)
        rows += fused_layer(
            layer,
            inputs[layer],
            heldout[layer],
            q.weight.detach(),
            k.weight.detach(),
            shape,
            sparsities,
            batch_size=batch_size,
            **solver_options,
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def per_layer(table: pd.DataFrame) -> pd.DataFrame:
    """The relative error of each layer: Σ_h squared error / Σ_h norm, per (layer, ρ, method,
    variant, split); with a ``label`` column such as "ours (reweighted)" or "SparseGPT (fused)"."""
    keys = ["layer", "rho", "method", "variant", "split"]
    pooled = table.groupby(keys, sort=True)[["sq_error", "norm"]].sum().reset_index()
    pooled["error"] = pooled["sq_error"] / pooled["norm"]
    pooled["label"] = [label(m, v) for m, v in zip(pooled["method"], pooled["variant"], strict=True)]
    return pooled[[*keys, "label", "error"]]


LABELS = {"ours": "ours", "ours-adam": "ours, Adam", **{name: b.label for name, b in BASELINES.items()}}


def label(method: str, variant: str) -> str:
    """ "ours (mask-only)", "ours, Adam (reweighted)", "Wanda (factors)", ..."""
    return f"{LABELS[method]} ({variant})"
