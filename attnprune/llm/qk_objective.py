"""Deployable pruning: masks on one layer's ``q_proj``/``k_proj`` weights, fitted to its true
attention probabilities (chapter 08).

For a decoder layer with attention input X (N × T × d, after the input norm), weights
W_q (h·k × d) and W_k (g·k × d) in ``nn.Linear`` layout, real masks M_q, M_k of their shapes:

    Q = rope(X (M_q∘W_q)ᵀ),  K = rope(X (M_k∘W_k)ᵀ),  query head i reads KV head i // (h/g),
    P_i(M) = softmax(C ∘ Q_i K_{g(i)}ᵀ / √k)   (causal: −inf above the diagonal),
    L(M) = ‖P(M) − P(1)‖²_F / ‖P(1)‖²_F + (λ/2)·mean(M²) + (μ/2)·mean((M − 1)²)

summed over the N sequences and the h heads. This is Definition 3.2 with the rotary embedding,
grouped-query attention and the 1/√k scaling of the real layer. **[choice]** The fit term is the
relative error (the number the book reports), and both penalties are means over the mask
entries, so one setting of λ, μ, the step size means the same at every layer, N and T. μ is
the "regularise toward the dense weights" remedy (0 by default).

The descent is the one loop of :mod:`attnprune.core.solver` (:func:`~attnprune.core.solver.descend`):
the projected variant (iterative hard thresholding, :class:`~attnprune.core.solver.HardThreshold`)
with the target sparsity ρ_t of :func:`~attnprune.core.solver.target_sparsity`,
the scores of :func:`~attnprune.core.solver.score_of` (|M∘W| or M) and :func:`~attnprune.core.masks.hard_mask`
with an exact count of zeros per row (``group="row"``, as the baselines) or per matrix. The
gradient comes from autograd; **[choice]** the step is Adam's (one forward and backward per step,
per-entry scale-free), since an Armijo search needs extra forward passes that the time budget of
a 30-layer model does not allow. The outputs (Algorithm 1's two readings, chapter 05): ``"reweighted"`` B∘M∘W and
``"mask-only"`` B∘W; for the mask-only output ``selection="straight-through"`` fits the hard mask
itself (forward with B_t∘W, gradient passed to M), a better selection than ranking a reweighted M.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..core.attention import future_mask
from ..core.checks import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_same_shape,
    check_sparsity,
    check_tensor,
)
from ..core.masks import GROUPS, mask_sparsity
from ..core.solver import (
    OUTPUTS,
    SCHEDULES,
    SCORES,
    Adam,
    HardThreshold,
    check_ramp,
    descend,
)
from ..core.trace import Trace
from .models import AttentionShape

SELECTIONS = ("projected", "straight-through")
QUERY_ROWS = ("all", "half")
OURS_DEFAULTS = {
    "steps": 150,
    "lr": 0.01,
    "schedule": "final-decay",
    "ramp": 0.25,
    "sequences_per_step": 1,
    "query_rows": "half",
}
"""**[choice]** ours from the dense model: 150 Adam steps of size 0.01, decaying linearly to 0 over
the last quarter, the target sparsity reaching ρ after the first quarter, one calibration sequence
per step and half of its query rows (the two :func:`query_halves` in turn). Stochastic steps: on
SmolLM2 they fitted better than full-batch steps at the same cost; without the final decay the
noise of the last steps set a floor on the error at low ρ. Chosen by ``scripts/tune_ours.py`` on
layers 3, 15, 27 (the book's Reproduction notes give the tables): 130 steps with the quarter ramp
had the held-out attention error of 160 steps with a half ramp (the earlier default) within its
seed noise, in 0.81 of the steps; 150 half-row steps then have the error of 130 all-row steps
+2% on average (+7% at worst), in about 0.8 of the time."""
CACHE_ELEMENTS = 1 << 26
"""The dense probabilities P(1) are kept in memory below this many entries (256 MB in float32),
and recomputed from the cached rotated queries and keys above it."""


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """The rotary embedding of Llama (``apply_rotary_pos_emb``): x·cos + rotate_half(x)·sin,
    for x of shape (N, heads, T, k) and cos, sin of shape (1 or N, T, k)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)


