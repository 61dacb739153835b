"""pass@k: the unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models Trained on Code".

For one task with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k), computed in the
numerically stable product form 1 - prod_{i=n-c+1}^{n} (1 - k / i) (no huge binomials); the benchmark's
figure is the mean over tasks.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

KS = (1, 5, 10)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The probability that at least one of k samples drawn without replacement from n (c correct) passes."""
    if not (isinstance(n, (int, np.integer)) and isinstance(c, (int, np.integer)) and isinstance(k, (int, np.integer))):
        raise TypeError("n, c and k must be integers")
    if n < 1 or k < 1:
        raise ValueError(f"need n >= 1 and k >= 1 (got n={n}, k={k})")
    if not 0 <= c <= n:
        raise ValueError(f"c must lie in [0, n] (got c={c}, n={n})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task (got n={n})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean pass@k over tasks given (n, c) per task; ValueError for no tasks or a task with n < k."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise ValueError("no tasks")
    return float(np.mean(values))


def pass_at_table(counts: list[tuple[int, int]], ks: Iterable[int] = KS) -> dict[int, float]:
    """k -> percent (2 decimals) for each k in `ks` that every task has enough samples for; {} for no tasks."""
    if not counts:
        return {}
    n_min = min(n for n, _ in counts)
    return {k: round(100.0 * mean_pass_at_k(counts, k), 2) for k in ks if k <= n_min}
