"""The last phases: evaluate (compact and supernet mIoU, sizes), export (ONNX, TFLite with the extra),
measure (server prediction of the whole network, then a real measurement on the target device)."""

from __future__ import annotations

import copy
import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from search_client.count import inference_params
from search_client.eval import evaluate
from search_client.pipeline.context import PipelineContext
from search_client.pipeline.measuring import (
    export_input,
    export_onnx,
    measure_network,
    predictor_statistic,
    summarize_jobs,
)
from search_client.pipeline.state import write_json_atomic
from search_client.search.latency import gmacs, network_blocks
from shared.api import MeasurementSummary, NetworkSubmitted, PredictResponse
from shared.export import export_module_tflite, sha256_bytes, tflite_available

log = logging.getLogger(__name__)
PAPER_SIZE = (512, 1024)
DRIFT_PASSES = 2  # further passes of the trained network when the device drifted since the derivation
DRIFT_PAUSE_S = 20.0  # between them: a slow stretch of a shared host lasts about a minute


def run_eval(ctx: PipelineContext) -> dict:
    """Single-scale mIoU of the fine-tuned compact network and of the pretrained supernet."""
    _, val_set = ctx.datasets()
    names = ctx.class_names()
    compact, supernet = ctx.compact("finetune").to(ctx.device), ctx.pretrained_supernet()
    res_c = evaluate(compact, DataLoader(val_set, batch_size=1), names, ctx.device)
    res_s = evaluate(supernet, DataLoader(val_set, batch_size=1), names, ctx.device)
    ctx.say(f"[eval] mIoU searched {100 * res_c.miou:.2f} | supernet {100 * res_s.miou:.2f}")
    size = ctx.latency_size
    return {
        "miou": res_c.miou, "supernet_miou": res_s.miou,
        "per_class": res_c.as_dict()["iou"], "supernet_per_class": res_s.as_dict()["iou"],
        "gmacs": gmacs(compact, size), "supernet_gmacs": gmacs(supernet, size),
        "gmacs_512x1024": gmacs(compact, PAPER_SIZE), "supernet_gmacs_512x1024": gmacs(supernet, PAPER_SIZE),
        "params_m": inference_params(compact) / 1e6, "supernet_params_m": inference_params(supernet) / 1e6,
    }


def _onnx_matches(onnx_bytes: bytes, model: torch.nn.Module, x: torch.Tensor) -> float:
    """Max |onnxruntime - torch| on one input (the exported file computes what was trained)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    return float(np.abs(got - want).max())


def exportable(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose modules carry no non-tensor ``_extra_state`` (the supernet's mixed blocks keep
    their mode there), which the TorchScript-based ONNX exporter cannot handle."""
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        cls = type(module)
        if cls.get_extra_state is not torch.nn.Module.get_extra_state:
            module.__class__ = _without_extra_state(cls)
    return clone


@functools.cache
def _without_extra_state(cls: type) -> type:
    return type(f"{cls.__name__}ForExport", (cls,), {"get_extra_state": torch.nn.Module.get_extra_state})


def run_export(ctx: PipelineContext) -> dict:
    folder = ctx.state.phase_dir("export")
    compact = ctx.compact("finetune")
    x = export_input(ctx.latency_size)
    onnx_bytes = export_onnx(compact, x)
    path = folder / "model.onnx"
    path.write_bytes(onnx_bytes)
    out = {"onnx": str(path), "onnx_sha256": sha256_bytes(onnx_bytes), "onnx_bytes": len(onnx_bytes),
           "onnx_max_abs_diff": _onnx_matches(onnx_bytes, compact, x)}
    if ctx.settings.measure_supernet:
        sup = export_onnx(exportable(ctx.pretrained_supernet().cpu()), x)
        (folder / "supernet.onnx").write_bytes(sup)
        out["supernet_onnx"] = str(folder / "supernet.onnx")
    if ctx.settings.export_tflite or ctx.settings.runtime.startswith("tflite"):
        out.update(_export_tflite(compact, x, folder))
    return out


def _export_tflite(compact: torch.nn.Module, x: torch.Tensor, folder: Path) -> dict:
    if not tflite_available():
        log.warning("TFLite export skipped: the optional 'tflite' extra is not installed")
        return {"tflite": None}
    data = export_module_tflite(compact, (x,))
    (folder / "model.tflite").write_bytes(data)
    return {"tflite": str(folder / "model.tflite"), "tflite_sha256": sha256_bytes(data)}


