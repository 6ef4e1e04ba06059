"""Parsers on captured outputs of the real tools (every format the parsers document)."""

from pathlib import Path

import pytest

from android_harness.errors import BenchmarkFailed
from android_harness.parsers import parse_benchmark_model, parse_output, parse_perf_test

OUT = Path(__file__).parent / "outputs"


def read(name: str) -> str:
    return (OUT / name).read_text()


def test_tflite_old_format_takes_the_timed_pass_not_the_warmup():
    s = parse_benchmark_model(read("tflite_v1_old.txt"))
    assert s.count == 50
    assert s.avg_ms == pytest.approx(249.684)
    assert s.std_ms == pytest.approx(1.442)
    assert (s.min_ms, s.max_ms) == (pytest.approx(247.067), pytest.approx(254.474))
    assert s.median_ms is None and s.percentiles_ms == {}
    assert s.warmup_count == 2
    assert s.warmup_avg_ms == pytest.approx(304.586)
    assert s.init_ms == pytest.approx(16.242)
    assert s.first_ms == pytest.approx(360.262)
    assert not s.delegate_fallback


def test_tflite_info_prefix_scientific_notation_and_median_fields():
    s = parse_benchmark_model(read("tflite_v2_info.txt"))
    assert s.count == 50
    assert s.avg_ms == pytest.approx(1240.27)
    assert s.median_ms == pytest.approx(1239.21)
    assert s.percentiles_ms == {5: pytest.approx(1233.55), 50: pytest.approx(1239.21), 95: pytest.approx(1250.66)}
    assert s.std_ms == pytest.approx(5.108)
    assert s.warmup_count == 10
    assert s.warmup_avg_ms == pytest.approx(1265.22)


def test_tflite_delegate_fallback_is_flagged_but_parsed():
    s = parse_benchmark_model(read("tflite_fallback.txt"))
    assert s.delegate_fallback
    assert s.count == 196 and s.avg_ms == pytest.approx(5.0407)


def test_tflite_failure_keeps_raw_output_and_names_the_error():
    raw = read("tflite_failed.txt")
    with pytest.raises(BenchmarkFailed) as info:
        parse_benchmark_model(raw)
    assert "not a valid Flatbuffer" in str(info.value)
    assert info.value.output == raw


def test_perf_test_average_in_ms_percentiles_in_seconds():
    s = parse_perf_test(read("ort_basic.txt"))
    assert s.count == 20
    assert s.avg_ms == pytest.approx(17.735)
    assert s.median_ms == pytest.approx(16.7086)
    assert s.percentiles_ms[90] == pytest.approx(18.5)
    assert s.percentiles_ms[99] == pytest.approx(20.0971)
    assert 999 not in s.percentiles_ms  # P999 is the 99.9th, not an integer percentile
    assert (s.min_ms, s.max_ms) == (pytest.approx(16.3412), pytest.approx(20.1234))
    assert s.init_ms == pytest.approx(27.3071)
    assert s.first_ms == pytest.approx(20.0)


def test_perf_test_without_statistics_section():
    s = parse_perf_test(read("ort_no_percentiles.txt"))
    assert s.count == 500 and s.avg_ms == pytest.approx(2.42804)
    assert s.median_ms is None and s.percentiles_ms == {}


def test_perf_test_failure_keeps_output():
    raw = read("ort_failed.txt")
    with pytest.raises(BenchmarkFailed) as info:
        parse_output("onnxruntime_perf_test", raw)
    assert "INVALID_GRAPH" in str(info.value)
    assert info.value.output == raw


def test_empty_output_is_a_failure_not_a_zero():
    with pytest.raises(BenchmarkFailed):
        parse_output("benchmark_model", "")
    with pytest.raises(BenchmarkFailed):
        parse_output("onnxruntime_perf_test", "Average inference time cost: 0 ms\n")
