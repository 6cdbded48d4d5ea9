"""rnnforge.core.stats: the intervals cover what they claim on synthetic samples of known
quantiles, refuse what the sample count cannot support, and match known Wilson bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnforge.core import stats


@pytest.mark.parametrize(("q", "n"), [(0.5, 200), (0.9, 300), (0.99, 600)])
def test_the_quantile_interval_covers_the_true_quantile_at_its_nominal_rate(q, n):
    rng = np.random.default_rng(7)
    true = -math.log(1 - q)  # the q quantile of Exp(1)
    repeats, hits, claimed = 1500, 0, []
    for _ in range(repeats):
        interval = stats.quantile_interval(rng.exponential(size=n), q)
        hits += interval.low <= true <= interval.high
        claimed.append(interval.coverage)
    assert min(claimed) >= 0.95
    expected = float(np.mean(claimed))  # exact for continuous samples: what the ranks promise
    observed = hits / repeats
    assert abs(observed - expected) <= 4 * math.sqrt(expected * (1 - expected) / repeats), (observed, expected)


def test_the_interval_brackets_the_sample_quantile_and_narrows_with_n():
    rng = np.random.default_rng(3)
    widths = []
    for n in (100, 1_000, 10_000):
        sample = rng.uniform(size=n)
        interval = stats.quantile_interval(sample, 0.9)
        assert interval.low <= np.percentile(sample, 90) <= interval.high
        assert interval.low_rank < interval.high_rank and interval.coverage >= 0.95
        widths.append(interval.high - interval.low)
    assert widths[0] > widths[1] > widths[2] and widths[2] < 0.02  # U(0, 1): p90's standard error ~0.3/sqrt(n)


def test_too_few_samples_give_no_interval_and_the_rule_is_derived():
    assert [stats.min_samples_for_quantile(q) for q in (0.5, 0.9, 0.99, 0.999)] == [6, 29, 299, 2995]
    assert stats.min_samples_for_quantile(0.99, confidence=0.9) == 230  # 0.99**230 + 0.01**230 <= 0.1
    rng = np.random.default_rng(1)
    for q in (0.5, 0.99, 0.999):
        need = stats.min_samples_for_quantile(q)
        assert stats.quantile_interval(rng.exponential(size=need - 1), q) is None
        at = stats.quantile_interval(rng.exponential(size=need), q)
        assert at is not None and at.coverage >= 0.95
    assert stats.quantile_interval([], 0.5) is None
    with pytest.raises(ValueError, match="q must be strictly between 0 and 1"):
        stats.quantile_interval([1.0, 2.0], 1.0)


def test_the_stopping_rule_waits_for_a_tight_median():
    rng = np.random.default_rng(5)
    sample = 1.0 + rng.exponential(0.1, size=5_000)
    assert not stats.median_within(sample[:5], 0.5)  # n too small: never "precise enough"
    assert not stats.median_within(sample[:30], 0.01)
    assert stats.median_within(sample, 0.01)
    interval = stats.quantile_interval(sample, 0.5)
    p50 = float(np.median(sample))
    tight = max(p50 - interval.low, interval.high - p50) / p50
    assert stats.median_within(sample, tight * 1.001) and not stats.median_within(sample, tight * 0.999)


def test_warmup_ends_when_consecutive_window_medians_agree():
    rng = np.random.default_rng(11)
    cold = np.linspace(5.0, 1.0, 40)  # the first 40 calls get faster (allocations, algorithm search)
    steady = 1.0 + rng.normal(0, 0.005, size=200)
    steady[[5, 17, 33]] = 9.0  # single slow calls do not reset warm-up: medians
    calls = np.concatenate([cold, steady])
    took = stats.warmup_calls(calls, window=10, tolerance=0.05, windows=3)
    assert took == 70  # windows 40-49, 50-59, 60-69 are the first three steady ones
    assert stats.warmup_calls(calls[: took - 1], window=10) is None  # the loop calls it after each window
    assert stats.warmup_calls(cold, window=10) is None
    assert stats.warmup_calls(np.full(30, 2.0), window=10) == 30


def test_wilson_matches_known_values():
    assert stats.wilson_lower(240, 240) == pytest.approx(0.98425, abs=5e-5)
    assert stats.wilson_lower(1000, 1000) == pytest.approx(0.99617, abs=5e-5)
    low, high = stats.wilson_interval(81, 263)  # Wilson (1927) as tabulated by Newcombe (1998): 0.2553-0.3662
    assert low == pytest.approx(0.2553, abs=5e-4) and high == pytest.approx(0.3662, abs=5e-4)
    assert stats.wilson_interval(0, 10)[0] == 0.0 and stats.wilson_interval(10, 10)[1] == 1.0
    assert stats.wilson_lower(240, 240, confidence=0.99) < stats.wilson_lower(240, 240)
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        stats.wilson_interval(3, 2)


def test_examples_needed_is_the_fewest_that_clear_the_threshold():
    assert stats.examples_needed(0.999) == 3838
    assert stats.examples_needed(0.99) == 381
    for threshold, failures in ((0.999, 0), (0.99, 0), (0.999, 1), (0.99, 3), (0.95, 10)):
        n = stats.examples_needed(threshold, failures)
        assert stats.wilson_lower(n - failures, n) >= threshold > stats.wilson_lower(n - 1 - failures, n - 1)
