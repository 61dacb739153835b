"""Statistics for comparing two models on the same prompts (scipy does the distributions).

- `wilson_interval`: Wilson score interval of a rate (scipy's `binomtest(...).proportion_ci(method="wilson")`).
- `pair_outcomes` / `mcnemar_exact`: the exact two-sided McNemar test, i.e. a binomial test with p = 1/2 on the
  discordant pairs (prompts where exactly one model succeeds), capped at 1.
- `mcnemar_sample_size`: how many paired prompts a difference of the observed size needs to reach p < alpha
  with the given power, from the discordant proportions (Connor 1987, Biometrics 43:207-211), never fewer
  than the exact test itself needs (`min_discordant_pairs`: 6 discordant pairs at alpha = 0.05).
- `paired_bootstrap` / `paired_permutation_p`: for per-task scores that are not 0/1 (HumanEval pass@1 as the
  mean over samples): a seeded paired bootstrap interval of the mean difference and a sign-flip permutation test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for successes/n, in percent; None when n == 0."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    if n == 0:
        return None
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return 100.0 * float(ci.low), 100.0 * float(ci.high)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: binomial test of b_only among the discordant pairs at p = 1/2.

    No discordant pairs means no evidence of a difference: p = 1."""
    if a_only < 0 or b_only < 0:
        raise ValueError("discordant counts must be >= 0")
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    return min(1.0, float(stats.binomtest(b_only, discordant, 0.5, alternative="two-sided").pvalue))


@dataclass(frozen=True)
class PairedOutcomes:
    """Success/failure of A and B on the same prompts (paired by id)."""
    n: int
    both: int
    a_only: int
    b_only: int
    neither: int
    p_value: float

    @property
    def net(self) -> int:
        """Prompts B gets right that A does not, minus the reverse."""
        return self.b_only - self.a_only

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def to_dict(self) -> dict:
        return asdict(self)


def pair_outcomes(a: Mapping[str, bool], b: Mapping[str, bool]) -> PairedOutcomes:
    """Pairs the ids present in both mappings and runs the exact McNemar test on them."""
    ids = a.keys() & b.keys()
    both = sum(bool(a[i]) and bool(b[i]) for i in ids)
    a_only = sum(bool(a[i]) and not bool(b[i]) for i in ids)
    b_only = sum(bool(b[i]) and not bool(a[i]) for i in ids)
    neither = len(ids) - both - a_only - b_only
    return PairedOutcomes(len(ids), both, a_only, b_only, neither, mcnemar_exact(a_only, b_only))


def mcnemar_sample_size(p_a_only: float, p_b_only: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Paired prompts needed to detect the difference p_b_only - p_a_only with the McNemar test.

    Connor (1987): n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2 with
    psi = p_a_only + p_b_only (discordant share) and delta = p_b_only - p_a_only. None when delta == 0."""
    for p in (p_a_only, p_b_only):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"proportions must be in [0, 1], got {p}")
    psi, delta = p_a_only + p_b_only, p_b_only - p_a_only
    if delta == 0:
        return None
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    n = (za * math.sqrt(psi) + zb * math.sqrt(max(0.0, psi - delta * delta))) ** 2 / delta ** 2
    return max(1, math.ceil(n - 1e-9))


def min_discordant_pairs(alpha: float = ALPHA) -> int:
    """The fewest discordant pairs with which the exact two-sided McNemar test can reach p < alpha at
    all (every one of them in the same direction): 6 at alpha = 0.05, since 2 * 0.5**5 = 0.0625."""
    d = 1
    while mcnemar_exact(0, d) >= alpha:
        d += 1
    return d


def sample_size_for(paired: PairedOutcomes, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """`mcnemar_sample_size` at the observed discordant proportions, raised where needed so that the
    expected number of discordant pairs reaches `min_discordant_pairs`: below it the exact test
    cannot reach p < alpha however lopsided the split (Connor's normal approximation does not know)."""
    if paired.n == 0:
        return None
    n = mcnemar_sample_size(paired.a_only / paired.n, paired.b_only / paired.n, alpha, power)
    if n is None:
        return None
    discordant_share = (paired.a_only + paired.b_only) / paired.n
    return max(n, math.ceil(min_discordant_pairs(alpha) / discordant_share - 1e-9))


def _mean_diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(b, axis=axis) - np.mean(a, axis=axis)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, seed: int = 0, confidence: float = 0.95,
                     n_resamples: int = 9999) -> tuple[float, float, float]:
    """Mean of b - a and its paired bootstrap interval (scipy.stats.bootstrap, BCa; percentile where BCa
    is undefined). When every difference is the same the interval is that one value."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape or xa.ndim != 1 or xa.size == 0:
        raise ValueError("paired samples must be two non-empty sequences of the same length")
    diff = float(np.mean(xb - xa))
    if np.ptp(xb - xa) == 0:
        return diff, diff, diff
    for method in ("BCa", "percentile"):
        res = stats.bootstrap((xa, xb), _mean_diff, paired=True, vectorized=True, confidence_level=confidence,
                              n_resamples=n_resamples, method=method, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return diff, lo, hi
    raise ValueError("bootstrap interval is undefined for these samples")


def paired_permutation_p(a: Sequence[float], b: Sequence[float], *, seed: int = 0, n_resamples: int = 9999) -> float:
    """Two-sided sign-flip permutation test of mean(b - a) == 0 (scipy.stats.permutation_test; exact when
    2**n <= n_resamples)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if d.size == 0:
        raise ValueError("no paired samples")
    if not np.any(d):
        return 1.0
    res = stats.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                 vectorized=True, n_resamples=n_resamples, alternative="two-sided",
                                 rng=np.random.default_rng(seed))
    return min(1.0, float(res.pvalue))