def _measure_file(
    ctx: PipelineContext, path: Path, name: str, job_file: Path, repeat: bool = False, blocks: list | None = None,
) -> tuple[int, MeasurementSummary]:
    """Upload (once: the job id is kept so a resumed run waits for the same job) and wait. ``blocks``:
    the network's block list, sent along so the measurement trains the network-level correction."""
    client = ctx.require_client()
    if job_file.exists():
        job = NetworkSubmitted.model_validate_json(job_file.read_text())
        ctx.say(f"[measure] waiting for job {job.job_id} submitted earlier")
    else:
        job = client.upload_network(path.read_bytes(), ctx.device_class, ctx.settings.runtime, name, repeat=repeat,
                                    blocks=blocks)
        write_json_atomic(job_file, job.model_dump(mode="json"))
        ctx.say(f"[measure] {name}: job {job.job_id} queued for {ctx.device_class}")
    return job.job_id, client.wait_job(job.job_id)


def _measure_repeated(ctx: PipelineContext, path: Path, name: str, folder: Path, repeats: int,
                      statistic: str, blocks: list | None = None) -> dict:
    """``repeats`` separate jobs of one network, one after another, summarized by
    ``measuring.summarize_jobs`` (one job can land on a moment of interference)."""
    runs = [_measure_file(ctx, path, name, folder / f"job-{i}.json", repeat=i > 0, blocks=blocks)
            for i in range(repeats)]
    summary = summarize_jobs([m for _, m in runs], statistic)
    job_id, chosen = min(runs, key=lambda r: abs(float(getattr(r[1], statistic)) - summary["ms"]))
    return {"job_id": job_id, **chosen.model_dump(exclude={"samples_ms"}), **summary,
            "job_ids": [j for j, _ in runs]}


def _network_total(answer: PredictResponse) -> float:
    """The whole network's predicted latency: the corrected total (a server without network-level
    corrections answers only the sum)."""
    return answer.network_ms if answer.network_ms is not None else answer.total_ms


def denormal_weights(model: torch.nn.Module) -> int:
    """Float weights and buffers that are subnormal (0 < |x| < the smallest normal float32): a CPU
    may compute with them many times slower than with normal numbers or zeros."""
    tiny = torch.finfo(torch.float32).tiny
    return sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in [*model.parameters(), *model.buffers()]
               if t.is_floating_point())


def trained_weights_check(ctx: PipelineContext, compact: torch.nn.Module, trained_ms: float, untrained_ms: float,
                          statistic: str, target_ms: float | None = None) -> dict:
    """Does the trained network measure like the untrained candidate of the same architecture that
    the derivation calibrated on? Trained weights can differ (subnormal values slow a CPU down).

    Beyond the tolerance, or when the trained network misses ``target_ms`` beyond it, the untrained
    candidate is measured once more (``derive_repeats`` jobs, now, beside the trained one) so that a
    device that drifted since the derivation is not taken for an effect of the weights; when they
    still differ, the run calibrates on the trained weights: ``trained_weights_ratio`` (trained /
    untrained, measured together) is reported and the trained network's measurement, uploaded with
    its block list, trains the network-level correction. The check costs at most
    ``derive_repeats`` extra jobs."""
    tol = ctx.settings.target_tolerance
    out = {"trained_vs_untrained": trained_ms / untrained_ms - 1, "denormal_weights": denormal_weights(compact)}
    misses = target_ms is not None and abs(trained_ms / target_ms - 1) > tol
    if abs(out["trained_vs_untrained"]) <= tol and not misses:
        return out
    again = measure_network(ctx, ctx.compact("derive"), f"{ctx.settings.name}-untrained-again",
                            ctx.settings.derive_repeats, statistic, fresh=True)["ms"]
    ratio = trained_ms / again
    out.update(untrained_again_ms=again, trained_weights_ratio=ratio, trained_weights_differ=abs(ratio - 1) > tol)
    if out["trained_weights_differ"]:
        ctx.say(f"[measure] warning: the trained network measures {trained_ms:.2f} ms, the untrained candidate of the "
                f"same architecture {again:.2f} ms measured now ({out['denormal_weights']} subnormal weights): "
                "trained weights change the latency on this device; calibrated on the trained weights "
                f"(ratio {ratio:.3f})")
    else:
        ctx.say(f"[measure] the untrained candidate measures {again:.2f} ms now (was {untrained_ms:.2f} ms at "
                "derivation): the device drifted, the trained weights do not change the latency")
    return out


