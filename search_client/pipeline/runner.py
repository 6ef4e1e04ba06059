"""Run the phases of a search in order, skipping the finished ones, then write the report."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from search_client.pipeline.context import PipelineContext, Say
from search_client.pipeline.derivation import run_derive
from search_client.pipeline.finish import run_eval, run_export, run_measure
from search_client.pipeline.search import run_search
from search_client.pipeline.settings import PipelineSettings
from search_client.pipeline.state import PHASES, RunState
from search_client.pipeline.training import run_finetune, run_pretrain
from search_client.remote import ProfilerClient
from search_client.report import plot_supernet_vs_searched, plot_training_curves, read_jsonl, write_report

log = logging.getLogger(__name__)

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
        result = PHASE_FUNCS[phase](ctx)
        state.mark_done(phase, result, started)
        ctx.say(f"[{phase}] finished in {time.time() - started:.1f} s")
    return state


def run_pipeline(
    settings: PipelineSettings,
    until: str = "measure",
    client: ProfilerClient | None = None,
    say: Say | None = None,
    max_steps: int | None = None,
) -> dict | None:
    """The whole search (resumable from ``settings.run_dir``); returns the report once measured."""
    settings = settings.merged_with_saved()
    settings.save()
    ctx = PipelineContext(settings, client=client, say=say or log.info, max_steps=max_steps)
    state = run_phases(ctx, until)
    if not state.done("measure"):
        return None
    return write_run_report(state, settings, ctx.device_class)


def assemble_report(state: RunState, settings: PipelineSettings, device_class: str) -> dict:
    """report.json content: DESIGN.md fields plus paths, widths, predictor and phase figures."""
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
        notes.append(f"derivation measured the derived network and re-aimed at the target by measured/predicted: "
                     f"{steps} ms measured (whole-network ratio {calibration[0]['ratio']:.3f})")
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
        "resolution": [settings.latency_height, settings.latency_width],
        "predictor_id": predictor.get("id"), "predictor_version": predictor.get("version"),
        "predicted_ms_local": derive["predicted_ms_local"],
        "paths": derive["paths"], "widths": derive["widths"], "channels": derive.get("channels", {}), "spec": derive["spec"],
        "derive_equivalence_max_abs_diff": derive["equivalence_max_abs_diff"],
        "derive_calibration": calibration,
        "http_calls_during_search": search["http_calls_during_search"],
        "latency_share_of_search": search.get("latency_share"),
        "pretrain_miou": pretrain.get("miou"), "search_miou": search.get("miou"), "finetune_miou": finetune.get("miou"),
        "iterations": {"pretrain": pretrain.get("iterations"), "search": search.get("iterations"),
                       "finetune": finetune.get("iterations")},
        "measurement": {k: v for k, v in (meas.get("measurement") or {}).items() if k != "samples_ms"},
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


def write_run_report(state: RunState, settings: PipelineSettings, device_class: str, extra_plots: list[Path] = ()) -> dict:
    report = assemble_report(state, settings, device_class)
    plots = list(extra_plots)
    plots.append(plot_supernet_vs_searched(report, state.dir / "supernet_vs_searched.png"))
    curves = training_curves(state.dir)
    if curves:
        plots.append(plot_training_curves(curves, state.dir / "training_curves.png"))
    report["plots"] = [str(p) for p in plots]
    return write_report(state.dir, report)