def queries_keys(
    X: Tensor,
    Wq: Tensor,
    Wk: Tensor,
    cos: Tensor,
    sin: Tensor,
    shape: AttentionShape,
    bq: Tensor | None = None,
    bk: Tensor | None = None,
    rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Rotated queries (N, h, T, k) and keys (N, g, T, k) of the layer for weights W_q, W_k;
    ``rows`` (an index tensor of positions; None: all T) takes the queries of those positions only,
    (N, h, len(rows), k), each rotated at its own position."""
    N, T, _ = X.shape
    k = torch.nn.functional.linear(X, Wk, bk).view(N, T, shape.kv_heads, shape.head_dim).transpose(1, 2)
    k = rotate(k, cos, sin)
    if rows is not None:
        X, cos, sin = X[:, rows], cos[:, rows], sin[:, rows]  # (N, R, d), (1 or N, R, k)
    R = X.shape[1]
    q = torch.nn.functional.linear(X, Wq, bq).view(N, R, shape.heads, shape.head_dim).transpose(1, 2)
    return rotate(q, cos, sin), k


def probabilities_from(q: Tensor, k: Tensor, shape: AttentionShape) -> Tensor:
    """P = causal row softmax of Q Kᵀ/√k with query head i reading KV head i // (h/g): (N, h, T, T).

    The query heads are grouped by KV head instead of repeating the keys (no copy of K), and
    the rows are taken in the blocks of :func:`_query_blocks` (:func:`_block_probabilities`),
    as :func:`probability_error` does, so that the dense weights have an error of exactly 0."""
    N, h, T, hd = q.shape
    grouped = q.reshape(N, shape.kv_heads, shape.group_size, T, hd)  # (N, g, h/g, T, k)
    P = q.new_zeros(N, shape.kv_heads, shape.group_size, T, T)
    for start, stop in _query_blocks(T):
        P[..., start:stop, :stop] = _block_probabilities(grouped[..., start:stop, :], k.unsqueeze(2), start, stop)
    return P.reshape(N, h, T, T)


def _block_probabilities(queries: Tensor, keys: Tensor, start: int, stop: int) -> Tensor:
    """Rows start..stop−1 of P against keys 0..stop−1 (the later keys are masked, so their P is
    exactly 0): the grouped queries of those rows (N, g, h/g, stop−start, k), keys (N, g, 1, T, k)
    → (N, g, h/g, stop−start, stop)."""
    S = torch.matmul(queries, keys[..., :stop, :].transpose(-1, -2))  # (N, g, h/g, b, stop)
    S.div_(math.sqrt(queries.shape[-1]))
    S[..., start:].masked_fill_(future_mask(0, stop - start, S.device), float("-inf"))  # keys < start: all seen
    return torch.softmax(S, dim=-1)


class _ProbabilityError(torch.autograd.Function):
    """‖P − P*‖²_F for P = causal softmax(Q Kᵀ/√k) (grouped as :func:`probabilities_from`), with
    the closed-form gradient of the softmax (chapter 05's Definition 3.2, on the real layer):

        D = P − P*,  ∂L/∂S = 2·(P∘D − P∘rowsum(P∘D)),  ∂L/∂Q = ∂L/∂S·K/√k,  ∂L/∂K = (∂L/∂S)ᵀ·Q/√k.

    The queries are taken in :data:`QUERY_BLOCKS` blocks of rows, each against the keys up to its
    last row only: the causal mask makes the rest exactly zero, so the products and the softmax
    cost 10/16 of the full T × T. P is :func:`probabilities_from`'s, bit for bit; the loss and the
    gradient equal autograd's to rounding (tested in float64). About half autograd's time at
    T = 512 on a CPU. ``blocks`` ([start, stop) row ranges, ascending) restricts the sum to those
    rows of P: q then holds the queries of those rows only, in order (N, h, R, k)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, target: Tensor, kv_heads: int, blocks: tuple) -> Tensor:
        N, h, R, hd = q.shape
        T = target.shape[-1]
        grouped = q.reshape(N, kv_heads, h // kv_heads, R, hd)  # (N, g, h/g, R, k)
        keys = k.unsqueeze(2)  # (N, g, 1, T, k)
        target = target.reshape(N, kv_heads, h // kv_heads, T, T)  # (N, g, h/g, T, T)
        saved, loss = [], q.new_zeros(())
        for (start, stop), rows in zip(blocks, _block_rows(blocks), strict=True):
            P = _block_probabilities(grouped[..., rows, :], keys, start, stop)  # (N, g, h/g, b, stop)
            D = P - target[..., start:stop, :stop]
            loss = loss + torch.dot(D.view(-1), D.view(-1))
            saved += [P, D]
        ctx.blocks = blocks
        ctx.save_for_backward(grouped, keys, *saved)
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None, None]:
        grouped, keys, *saved = ctx.saved_tensors
        N, g, r, R, hd = grouped.shape
        dq, dk = torch.zeros_like(grouped), torch.zeros_like(keys.squeeze(2))  # (N, g, h/g, R, k), (N, g, T, k)
        blocks = ctx.blocks
        for (_, stop), rows, P, D in zip(blocks, _block_rows(blocks), saved[::2], saved[1::2], strict=True):
            dS = D * P  # (N, g, h/g, b, stop); D is kept intact, so backward can run again
            dS.addcmul_(P, dS.sum(-1, keepdim=True), value=-1.0)  # P∘D − P∘rowsum(P∘D)
            dq[..., rows, :] = torch.matmul(dS, keys[..., :stop, :])
            dk[..., :stop, :] += torch.matmul(dS.transpose(-1, -2), grouped[..., rows, :]).sum(2)
        scale = 2.0 * grad / math.sqrt(hd)
        return dq.mul_(scale).reshape(N, g * r, R, hd), dk.mul_(scale), None, None, None


QUERY_BLOCKS = 4
"""The query rows of :class:`_ProbabilityError` are taken in this many blocks (fewer if T is smaller)."""


def _query_blocks(T: int) -> list[tuple[int, int]]:
    """[start, stop) of the :data:`QUERY_BLOCKS` blocks of query rows 0..T−1."""
    size = -(-T // QUERY_BLOCKS)
    return [(start, min(start + size, T)) for start in range(0, T, size)]


def query_halves(T: int) -> list[tuple[tuple[int, int], ...]]:
    """The blocks of :func:`_query_blocks` in two halves of equal causal work, for the half-row
    steps of ours (``query_rows="half"``): block i is paired with block B−1−i (their costs, the
    rows times the keys each row sees, sum to the same), and the pairs go to the halves in turn.
    With 4 blocks: {0, 3} and {1, 2}. One half (all blocks) when T is too short to split."""
    blocks = _query_blocks(T)
    pairs = [sorted({i, len(blocks) - 1 - i}) for i in range((len(blocks) + 1) // 2)]
    halves = [tuple(blocks[i] for pair in pairs[h::2] for i in pair) for h in (0, 1)]
    return halves if all(halves) else [tuple(blocks)]


def _block_rows(blocks: tuple) -> list[slice]:
    """Where each block's rows sit in the queries of ``blocks``, stacked in order."""
    ends = list(itertools.accumulate(stop - start for start, stop in blocks))
    return [slice(end - (stop - start), end) for end, (start, stop) in zip(ends, blocks, strict=True)]


def probability_error(q: Tensor, k: Tensor, target: Tensor, shape: AttentionShape) -> Tensor:
    """‖P(Q, K) − P*‖²_F summed over sequences and heads, differentiable in q (N, h, T, k) and
    k (N, g, T, k); ``target`` P* is (N, h, T, T). The gradient is the closed form of
    :class:`_ProbabilityError`."""
    return _ProbabilityError.apply(q, k, target, shape.kv_heads, tuple(_query_blocks(k.shape[-2])))


def attention_probabilities(
    X: Tensor,
    Wq: Tensor,
    Wk: Tensor,
    cos: Tensor,
    sin: Tensor,
    shape: AttentionShape,
    bq: Tensor | None = None,
    bk: Tensor | None = None,
) -> Tensor:
    """The layer's true attention probabilities P (N, h, T, T): rotary embedding, grouped-query
    attention, causal mask, 1/√k. Matches the eager attention of ``transformers``."""
    return probabilities_from(*queries_keys(X, Wq, Wk, cos, sin, shape, bq, bk), shape)


@dataclass
class LayerProblem:
    """The deployable objective of one layer (module docstring) on inputs X (N × T × d).

    ``cos``, ``sin`` are the rotary tables (1 or N, T, k) of positions 0..T−1; ``lam`` is λ and
    ``anchor`` is μ. The sequences are split into chunks of ``batch_size`` (memory: one chunk's
    attention is alive at a time); the dense target P(1) of each chunk is computed once. The
    error can be taken on all the query rows or on one of the :func:`query_halves` (``half``).
    """

    X: Tensor
    Wq: Tensor
    Wk: Tensor
    cos: Tensor
    sin: Tensor
    shape: AttentionShape
    bq: Tensor | None = None
    bk: Tensor | None = None
    lam: float = 0.0
    anchor: float = 0.0
    batch_size: int = 8
    _chunks: list = field(init=False, repr=False)
    _dense: list = field(init=False, repr=False)
    _norms: list = field(init=False, repr=False)
    _halves: list = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._check()
        N, b = self.X.shape[0], self.batch_size
        self._chunks = [slice(start, min(start + b, N)) for start in range(0, N, b)]  # views of X, no copy
        keep = self.X.shape[0] * self.shape.heads * self.X.shape[1] ** 2 <= CACHE_ELEMENTS
        with torch.no_grad():
            dense = [self._queries_keys(self.Wq, self.Wk, c) for c in range(self.n_chunks)]
            self._dense = [probabilities_from(*qk, self.shape) if keep else qk for qk in dense]
        T = self.X.shape[1]
        self._halves = [(tuple(_query_blocks(T)), None)] + [
            (blocks, torch.cat([torch.arange(a, b) for a, b in blocks])) for blocks in query_halves(T)
        ]  # (blocks, their query positions): all rows, then each half
        self._norms = [
            [float(self.target(c).square().sum()), *(self._block_norm(c, blocks) for blocks, _ in self._halves[1:])]
            for c in range(self.n_chunks)
        ]  # per chunk: all rows, then each half

    @property
    def n_chunks(self) -> int:
        return len(self._chunks)

    @property
    def n_halves(self) -> int:
        """How many :func:`query_halves` the rows split into (2, or 1 when T is too short)."""
        return len(self._halves) - 1

    def target(self, chunk: int) -> Tensor:
        """P(1), the dense attention probabilities of chunk ``chunk`` (b, h, T, T)."""
        dense = self._dense[chunk]
        return dense if isinstance(dense, Tensor) else probabilities_from(*dense, self.shape)

    def squared_error(self, Wq: Tensor, Wk: Tensor, chunk: int, half: int | None = None) -> Tensor:
        """‖P(W̃) − P(1)‖²_F on one chunk, on the rows of :func:`query_halves` ``half`` (None: all
        rows); differentiable, with the closed-form gradient of :class:`_ProbabilityError`."""
        blocks, rows = self._halves[0 if half is None else half + 1]
        q, k = self._queries_keys(Wq, Wk, chunk, rows)
        return _ProbabilityError.apply(q, k, self.target(chunk), self.shape.kv_heads, blocks)

    def target_norm(self, chunks: list[int] | None = None, half: int | None = None) -> float:
        """‖P(1)‖²_F over ``chunks`` (all if None), on the rows of ``half`` (None: all rows)."""
        column = 0 if half is None else half + 1
        return sum(self._norms[c][column] for c in (range(self.n_chunks) if chunks is None else chunks))

    @torch.no_grad()
    def relative_error(self, Wq: Tensor, Wk: Tensor) -> float:
        """‖P(W̃) − P(1)‖²_F / ‖P(1)‖²_F over every sequence, for pruned weights W̃_q, W̃_k."""
        check_same_shape("Wq", Wq, "the layer's q_proj weight", self.Wq)
        check_same_shape("Wk", Wk, "the layer's k_proj weight", self.Wk)
        error = sum(float(self.squared_error(Wq, Wk, c)) for c in range(self.n_chunks))
        return error / self.target_norm()

    def penalty(self, Mq: Tensor, Mk: Tensor) -> Tensor:
        """(λ/2)·mean(M²) + (μ/2)·mean((M − 1)²) over the entries of both masks."""
        size = Mq.numel() + Mk.numel()
        total = torch.zeros((), dtype=Mq.dtype, device=Mq.device)
        if self.lam:
            total = total + 0.5 * self.lam * (Mq.square().sum() + Mk.square().sum()) / size
        if self.anchor:
            total = total + 0.5 * self.anchor * ((Mq - 1).square().sum() + (Mk - 1).square().sum()) / size
        return total

    # -- helpers -----------------------------------------------------------------------------
    def _queries_keys(self, Wq: Tensor, Wk: Tensor, chunk: int, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        sequences = self._chunks[chunk]
        cos = self.cos if self.cos.shape[0] == 1 else self.cos[sequences]
        sin = self.sin if self.sin.shape[0] == 1 else self.sin[sequences]
        return queries_keys(self.X[sequences], Wq, Wk, cos, sin, self.shape, self.bq, self.bk, rows)

    @torch.no_grad()
    def _block_norm(self, chunk: int, blocks: tuple) -> float:
        """‖P(1)‖²_F of one chunk on the rows of ``blocks``."""
        target = self.target(chunk)
        return sum(float(target[..., start:stop, :stop].square().sum()) for start, stop in blocks)

    def _check(self) -> None:
        check_tensor("X", self.X, min_ndim=3)
        s = self.shape
        if self.X.ndim != 3 or self.X.shape[-1] != s.hidden:
            raise ValueError(f"X must be N × T × d with d = {s.hidden}, got shape {tuple(self.X.shape)}")
        check_tensor("Wq", self.Wq)
        check_tensor("Wk", self.Wk)
        if self.Wq.shape != (s.heads * s.head_dim, s.hidden) or self.Wk.shape != (s.kv_heads * s.head_dim, s.hidden):
            raise ValueError(
                f"Wq must be (heads·head_dim × hidden) = {(s.heads * s.head_dim, s.hidden)} and Wk "
                f"{(s.kv_heads * s.head_dim, s.hidden)}, got {tuple(self.Wq.shape)} and {tuple(self.Wk.shape)}"
            )
        if self.cos.shape[-2:] != (self.X.shape[1], s.head_dim) or self.sin.shape != self.cos.shape:
            raise ValueError(
                f"cos and sin must be (1 or N, T, head_dim) = (1, {self.X.shape[1]}, {s.head_dim}), "
                f"got {tuple(self.cos.shape)} and {tuple(self.sin.shape)}; take them from the "
                "model's rotary embedding at positions 0..T−1"
            )
        check_nonnegative("lam", self.lam)
        check_nonnegative("anchor", self.anchor)
        check_positive_int("batch_size", self.batch_size)


@dataclass
class QKFit:
    """The outcome of :func:`fit_qk`: hard masks B (0/1, exact sparsity), learned real masks M,
    the pruned weights to deploy, the trace (with the validation checks), and the step whose
    masks were kept."""

    mask_q: Tensor
    mask_k: Tensor
    Mq: Tensor
    Mk: Tensor
    weight_q: Tensor
    weight_k: Tensor
    trace: Trace
    step: int


def fit_qk(
    problem: LayerProblem,
    sparsity: float,
    *,
    steps: int = OURS_DEFAULTS["steps"],
    lr: float = OURS_DEFAULTS["lr"],
    ramp: float = OURS_DEFAULTS["ramp"],
    score: str = "magnitude",
    group: str = "row",
    output: str = "reweighted",
    selection: str = "projected",
    support: tuple | None = None,
    chunks_per_step: int | None = None,
    validation: LayerProblem | None = None,
    check_every: int = 5,
    schedule: str = OURS_DEFAULTS["schedule"],
    query_rows: str = OURS_DEFAULTS["query_rows"],
    seed: int = 0,
) -> QKFit:
    """Projected descent on (M_q, M_k) for the layer objective; hard masks at exact sparsity ρ.

    ``steps`` Adam steps of size ``lr`` (``schedule``: "final-decay" decays it linearly to 0 over
    the last quarter of the steps, see :func:`~attnprune.core.solver.step_size`) from M = 1 (the
    dense layer); the target sparsity rises from 0 to ρ over the first ``ramp`` fraction of the
    steps (:func:`~attnprune.core.solver.target_sparsity`); ``score`` ("magnitude" |M∘W| or "mask"
    M) and ``group`` ("row" or "matrix") choose the hard mask; ``output``: "reweighted" (B∘M∘W)
    or "mask-only" (B∘W); ``selection``: "projected" (project M after every step) or
    "straight-through" (mask-only: the forward pass uses the hard mask B_t∘W and the gradient
    updates M, which only ranks the weights).

    Remedies: ``support`` = (result_q, result_k), two :class:`~attnprune.core.baselines.LinearPruneResult`
    of a linear method, keeps their masks and weights and refits only the kept weights
    (B∘M∘W_linear); ``chunks_per_step`` uses that many chunks of sequences per step (stochastic
    steps, so more calibration sequences cost no more per step); ``query_rows="half"`` takes the
    error of each step on one of the :func:`query_halves` of the rows, the two in turn (half the
    attention work a step; "all": every row); ``validation`` (a LayerProblem
    on held-out calibration sequences) is checked every ``check_every`` steps once ρ_t = ρ, and
    the masks with the lowest validation error are returned (early stopping).

    The loop is :func:`~attnprune.core.solver.descend` with the :class:`~attnprune.core.solver.Adam`
    rule and the :class:`~attnprune.core.solver.HardThreshold` projection (iterative hard
    thresholding); the gradient of the objective (Definition 3.2 for the real layer) is autograd's.
    """
    rho = _check_fit(
        sparsity, steps, lr, ramp, score, group, output, selection, support, chunks_per_step, check_every, schedule
    )
    check_choice("query_rows", query_rows, QUERY_ROWS)
    bases, fixed = _base(problem, support)
    params = [torch.ones_like(W, requires_grad=True) for W in bases]  # M_q (h·k × d), M_k (g·k × d)
    threshold = HardThreshold(bases, rho, steps, ramp=ramp, score=score, group=group, support=fixed)
    order = _chunk_order(problem.n_chunks, steps, chunks_per_step, seed)
    straight_through = threshold if selection == "straight-through" else None
    objective = _LayerObjective(problem, bases, order, straight_through, halves=query_rows == "half")
    deploy = functools.partial(_deploy, threshold, params, bases, rho, output)
    keeper = _EarlyStopping(deploy, validation, steps, max(1, round(ramp * steps)), check_every)
    trace = descend(
        params,
        objective,
        Adam(lr, schedule),
        steps,
        project=threshold if selection == "projected" else None,
        sparsity=lambda _: mask_sparsity(threshold.last),
        after_step=keeper,
    )
    best = keeper.result()
    return QKFit(*best.masks, *best.M, *best.weights, trace, best.step)


def _check_fit(
    sparsity: float,
    steps: int,
    lr: float,
    ramp: float,
    score: str,
    group: str,
    output: str,
    selection: str,
    support: tuple | None,
    chunks_per_step: int | None,
    check_every: int,
    schedule: str,
) -> float:
    """The arguments of :func:`fit_qk`, each checked by name; returns ρ."""
    rho = check_sparsity("sparsity", sparsity)
    check_positive_int("steps", steps)
    check_positive("lr", lr)
    check_ramp(ramp)
    check_choice("score", score, SCORES)
    check_choice("group", group, GROUPS)
    check_choice("output", output, OUTPUTS)
    check_choice("selection", selection, SELECTIONS)
    check_positive_int("check_every", check_every)
    check_choice("schedule", schedule, SCHEDULES)
    if selection == "straight-through" and (output != "mask-only" or support is not None):
        raise ValueError('selection="straight-through" fits a hard mask: use it with output="mask-only" and no support')
    if support is not None and output != "reweighted":
        raise ValueError('support refits the kept weights: use it with output="reweighted"')
    if chunks_per_step is not None:
        check_positive_int("chunks_per_step", chunks_per_step)
    return rho


@dataclass
class _LayerObjective:
    """L(M_q, M_k) of the module docstring (Definition 3.2 for the real layer) on the chunks of
    step t (``order[t]``), and its gradient by autograd (accumulated into ``.grad``, one backward
    pass per chunk). ``straight_through``: the forward pass uses the hard masks B_t of that
    projection in place of M, as B_t + M − sg(M), so the gradient reaches M (straight-through).
    ``halves``: step t takes the rows of query half t mod 2 only (:func:`query_halves`), the fit
    term then the relative error on those rows."""

    problem: LayerProblem
    bases: list[Tensor]
    order: list[list[int]]
    straight_through: HardThreshold | None = None
    halves: bool = False

    def __call__(self, params: list[Tensor], t: int) -> tuple[float, list[Tensor]]:
        for M in params:
            M.grad = None
        effective = params
        if self.straight_through is not None:
            masks = self.straight_through.select(params, t)
            effective = [B + M - M.detach() for B, M in zip(masks, params, strict=True)]
        chunks = self.order[t]
        half = t % self.problem.n_halves if self.halves else None
        norm = self.problem.target_norm(chunks, half)
        loss = float(_backward_penalty(self.problem, *params))
        for c in chunks:
            Wq, Wk = (E * W for E, W in zip(effective, self.bases, strict=True))
            part = self.problem.squared_error(Wq, Wk, c, half) / norm
            part.backward()
            loss += float(part.detach())
        return loss, [M.grad for M in params]


@dataclass
class _Checkpoint:
    """The deployable outcome after ``step`` steps: hard masks B at ρ, copies of the real masks M,
    the pruned weights, and the validation error if it was checked."""

    step: int
    masks: list[Tensor]
    M: list[Tensor]
    weights: list[Tensor]
    error: float | None = None


def _deploy(
    threshold: HardThreshold, params: list[Tensor], bases: list[Tensor], rho: float, output: str, step: int
) -> _Checkpoint:
    """B at ρ and the weights of ``output``: B∘W ("mask-only") or B∘M∘W ("reweighted")."""
    masks = threshold.masks(params, rho)
    with torch.no_grad():
        if output == "mask-only":
            weights = [B * W for B, W in zip(masks, bases, strict=True)]
        else:
            weights = [B * M * W for B, M, W in zip(masks, params, bases, strict=True)]
    return _Checkpoint(step, masks, [M.detach().clone() for M in params], weights)


@dataclass
class _EarlyStopping:
    """After step t (once ρ_t = ρ, every ``check_every`` steps and at the last): the relative error
    of the deployed weights on ``validation``, recorded in the trace; keeps the best checkpoint."""

    deploy: Callable[[int], _Checkpoint]
    validation: LayerProblem | None
    steps: int
    ramp_end: int
    check_every: int
    best: _Checkpoint | None = None

    def __call__(self, t: int, params: list[Tensor], trace: Trace) -> None:
        done = t + 1
        due = (done - self.ramp_end) % self.check_every == 0 or done == self.steps
        if self.validation is None or done < self.ramp_end or not due:
            return
        candidate = self.deploy(done)
        candidate.error = self.validation.relative_error(*candidate.weights)
        trace.validation.append((done, candidate.error))
        if self.best is None or candidate.error < self.best.error:
            self.best = candidate

    def result(self) -> _Checkpoint:
        """The best checked checkpoint, or the last step's without validation."""
        return self.best if self.best is not None else self.deploy(self.steps)


def _base(problem: LayerProblem, support: tuple | None) -> tuple[list[Tensor], list[Tensor] | None]:
    """The weights the masks multiply (dense, or a linear method's) and its fixed masks if any."""
    if support is None:
        return [problem.Wq, problem.Wk], None
    result_q, result_k = support
    check_same_shape("support[0].weight", result_q.weight, "Wq", problem.Wq)
    check_same_shape("support[1].weight", result_k.weight, "Wk", problem.Wk)
    return [result_q.weight, result_k.weight], [result_q.mask, result_k.mask]


def _backward_penalty(problem: LayerProblem, Mq: Tensor, Mk: Tensor) -> Tensor:
    """The penalty of the masks, its gradient accumulated into ``.grad``."""
    penalty = problem.penalty(Mq, Mk)
    if penalty.requires_grad:
        penalty.backward()
    return penalty.detach()


def _chunk_order(n_chunks: int, steps: int, per_step: int | None, seed: int) -> list[list[int]]:
    """The chunks used at each step: all of them, or ``per_step`` at a time cycling through a
    seeded random order of all chunks (every chunk is used before any is used twice)."""
    if per_step is None or per_step >= n_chunks:
        return [list(range(n_chunks))] * steps
    generator = torch.Generator().manual_seed(seed)
    stream: list[int] = []
    while len(stream) < steps * per_step:
        stream.extend(torch.randperm(n_chunks, generator=generator).tolist())
    return [stream[t * per_step : (t + 1) * per_step] for t in range(steps)]
