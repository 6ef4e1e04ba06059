import json

import pytest
from PIL import Image

from search_client.report import (
    RunReport,
    plot_predicted_vs_measured,
    plot_supernet_vs_searched,
    plot_training_curves,
    write_report,
)

REPORT = {
    "name": "r", "target_ms": 10.0, "predicted_ms": 9.0, "measured_ms": 12.0, "device_class": "host/x",
    "runtime": "onnxruntime", "gmacs": 0.5, "params_m": 0.1, "miou": 0.4, "supernet_gmacs": 2.0,
    "supernet_miou": 0.5, "supernet_predicted_ms": 20.0, "paths": ["lir", "skip"], "widths": {"detail.0": 12}, "channels": {"detail.0": 32},
}


def test_report_adds_ratios_and_writes_json_and_markdown(tmp_path):
    full = write_report(tmp_path, REPORT)
    assert full.measured_vs_target == pytest.approx(0.2)
    assert full.predicted_vs_measured == pytest.approx(-0.25)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == full.model_dump() and RunReport.model_validate(saved) == full  # a round trip
    assert saved["paths"] == ["lir", "skip"]  # what the run adds beyond the typed fields is kept
    md = (tmp_path / "report.md").read_text()
    assert "+20.0 %" in md and "`lir`" in md and "| detail.0 | 12 / 32 |" in md


def test_report_without_a_required_field_names_it(tmp_path):
    with pytest.raises(ValueError, match="supernet_miou"):
        write_report(tmp_path, {k: v for k, v in REPORT.items() if k != "supernet_miou"})


def test_plots_are_png_files(tmp_path):
    a = plot_predicted_vs_measured([1.0, 2.1, 3.9], [1.1, 2.0, 4.0], tmp_path / "a.png", "t")
    b = plot_supernet_vs_searched(RunReport.model_validate(REPORT), tmp_path / "b.png")
    rows = [{"iter": i, "loss": 1.0 / (i + 1), "task": 0.5} for i in range(5)]
    c = plot_training_curves({"pretrain": rows, "search": rows}, tmp_path / "c.png")
    for path in (a, b, c):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 300
    with pytest.raises(ValueError, match="no training metrics"):
        plot_training_curves({"pretrain": []}, tmp_path / "d.png")


def test_report_opens_with_target_measured_and_the_miss(tmp_path):
    from search_client.pipeline.commands import MISSED_TARGET, outcome_code

    report = {**REPORT, "statistic": "p10_ms", "tolerance": 0.1, "measured_median_ms": 13.5,
              "training_budget": {"supernet": 150, "searched": 370}}
    full = write_report(tmp_path, report)
    assert full.missed_target
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert "target 10.00 ms, measured 12.00 ms (p10), +20.0 %: MISSED" in lines[2]
    md = "\n".join(lines)
    assert "| 150 | 370 |" in md and "13.500" in md
    assert outcome_code(full) == MISSED_TARGET
    ok = write_report(tmp_path, {**report, "measured_ms": 10.5})
    assert not ok.missed_target and outcome_code(ok) == 0
