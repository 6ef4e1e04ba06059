"""Run the phases of a search in order, skipping the finished ones, then write the report.

Every phase computes on the run's device (``--device auto|cpu|cuda``). Under torchrun every process
runs the training phases (pretrain, search, fine-tune) as one DDP job, one device per process; rank 0
alone runs derive, eval, export and measure, writes the phase results and the report, and the other
ranks wait for it, then read the results from the run folder. Launch it as
``torchrun --nproc-per-node N -m search_client.cli run --preset cityscapes-paper ...``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from search_client.pipeline.context import PipelineContext, Say
from search_client.pipeline.derive_phase import run_derive
from search_client.pipeline.finish import run_eval, run_export, run_measure
from search_client.pipeline.search import run_search
from search_client.pipeline.settings import PipelineSettings
from search_client.pipeline.state import PHASES, RunState
from search_client.pipeline.training import run_finetune, run_pretrain
from search_client.remote import ProfilerClient
from search_client.report import (
    RunReport,
    plot_supernet_vs_searched,
    plot_training_curves,
    read_jsonl,
    write_report,
)
from search_client.train.ddp import barrier, cleanup_distributed, init_distributed, resolve_device

log = logging.getLogger(__name__)

TRAINING_PHASES = frozenset({"pretrain", "search", "finetune"})  # run by every rank under torchrun

PHASE_FUNCS: dict[str, Callable[[PipelineContext], dict]] = {
    "pretrain": run_pretrain,
    "search": run_search,
    "derive": run_derive,
    "finetune": run_finetune,
    "eval": run_eval,
    "export": run_export,
    "measure": run_measure,
}


def run_phases(ctx: PipelineContext, until: str = "measure") -> RunState:
    """Run every phase up to ``until``; a finished phase is skipped (its result stays on disk)."""
    if until not in PHASES:
        raise ValueError(f"unknown phase {until!r}; phases: {', '.join(PHASES)}")
    state = ctx.state
    for phase in PHASES[: PHASES.index(until) + 1]:
        if state.done(phase):
            ctx.say(f"[{phase}] done earlier: reusing {state.dir / 'phases' / (phase + '.json')}")
            continue
        ctx.say(f"[{phase}] running")
        started = time.time()
        if phase in TRAINING_PHASES or ctx.dist.is_main:
            result = PHASE_FUNCS[phase](ctx)
            if ctx.dist.is_main:
                state.mark_done(phase, result, started)
        barrier(ctx.dist)  # every rank sees the phase done before any rank looks at the next one
        ctx.say(f"[{phase}] finished in {time.time() - started:.1f} s")
    return state


def run_pipeline(
    settings: PipelineSettings,
    until: str = "measure",
    client: ProfilerClient | None = None,
    say: Say | None = None,
    max_steps: int | None = None,
) -> RunReport | None:
    """The whole search (resumable from ``settings.run_dir``) on ``settings.device``, as one process
    or as every process of a torchrun job; returns the report once measured (None on ranks > 0)."""
    dist = init_distributed(resolve_device(settings.device))
    try:
        settings = settings.merged_with_saved()
        barrier(dist)  # every rank has read the saved settings before rank 0 writes them
        if dist.is_main:
            settings.save()
        speak = (say or log.info) if dist.is_main else (lambda _line: None)
        ctx = PipelineContext(settings, client=client, say=speak, max_steps=max_steps, dist=dist)
        speak(f"[run] device {dist.device}" + (f", {dist.world_size} processes (DDP)" if dist.distributed else ""))
        state = run_phases(ctx, until)
        if not state.done("measure") or not dist.is_main:
            return None
        return write_run_report(state, settings, ctx.device_class)
    finally:
        cleanup_distributed()


def assemble_report(state: RunState, settings: PipelineSettings, device_class: str) -> dict:
    """report.json content: the fields every run report has (target_ms, predicted_ms, measured_ms,
    device_class, runtime, gmacs, params_m, miou, supernet_gmacs, supernet_miou) plus paths, widths,
    predictor and phase figures."""
    search, derive, ev, meas = (state.result(p) for p in ("search", "derive", "eval", "measure"))
    pretrain, finetune = state.result("pretrain"), state.result("finetune")
    predictor = meas.get("predictor") or search["predictor"]
    notes = []
    f = derive["fit"]
    if "before_gmacs" in f and f["before_gmacs"] != f["after_gmacs"]:
        notes.append(f"derivation moved gates to meet the GMACs target {f['target_gmacs']:.2f}: "
                     f"{f['before_gmacs']:.2f} -> {f['after_gmacs']:.2f} GMACs")
    elif "before_ms" in f and f["before_ms"] != f["after_ms"]:
        notes.append(f"derivation moved gates to meet the target: {f['before_ms']:.2f} -> {f['after_ms']:.2f} ms predicted")
    calibration = derive.get("calibration", [])
    if len(calibration) > 1:
        steps = " -> ".join(f"{c['measured_ms']:.2f}" for c in calibration)
        kept = next((i + 1 for i, c in enumerate(calibration) if c.get("chosen")), len(calibration))
        notes.append(f"derivation measured {len(calibration)} candidates ({steps} ms, "
                     f"{calibration[0].get('statistic', 'median_ms')}) and kept candidate {kept}, the nearest to the target")
    if meas.get("trained_weights_differ"):
        notes.append(f"the trained network measures {100 * (meas['trained_weights_ratio'] - 1):+.1f} % from its untrained "
                     "candidate of the same architecture measured beside it (trained weights change the latency on "
                     f"this device; {meas.get('denormal_weights', 0)} subnormal weights)")
    elif meas.get("untrained_again_ms") is not None:
        notes.append(f"the trained network measured {100 * meas['trained_vs_untrained']:+.1f} % from its untrained "
                     "candidate at derivation time, but like it when both were measured again: the device drifted")
    if len(meas.get("drift_passes_ms", ())) > 1:
        notes.append(f"the device drifted slower: the trained network was measured in {len(meas['drift_passes_ms'])} "
                     f"passes ({', '.join(f'{v:.2f}' for v in meas['drift_passes_ms'])} ms) and the lowest is its "
                     "measurement (interference only adds time)")
    correction = meas.get("network_correction") or {}
    if correction:
        notes.append(f"network-level correction: {correction.get('model')} on {correction.get('n_networks')} measured "
                     f"networks (block sum {meas.get('block_sum_ms', 0):.2f} ms -> predicted {meas['predicted_ms']:.2f} ms)"
                     + (f"; {correction['fallback']}" if correction.get("fallback") else ""))
    if search["predictor"].get("offline"):
        notes.append("the search ran on a cached predictor (profiler service unreachable)")
    return {
        "name": settings.name,
        "target_ms": search["target_ms"], "predicted_ms": meas["predicted_ms"], "measured_ms": meas["measured_ms"],
        "target_gmacs": search.get("target_gmacs"),
        "device_class": device_class, "runtime": settings.runtime,
        "gmacs": ev["gmacs"], "params_m": ev["params_m"], "miou": ev["miou"],
        "supernet_gmacs": ev["supernet_gmacs"], "supernet_params_m": ev["supernet_params_m"],
        "supernet_miou": ev["supernet_miou"],
        "supernet_predicted_ms": meas["supernet_predicted_ms"], "supernet_measured_ms": meas.get("supernet_measured_ms"),
        "gmacs_512x1024": ev["gmacs_512x1024"], "supernet_gmacs_512x1024": ev["supernet_gmacs_512x1024"],
        "resolution": list(settings.latency_size),
        "predictor_id": predictor.get("id"), "predictor_version": predictor.get("version"),
        "predicted_ms_local": derive["predicted_ms_local"],
        "block_sum_ms": meas.get("block_sum_ms"), "network_correction": meas.get("network_correction"),
        "trained_weights_ratio": meas.get("trained_weights_ratio"), "denormal_weights": meas.get("denormal_weights"),
        "paths": derive["paths"], "widths": derive["widths"], "channels": derive.get("channels", {}), "spec": derive["spec"],
        "derive_equivalence_max_abs_diff": derive["equivalence_max_abs_diff"],
        "derive_calibration": calibration,
        "http_calls_during_search": search["http_calls_during_search"],
        "latency_share_of_search": search.get("latency_share"),
        "pretrain_miou": pretrain.get("miou"), "search_miou": search.get("miou"), "finetune_miou": finetune.get("miou"),
        "iterations": {"pretrain": pretrain.get("iterations"), "search": search.get("iterations"),
                       "finetune": finetune.get("iterations")},
        "measurement": {k: v for k, v in (meas.get("measurement") or {}).items() if k != "samples_ms"},
        "statistic": meas.get("statistic", "median_ms"), "tolerance": settings.target_tolerance,
        "measured_median_ms": meas.get("measured_median_ms"),
        "supernet_measured_median_ms": meas.get("supernet_measured_median_ms"),
        "untrained_measured_ms": derive.get("untrained_measured_ms"),
        "trained_vs_untrained": meas.get("trained_vs_untrained"),
        "drift_passes_ms": meas.get("drift_passes_ms"),  # the trained network's passes when the device drifted
        # What each mIoU cost: the supernet is the pretrained one; the searched network also had the
        # search and its own fine-tuning.
        "training_budget": {"supernet": pretrain.get("iterations"),
                            "searched": sum(x.get("iterations") or 0 for x in (pretrain, search, finetune))},
        "host_load_avg": meas.get("host_load_avg"),
        "notes": notes,
    }


def training_curves(run_dir: Path) -> dict[str, list[dict]]:
    curves = {}
    for phase in ("pretrain", "search", "finetune"):
        rows = [r for r in read_jsonl(run_dir / phase / "metrics.jsonl") if r.get("kind") == "train"]
        if rows:
            curves[phase] = rows
    return curves


def write_run_report(state: RunState, settings: PipelineSettings, device_class: str,
                     extra_plots: list[Path] = ()) -> RunReport:  # fmt: skip
    report = RunReport.model_validate(assemble_report(state, settings, device_class))
    plots = list(extra_plots)
    plots.append(plot_supernet_vs_searched(report, state.dir / "supernet_vs_searched.png"))
    curves = training_curves(state.dir)
    if curves:
        plots.append(plot_training_curves(curves, state.dir / "training_curves.png"))
    report.plots = [str(p) for p in plots]
    return write_report(state.dir, report)
