"""How sure a benchmark figure is: intervals for latency percentiles and for rates such as top-1
agreement, the sample counts they need, and when timing may stop or warm-up may end.

Numpy and the standard library only (``statistics.NormalDist`` gives the normal quantile), so the
serving install needs nothing more. Every confidence is two-sided: 0.95 leaves 2.5 % on each side.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

CONFIDENCE = 0.95


class QuantileInterval(NamedTuple):
    """``low``/``high`` are order statistics ``x(low_rank)``/``x(high_rank)`` (1-based ranks of
    the sorted sample); ``coverage`` is the exact probability that they bracket the true quantile."""

    low: float
    high: float
    low_rank: int
    high_rank: int
    coverage: float


def _binomial_cdf(n: int, q: float) -> np.ndarray:
    """``F[m] = P(Binomial(n, q) <= m)`` for m = 0..n, in log space so that large n cannot underflow."""
    m = np.arange(n + 1)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log(n - m[:-1]) - np.log(m[1:]))])
    log_pmf = log_choose + m * math.log(q) + (n - m) * math.log1p(-q)
    pmf = np.exp(log_pmf - log_pmf.max())
    return np.cumsum(pmf) / pmf.sum()


def min_samples_for_quantile(q: float, confidence: float = CONFIDENCE) -> int:
    """The fewest samples for which any order-statistic pair brackets quantile ``q``.

    The widest pair, minimum and maximum, misses the quantile with probability
    ``q**n + (1 - q)**n``, so an interval exists once that is at most ``1 - confidence``:
    p50 needs 6 samples, p90 29, p99 299, p99.9 2,995 at 95 %."""
    _check_unit(q, "q")
    n = 1
    while q**n + (1 - q) ** n > 1 - confidence:
        n += 1
    return n


def quantile_interval(samples, q: float, confidence: float = CONFIDENCE) -> QuantileInterval | None:
    """A distribution-free confidence interval for the ``q`` quantile of ``samples`` (independent
    draws of one distribution, e.g. latencies), or None when ``n`` is too small to support it.

    The number of samples below the true quantile is Binomial(n, q), so the order statistics
    ``x(j) <= x(k)`` bracket it with probability ``P(j <= B <= k - 1)``, whatever the latency
    distribution. Of the pairs whose probability reaches ``confidence``, this returns the one
    fewest ranks apart (ties: the one centred nearest ``n * q``). None exactly when no pair
    reaches it: ``n < min_samples_for_quantile(q, confidence)``."""
    _check_unit(q, "q")
    values = np.sort(np.asarray(samples, dtype=float).ravel())
    n = values.size
    if n < 1:
        return None
    cdf = _binomial_cdf(n, q)
    below = cdf[:n]  # P(B <= j - 1) for j = 1..n
    # For each lower rank j, the smallest upper rank k with P(B <= k - 1) - P(B <= j - 1) >= confidence.
    k = np.searchsorted(cdf, below + confidence - 1e-12, side="left") + 1
    j = np.arange(1, n + 1)
    ok = k <= n
    if not ok.any():
        return None
    j, k = j[ok], k[ok]
    width = k - j
    off_centre = np.abs((j + k) / 2 - (n * q + 0.5))
    best = np.lexsort((off_centre, width))[0]
    low_rank, high_rank = int(j[best]), int(k[best])
    coverage = float(cdf[high_rank - 1] - below[low_rank - 1])
    return QuantileInterval(float(values[low_rank - 1]), float(values[high_rank - 1]), low_rank, high_rank, coverage)


def median_within(samples, fraction: float, confidence: float = CONFIDENCE) -> bool:
    """True when the p50's interval lies within ``fraction`` of the p50 on both sides: the point
    at which ``--target-ci FRACTION`` may stop timing (False while ``n`` is too small)."""
    interval = quantile_interval(samples, 0.5, confidence)
    if interval is None:
        return False
    p50 = float(np.median(samples))
    return max(p50 - interval.low, interval.high - p50) <= fraction * p50


def warmup_calls(latencies, window: int = 10, tolerance: float = 0.05, windows: int = 3) -> int | None:
    """The number of calls warm-up took: the calls up to the end of the first ``windows``
    consecutive windows of ``window`` calls whose medians are within ``tolerance`` of each other
    (largest / smallest - 1), or None while the latency is still moving.

    Medians, not means, so one slow call (a page fault, a scheduler tick) neither ends nor
    prolongs warm-up; the timing loop calls this after each window on all calls so far."""
    if window < 1 or windows < 2:
        raise ValueError("warmup_calls needs window >= 1 and windows >= 2")
    values = np.asarray(latencies, dtype=float).ravel()
    medians = [float(np.median(values[i : i + window])) for i in range(0, values.size - window + 1, window)]
    for last in range(windows - 1, len(medians)):
        recent = medians[last - windows + 1 : last + 1]
        if min(recent) > 0 and max(recent) / min(recent) - 1 <= tolerance:
            return (last + 1) * window
    return None


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval for a proportion (e.g. top-1 agreement, ``successes`` of ``n``).

    Unlike ``p +- z * se`` it stays inside [0, 1] and does not collapse to a point at 0 or n
    successes: 240 of 240 gives a lower bound of 0.9843, 1,000 of 1,000 gives 0.9962."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    return low, 1.0 if successes == n else min(1.0, centre + half)


def wilson_lower(successes: int, n: int, confidence: float = CONFIDENCE) -> float:
    """The Wilson interval's lower end: what a gate on a rate may claim."""
    return wilson_interval(successes, n, confidence)[0]


