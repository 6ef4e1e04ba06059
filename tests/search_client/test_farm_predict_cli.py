"""``rtseg-farm predict`` and ``rtseg-farm measure`` against a live farm on loopback: a real
``profiler-server --host-device`` whose host agent measures a small kernel campaign and the model."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from android_harness.host import host_device_class
from search_client.farm_cli import main
from search_client.pipeline.localfarm import LocalFarm
from search_client.remote import ProfilerClient
from shared.kernels import KernelConfig
from testkit.onnx_models import classifier_onnx


def _kernels() -> list[dict]:
    out = [KernelConfig(op="overhead")]
    out += [KernelConfig(op="conv", fn=fn, dims=(3, 8 * (i + 1), 16, 16, 3, 1, 1, 0))
            for i in range(6) for fn in ("Relu", "none")]
    out += [KernelConfig(op="global_pool", fn="GlobalAveragePool", dims=(8 * (i + 1), 256)) for i in range(5)]
    out += [KernelConfig(op="matmul", fn="none", dims=(1, 1, 8 * (i + 1), 10, 0)) for i in range(5)]
    out += [KernelConfig(op="reorder", fn=fn, dims=(16 * (i + 1), 256, 16 * (i + 1)))
            for i in range(3) for fn in ("ReorderInput", "ReorderOutput")]
    return [k.model_dump(mode="json") for k in out]


def _model(path: Path) -> Path:
    path.write_bytes(classifier_onnx(["N", 3, 16, 16], ["N", 10]))
    return path


@pytest.fixture(scope="module")
def live_farm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("farm")
    with LocalFarm(tmp / "farm.db", tmp / "farm.log") as farm:
        dc = host_device_class()
        with ProfilerClient(farm.url, token=farm.token, timeout=120) as client:
            camp = client.create_campaign(device_class=dc, configs=_kernels(), warmup=1, runs=5, min_seconds=0)
            client.wait_campaign(camp.id, timeout=600, poll=0.5)
            client.fit_kernel_predictor(dc, "onnxruntime")
        yield farm, dc, _model(tmp / "tiny.onnx")


def _cli(farm: LocalFarm, *args: str) -> int:
    return main(["--server", farm.url, "--token", farm.token, *args])


def test_predict_prints_a_kernel_table(live_farm, capsys) -> None:
    farm, dc, model = live_farm
    assert _cli(farm, "predict", str(model), "--device-class", dc, "--input-shape", "1x3x16x16") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ms", "share", "kind", "fn"]
    assert any(line.split()[2:5] == ["conv", "Relu", "stem+stem_relu"] for line in lines[1:])
    assert any("matmul" in line and "classifier" in line for line in lines)
    assert "call overhead" in out and lines[-2].startswith("total ") or lines[-1].startswith("NOT included")
    assert "NOT included: 1 nodes no kernel kind covers (CumSum)" in out


def test_predict_json_is_the_servers_answer(live_farm, capsys) -> None:
    farm, dc, model = live_farm
    assert _cli(farm, "--json", "predict", str(model), "--device-class", dc, "--input-shape", "1x3x16x16") == 0
    ans = json.loads(capsys.readouterr().out)
    assert ans["device_class"] == dc and ans["runtime"] == "onnxruntime/t1/cpu"
    assert {k["kind"] for k in ans["kernels"]} >= {"conv", "global_pool", "matmul"}
    assert ans["total_ms"] == pytest.approx(ans["overhead_ms"] + sum(k["predicted_ms"] for k in ans["kernels"]))
    assert [u["op_type"] for u in ans["unsupported"]] == ["CumSum"]


def test_predict_errors_exit_2_with_what_to_fix(live_farm, capsys) -> None:
    farm, dc, model = live_farm
    assert _cli(farm, "predict", str(model), "--device-class", dc) == 2
    assert "dynamic shape" in capsys.readouterr().err
    assert _cli(farm, "predict", str(model), "--device-class", "SM-NONE/none", "--input-shape", "1x3x16x16") == 2
    assert "run a kernel campaign" in capsys.readouterr().err
    assert _cli(farm, "predict", "missing.onnx", "--device-class", dc) == 2
    assert "is not a file" in capsys.readouterr().err
    assert _cli(farm, "predict", str(model), "--device-class", dc, "--input-shape", "1xbig") == 2
    assert "1x3x512x1024" in capsys.readouterr().err


def test_measure_prints_predicted_beside_measured(live_farm, capsys, tmp_path) -> None:
    farm, dc, model = live_farm
    static = tmp_path / "static.onnx"
    m = onnx.load(model)
    for vi in (m.graph.input[0], m.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(m, static)
    assert _cli(farm, "--json", "measure", str(static), "--device-class", dc, "--timeout", "300") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measured"]["p10_ms"] > 0 and out["predicted_ms"] > 0
    assert out["error_pct"] == pytest.approx(100 * (out["predicted_ms"] - out["measured"]["p10_ms"]) / out["measured"]["p10_ms"])
    assert _cli(farm, "measure", str(static), "--device-class", dc, "--timeout", "300") == 0
    text = capsys.readouterr().out
    assert text.startswith("measured  p10") and "predicted" in text and "% against the measured p10" in text
