"""Statistics of samples and of tool summaries; bounded re-measure of noisy runs."""

from pathlib import Path

import numpy as np
import pytest

from android_harness.parsers import parse_benchmark_model, parse_perf_test
from android_harness.stats import measure_until_stable, relative_spread, summarize_samples, summary_stats


def read(name: str) -> str:
    return (Path(__file__).parent / "outputs" / name).read_text()



def test_summarize_samples_matches_numpy():
    rng = np.random.default_rng(1)
    samples = list(rng.gamma(20, 0.05, size=200))
    s = summarize_samples(samples, warmup=10, tool="t")
    assert s.median_ms == pytest.approx(np.median(samples))
    assert s.mean_ms == pytest.approx(np.mean(samples))
    assert s.p10_ms == pytest.approx(np.percentile(samples, 10))
    assert s.p90_ms == pytest.approx(np.percentile(samples, 90))
    assert s.std_ms == pytest.approx(np.std(samples, ddof=1))
    assert s.runs == 200 and s.samples_ms == pytest.approx(samples) and s.warmup == 10


def test_summarize_rejects_empty():
    with pytest.raises(ValueError):
        summarize_samples([])


def test_summary_stats_uses_printed_percentiles_and_estimates_the_rest():
    s = summary_stats(parse_perf_test(read("ort_basic.txt")), warmup=10)
    assert s.median_ms == pytest.approx(16.7086)
    assert s.p90_ms == pytest.approx(18.5)
    assert s.std_ms == pytest.approx((18.5 - 16.7086) / 1.2815515655446004)
    # p10 is not printed: estimated from the normal fit, never below the printed minimum
    assert 16.3412 <= s.p10_ms <= s.median_ms
    assert "estimated:std,p10" in s.flags


def test_summary_stats_tflite_old_format_falls_back_to_mean_for_median():
    s = summary_stats(parse_benchmark_model(read("tflite_v1_old.txt")))
    assert s.median_ms == pytest.approx(249.684)
    assert s.std_ms == pytest.approx(1.442)
    assert s.p10_ms == pytest.approx(249.684 - 1.2815515655446004 * 1.442)
    assert s.p90_ms <= 254.474
    assert s.runs == 50 and s.warmup == 2
    assert any(f.startswith("estimated:") and "median" in f for f in s.flags)


def test_summary_stats_flags_delegate_fallback():
    s = summary_stats(parse_benchmark_model(read("tflite_fallback.txt")))
    assert "delegate-fallback" in s.flags


def _stats(spread: float):
    base = np.linspace(10 - 10 * spread / 2, 10 + 10 * spread / 2, 101)
    return summarize_samples(list(base))


def test_quiet_run_is_measured_once():
    calls = []
    result = measure_until_stable(lambda: calls.append(1) or _stats(0.05), max_spread=0.3, max_attempts=3)
    assert len(calls) == 1 and result.attempts == 1 and not result.unstable


def test_noisy_run_is_remeasured_and_the_quiet_attempt_kept():
    spreads = iter([0.9, 0.1])
    result = measure_until_stable(lambda: _stats(next(spreads)), max_spread=0.3, max_attempts=3)
    assert result.attempts == 2 and not result.unstable
    assert relative_spread(result) == pytest.approx(0.08, abs=0.01)


def test_always_noisy_is_bounded_and_flagged():
    spreads = iter([0.9, 0.7, 0.8, 0.1])
    result = measure_until_stable(lambda: _stats(next(spreads)), max_spread=0.3, max_attempts=3)
    assert result.attempts == 3 and result.unstable
    assert relative_spread(result) == pytest.approx(0.7 * 0.8, abs=0.02)