def examples_needed(threshold: float, failures: int = 0, confidence: float = CONFIDENCE) -> int:
    """The fewest examples, ``failures`` of them failing, whose Wilson lower bound reaches
    ``threshold``: how large an eval set must be before a gate on that rate can pass.

    With no failure the lower bound is ``n / (n + z**2)``, so ``n >= z**2 * t / (1 - t)``:
    3,838 examples for 99.9 % and 381 for 99 % at 95 %."""
    _check_unit(threshold, "threshold")
    if failures < 0:
        raise ValueError(f"failures must be >= 0, got {failures}")
    z = _z(confidence)
    if failures == 0:
        n = max(1, math.ceil(z * z * threshold / (1 - threshold) - 1e-9))
        return n + (wilson_lower(n, n, confidence) < threshold)  # guard the ceiling's rounding
    high = failures + 1
    while wilson_lower(high - failures, high, confidence) < threshold:  # the bound rises with n
        high *= 2
    low = max(failures, high // 2)
    while high - low > 1:
        middle = (low + high) // 2
        if wilson_lower(middle - failures, middle, confidence) >= threshold:
            high = middle
        else:
            low = middle
    return high


def rate_gate(successes: int, n: int, threshold: float, confidence: float = CONFIDENCE) -> dict:
    """A gate on a rate (top-1 agreement): it passes only when the Wilson lower bound of
    ``successes`` of ``n`` reaches ``threshold``, not when the point figure does.

    ``verdict``: "met" (the bound clears it), "not established" (the point figure clears it and
    the bound does not: more examples could settle it; ``needed`` says how many at the same
    failure rate) or "missed" (the point figure is below it)."""
    low = wilson_lower(successes, n, confidence)
    rate = successes / n
    passed = low >= threshold
    record = {
        "successes": int(successes),
        "examples": int(n),
        "rate": rate,
        "lower_bound": low,
        "threshold": threshold,
        "confidence": confidence,
        "passed": passed,
        "verdict": "met" if passed else "not established" if rate >= threshold else "missed",
    }
    if record["verdict"] == "not established":
        failures = n - successes
        record["needed"] = (
            examples_needed(threshold, 0, confidence) if not failures else _needed_at_rate(rate, threshold, confidence)
        )
    return record


def describe_rate(gate: dict) -> str:
    """``gate`` (``rate_gate``) in words: "0.9958 (4,182 of 4,200; 95 % lower bound 0.9938, at least
    0.99): met"; a verdict "not established" says how many examples would settle it."""
    text = (
        f"{gate['rate']:.4f} ({gate['successes']:,} of {gate['examples']:,}; {gate['confidence'] * 100:g} % lower bound "
        f"{gate['lower_bound']:.4f}, at least {gate['threshold']:g})"
    )
    if gate["verdict"] == "not established":
        needed = f"{gate['needed']:,}" if gate.get("needed") else "more"
        return text + f": not established on {gate['examples']:,} examples ({needed} needed at this rate)"
    return f"{text}: {gate['verdict']}"


def _needed_at_rate(rate: float, threshold: float, confidence: float) -> int | None:
    """The fewest examples at which ``rate`` (above ``threshold``) would have a lower bound
    reaching ``threshold``; None where no count does (the rate equals it)."""
    if rate <= threshold:
        return None
    n = 1
    while wilson_lower(round(rate * n), n, confidence) < threshold:
        n *= 2
        if n > 10**9:
            return None
    low, high = n // 2, n
    while high - low > 1:
        middle = (low + high) // 2
        if wilson_lower(round(rate * middle), middle, confidence) >= threshold:
            high = middle
        else:
            low = middle
    return high


def _z(confidence: float) -> float:
    _check_unit(confidence, "confidence")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _check_unit(value: float, name: str) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")
