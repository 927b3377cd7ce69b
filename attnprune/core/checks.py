"""Argument checks shared by every module.

Each check raises ``ValueError`` that names the offending argument and says what to do, so a
wrong call fails at the door rather than deep inside a matrix product.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64)


def check_tensor(name: str, value: object, *, min_ndim: int = 2) -> Tensor:
    """Return ``value`` if it is a finite float32/float64 tensor with at least ``min_ndim`` dims."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be float32 or float64, got {value.dtype}; convert it with .float() (a model: "
            "load it in float32, the default of load_model)"
        )
    if value.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)}); give at least one token and one feature")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or Inf; clean the input before pruning")
    return value


def check_square(name: str, W: Tensor) -> Tensor:
    """``W`` must be square in its last two dimensions (the fused d×d attention weight)."""
    if W.shape[-1] != W.shape[-2]:
        raise ValueError(
            f"{name} must be square (d×d) in its last two dimensions, got shape {tuple(W.shape)}; "
            "fuse the factors first: W = W_Q @ W_K.T"
        )
    return W


def check_inner_dim(x_name: str, X: Tensor, w_name: str, W: Tensor) -> None:
    """The feature dimension of ``X`` (n×d) must match ``W`` (d×d)."""
    if X.shape[-1] != W.shape[-2]:
        raise ValueError(
            f"{x_name} has {X.shape[-1]} features (shape {tuple(X.shape)}) but {w_name} expects "
            f"{W.shape[-2]} (shape {tuple(W.shape)}); X must be tokens × d"
        )
    try:
        torch.broadcast_shapes(X.shape[:-2], W.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"batch dimensions of {x_name} {tuple(X.shape[:-2])} and {w_name} {tuple(W.shape[:-2])} do not broadcast"
        ) from None


def check_same_shape(name: str, value: Tensor, ref_name: str, ref: Tensor) -> None:
    if value.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(value.shape)}")


def check_sparsity(name: str, rho: float) -> float:
    """A sparsity ρ is the fraction of zeros: it must lie in [0, 1)."""
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho):
        raise ValueError(f"{name} must be a number in [0, 1), got {rho!r}")
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"{name} must lie in [0, 1) (the fraction of weights set to zero), got {rho}")
    return float(rho)


def check_nonnegative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be ≥ 0, got {value}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """A flag must be a real bool: a string such as "no" would otherwise read as True."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
