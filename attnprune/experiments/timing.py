"""Wall-clock measurements for the chapters' cost plots (never used by tests to pass or fail)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """The median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fit_power_law(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares fit of log y = a·log x + b; returns the exponent a and the factor e^b."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("x and y must have the same length, at least 2")
    a, b = np.polyfit(np.log(x), np.log(y), 1)
    return float(a), float(np.exp(b))
