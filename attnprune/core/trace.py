"""The record of a descent: one entry per step of Algorithm 1 (or of any projected descent)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Trace:
    """What happened at each step t: L(M_t), ‖∇L(M_t)‖_F, the η taken, and the zeros after the step
    (in M_{t+1}, or in the hard masks of the step); and (step, relative error) at each check on
    held-out data, for a descent with early stopping (empty otherwise)."""

    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    step_size: list[float] = field(default_factory=list)
    sparsity: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)

    def record(self, loss: float, grad_norm: float, step_size: float, sparsity: float) -> None:
        self.loss.append(loss)
        self.grad_norm.append(grad_norm)
        self.step_size.append(step_size)
        self.sparsity.append(sparsity)