def wait_out_drift(measure: Callable[[], float], trained_ms: float, expected_ms: float, tolerance: float,
                   say: Callable[[str], None] = log.info, passes: int = DRIFT_PASSES,
                   pause_s: float = DRIFT_PAUSE_S) -> dict:
    """The device drifted slower since the derivation (the untrained twin of the trained network
    measures slower now, and the trained network like it): ``measure()`` the trained network again,
    up to ``passes`` more times ``pause_s`` apart, until a pass lands within half the ``tolerance``
    above ``expected_ms``, as the derivation stops within half of it. ``expected_ms`` is the twin's
    derivation figure times the trained / untrained ratio measured side by side: what the device
    gave when the derivation calibrated. The lowest pass is the
    measurement: interference on a shared device only adds time, the rule by which the server
    labels a block measured in several sessions. A slow stretch that outlasts the passes stays in
    the figure, and in the miss."""
    measured = [trained_ms]
    for i in range(passes):
        if min(measured) <= expected_ms * (1 + tolerance / 2):
            break
        say(f"[measure] the device runs slower than at derivation: measuring again in {pause_s:.0f} s "
            f"(pass {i + 2} of at most {passes + 1})")
        time.sleep(pause_s)
        measured.append(measure())
    if len(measured) > 1:
        say(f"[measure] passes of the trained network: {', '.join(f'{v:.2f}' for v in measured)} ms; "
            f"the lowest, {min(measured):.2f} ms, is its measurement")
    return {"measured_ms": min(measured), "drift_passes_ms": measured}


def run_measure(ctx: PipelineContext) -> dict:
    client, s = ctx.require_client(), ctx.settings
    size = ctx.latency_size
    compact, supernet = ctx.compact("finetune"), ctx.pretrained_supernet()
    blocks, sup_blocks = network_blocks(compact, *size), network_blocks(supernet, *size)
    pred = client.predict(ctx.device_class, s.runtime, blocks, network=True)
    sup_pred = client.predict(ctx.device_class, s.runtime, sup_blocks, network=True)
    statistic = predictor_statistic(ctx.predictor().meta)
    out = {"predicted_ms": _network_total(pred), "block_sum_ms": pred.total_ms, "block_ms": pred.block_ms,
           "predictor": pred.predictor.model_dump(),
           "network_correction": pred.network_correction.model_dump() if pred.network_correction else None,
           "supernet_predicted_ms": _network_total(sup_pred), "measured_ms": None, "supernet_measured_ms": None,
           "statistic": statistic}
    if not s.measure:
        return out
    folder = ctx.state.phase_dir("measure")
    export = ctx.state.result("export")
    m = _measure_repeated(ctx, Path(export["onnx"]), f"{s.name}-compact", folder, s.measure_repeats, statistic,
                          [b.model_dump() for b in blocks])
    # Host devices share their cores with everything else running: keep the load next to the number.
    out.update(measured_ms=m["ms"], measured_median_ms=m["median_ms"], measurement=m, host_load_avg=os.getloadavg())
    ctx.say(f"[measure] measured {m['ms']:.2f} ms, the median {statistic} of "
            f"{', '.join(f'{v:.2f}' for v in m['repeats_ms'])} ms (job medians "
            f"{', '.join(f'{v:.2f}' for v in m['repeats_median_ms'])}; predicted {out['predicted_ms']:.2f} ms)")
    untrained = ctx.state.result("derive").get("untrained_measured_ms")
    if untrained:
        out.update(trained_weights_check(ctx, compact, m["ms"], untrained, statistic,
                                         ctx.state.result("search").get("target_ms")))
        if out.get("trained_weights_differ") is False and out["untrained_again_ms"] > untrained:
            def again() -> float:
                return measure_network(ctx, compact, f"{s.name}-compact-again", s.measure_repeats, statistic,
                                       fresh=True)["ms"]

            out.update(wait_out_drift(again, m["ms"], untrained * out["trained_weights_ratio"], s.target_tolerance,
                                      ctx.say))
    if s.measure_supernet and export.get("supernet_onnx"):
        sup = _measure_repeated(ctx, Path(export["supernet_onnx"]), f"{s.name}-supernet", folder / "supernet",
                                s.measure_repeats, statistic, [b.model_dump() for b in sup_blocks])
        out.update(supernet_measured_ms=sup["ms"], supernet_measured_median_ms=sup["median_ms"],
                   supernet_measurement=sup)
    return out
