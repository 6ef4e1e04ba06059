"""Accuracy figures on a case computed by hand."""

import math

import pytest

from profiler_server.predictor import accuracy as M

MEASURED = [10.0, 20.0, 40.0, 50.0]
PREDICTED = [11.0, 19.0, 44.0, 60.0]  # relative errors: +10 %, -5 %, +10 %, +20 %


def test_headline_figures_match_hand_computation():
    report = M.accuracy_report(PREDICTED, MEASURED)
    assert report["mape"] == pytest.approx((10 + 5 + 10 + 20) / 4)
    assert report["rmspe"] == pytest.approx(math.sqrt((100 + 25 + 100 + 400) / 4))
    assert report["within_5"] == pytest.approx(1 / 4)
    assert report["within_10"] == pytest.approx(3 / 4)
    assert report["spearman"] == pytest.approx(1.0)
    # numpy's linear interpolation between the sorted |errors| 10 % and 20 % at rank 0.95 * 3 = 2.85
    assert report["p95_error"] == pytest.approx(10 + 0.85 * 10)


def test_spearman_sees_a_swapped_order():
    # ranks (1, 2, 3, 4) vs (2, 1, 3, 4): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert M.spearman([2.0, 1.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.8)


def test_noise_floor_uses_only_remeasured_configs():
    keys = ["a", "a", "b", "c", "c", "c"]
    ms = [10.0, 11.0, 5.0, 20.0, 20.0, 22.0]
    floor = M.noise_floor(keys, ms)
    # a: |11 - 10| / 10.5; c: median(0, 2 / 21); b is measured once and ignored
    spreads = [1 / 10.5, (0 + 2 / 21) / 2]
    assert floor["n_repeated"] == 2
    assert floor["median_pct"] == pytest.approx(sum(spreads) / 2 * 100)


def test_noise_floor_without_repeats_is_unknown():
    assert M.noise_floor(["a", "b"], [1.0, 2.0]) == {"median_pct": None, "p95_pct": None, "n_repeated": 0}


def test_bad_inputs_are_refused_with_a_message():
    with pytest.raises(ValueError, match="positive"):
        M.mape([1.0], [0.0])
    with pytest.raises(ValueError, match="equal-length"):
        M.mape([1.0, 2.0], [1.0])
