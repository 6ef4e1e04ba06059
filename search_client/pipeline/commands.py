"""``rtseg-search search | finetune | export | run | demo``: the pipeline's subcommands.

Joined with the other commands by ``search_client.cli``. ``search``, ``finetune`` and ``export``
run the pipeline up to that phase (earlier phases first, when not done yet); ``run`` runs all of it
and writes the report. Every command resumes the run folder ``<runs>/<name>/``, computes on
``--device`` (auto: cuda when available) and runs under torchrun as one DDP job
(``torchrun --nproc-per-node N -m search_client.cli run ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_client.pipeline.state import PHASES
from search_client.subcommand import Command, UsageError, parse_set

if TYPE_CHECKING:
    from search_client.report import RunReport


def _size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit():
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x512, got {text!r}")
    return int(h), int(w)


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    from search_client.config import PRESETS

    p.add_argument("--name", default="search", help="run name: the folder <runs>/<name>/ (default search)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="parent of run folders (default runs/)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="training preset (default synthetic-cpu)")
    p.add_argument("--data-root", help="dataset folder")
    p.add_argument("--dataset", choices=["cityscapes", "ade20k", "voc"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any run-config field, e.g. search.latency_weight=0.05 or model.config.stem=32")
    p.add_argument("--pretrain-iters", type=int, help="default: the preset's train.iterations")
    p.add_argument("--search-iters", type=int, help="default: the preset's search.iterations")
    p.add_argument("--finetune-iters", type=int, help="default: the preset's search.finetune_iterations")
    p.add_argument("--target-ms", type=float, help="latency target (default: --target-fraction of the supernet)")
    p.add_argument("--target-fraction", type=float, help="target as a share of the supernet (default 0.5)")
    p.add_argument("--target-position", type=float,
                   help="target at this share (0-1) of the way from the smallest to the largest derivable network, "
                        "measured when the run measures (overrides --target-fraction)")
    p.add_argument("--target-gmacs", type=float,
                   help="GMACs target at --gmacs-size instead of a latency target: the search regularizes and the "
                        "derivation holds the analytic GMACs")
    p.add_argument("--gmacs-size", type=_size, metavar="HxW",
                   help="input size at which GMACs are counted for --target-gmacs (default 512x1024)")
    p.add_argument("--latency-size", type=_size, metavar="HxW",
                   help="input size at which latency is predicted, measured and targeted (default: the "
                        "preset's: 512x1024 for cityscapes-paper, 256x512 for synthetic-cpu)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where every phase computes (default auto: cuda when available); under torchrun "
                        "each process takes its own GPU")
    p.add_argument("--device-class", help="target device class (default: this host, host/<cpu>)")
    p.add_argument("--runtime", help="runtime or runtime key, e.g. onnxruntime/t1/cpu (default onnxruntime)")
    p.add_argument("--campaign", type=int, metavar="N",
                   help="no predictor for the device class and runtime yet: measure N block configs of the "
                        "supernet there (queued before pretraining) and fit one before the search")
    p.add_argument("--server", default=os.environ.get("RTSEG_SERVER", "http://127.0.0.1:8000"),
                   help="profiler service URL (env RTSEG_SERVER)")
    p.add_argument("--token", default=os.environ.get("RTSEG_TOKEN"), help="bearer token (env RTSEG_TOKEN)")
    p.add_argument("--cache-dir", type=Path, help="predictor cache (default ~/.cache/rtseg-farm/predictors)")
    p.add_argument("--no-measure", action="store_true", help="skip the real measurement of the final network")
    p.add_argument("--measure-supernet", action="store_true", default=None,
                   help="also measure the supernet on the device")
    p.add_argument("--tflite", action="store_true", default=None, help="also export TFLite (needs the tflite extra)")
    p.add_argument("--max-steps", type=int, help="stop a training phase after this many steps (resume later)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--restart-from", choices=PHASES, metavar="PHASE",
                   help="redo this phase and every later one (their folders are deleted), e.g. to change "
                        "settings they started with; phases: " + ", ".join(PHASES))


def settings_from_args(args: argparse.Namespace) -> tuple[Any, frozenset[str]]:
    """The run's settings from the flags given (defaults for the rest), and the names of the settings
    the flags gave: on a rerun only those may change; the others keep the run's saved values."""
    from search_client.pipeline.settings import PipelineSettings

    overrides = parse_set(args.set)
    data = overrides.setdefault("data", {})
    if args.data_root:
        data["root"] = args.data_root
    if args.dataset:
        data["kind"] = args.dataset
    if not data:
        overrides.pop("data")
    size = args.latency_size or (None, None)
    gsize = args.gmacs_size or (None, None)
    flags = {
        "preset": args.preset, "overrides": overrides or None, "pretrain_iters": args.pretrain_iters,
        "search_iters": args.search_iters, "finetune_iters": args.finetune_iters, "target_ms": args.target_ms,
        "target_fraction": args.target_fraction,
        "target_position": args.target_position, "target_gmacs": args.target_gmacs,
        "gmacs_height": gsize[0], "gmacs_width": gsize[1], "latency_height": size[0], "latency_width": size[1],
        "device_class": args.device_class, "runtime": args.runtime, "campaign_configs": args.campaign,
        "measure_supernet": args.measure_supernet, "export_tflite": args.tflite,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    settings = PipelineSettings(name=args.name, runs_dir=args.runs, server=args.server, token=args.token,
                                device=args.device,
                                cache_dir=args.cache_dir, measure=not args.no_measure, **given)
    return settings, frozenset(given)


def _run_until(until: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        import torch

        from search_client.pipeline.feasible import InfeasibleTarget
        from search_client.pipeline.runner import run_pipeline
        from search_client.pipeline.training import PhaseInterrupted
        from search_client.remote import RemoteError, ServiceUnavailable
        from search_client.train.ddp import resolve_device

        if args.threads:
            torch.set_num_threads(args.threads)
        try:
            resolve_device(args.device)  # a missing GPU is told before the farm is asked anything
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        try:
            settings, client = _checked_settings(args, until)
            report = run_pipeline(settings, until=until, client=client, say=print, max_steps=args.max_steps)
        except PhaseInterrupted as exc:
            print(f"stopped: {exc}")
            return 0
        except ServiceUnavailable as exc:
            print(f"rtseg-search {args.command}: error: {exc}", file=sys.stderr)
            return 3
        except (RemoteError, InfeasibleTarget) as exc:
            raise UsageError(str(exc)) from exc
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 speaks for the job
            return 0
        _print_outcome(settings, until, report, args.json)
        return outcome_code(report)

    return run


def _checked_settings(args: argparse.Namespace, until: str) -> tuple[Any, Any]:
    """The run's settings (a rerun's changed flags applied, or refused when a started phase pinned
    them), checked against the farm before any training; ``--restart-from`` clears phases last."""
    from search_client.pipeline.campaign import needs_campaign, start_campaign
    from search_client.pipeline.preflight import FarmUnreachable, PreflightError, preflight
    from search_client.pipeline.state import RunState
    from search_client.remote import ProfilerClient, ServiceUnavailable

    settings, given = settings_from_args(args)
    settings = settings.merged_with_saved(restart_from=args.restart_from, given=given)
    client = ProfilerClient(settings.server, settings.token, cache_dir=settings.cache_dir)
    try:
        device_class = _device_class(settings)
        checked = preflight(settings, client, device_class, until)
    except FarmUnreachable as exc:
        raise ServiceUnavailable(str(exc)) from exc
    except PreflightError as exc:
        raise UsageError(str(exc)) from exc
    if checked:
        print(f"[preflight] {'; '.join(checked)}")
    if checked and needs_campaign(settings, client, device_class):
        start_campaign(settings, client, device_class, say=print)
    if args.restart_from:
        RunState(settings.run_dir).restart_from(args.restart_from)
        print(f"[{args.restart_from}] restarting: it and every later phase run again")
    return settings, client


def _device_class(settings: Any) -> str:
    if settings.device_class:
        return settings.device_class
    from android_harness.host import host_device_class

    return host_device_class()


MISSED_TARGET = 4  # exit status of a run whose measured latency misses its target beyond the tolerance


def outcome_code(report: RunReport | None) -> int:
    """Print the verdict as the last line; MISSED_TARGET when the measurement missed the target."""
    from search_client.report import verdict

    if report is None:
        return 0
    print(verdict(report))
    return MISSED_TARGET if report.missed_target else 0


def _print_outcome(settings: Any, until: str, report: RunReport | None, as_json: bool) -> None:
    if report is None:
        print(f"{settings.run_dir}: phases up to {until} done")
        return
    if as_json:
        print(json.dumps(report.model_dump(), default=str))
        return
    print(f"{settings.run_dir / 'report.json'}: target {report.target_ms:.2f} ms, predicted "
          f"{_ms(report.predicted_ms)}, measured {_ms(report.measured_ms)}, {report.gmacs:.3f} GMACs "
          f"(supernet {report.supernet_gmacs:.3f}), mIoU {100 * report.miou:.2f} "
          f"(supernet {100 * report.supernet_miou:.2f})")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true", help="larger campaign and longer training (more faithful)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder (default runs/demo)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")


def run_demo_command(args: argparse.Namespace) -> int:
    from search_client.pipeline.demo import DemoError, run_demo

    try:
        report = run_demo(full=args.full, out=args.out, threads=args.threads)
    except DemoError as exc:
        print(f"rtseg-search demo: error: {exc}", file=sys.stderr)
        return 1
    return outcome_code(report)


COMMANDS: dict[str, Command] = {
    "search": Command("pretrain (if needed) and run the latency-aware search of a run folder",
                      _pipeline_args, _run_until("search")),
    "finetune": Command("derive the compact network of a searched run and fine-tune it with the boosters",
                        _pipeline_args, _run_until("finetune")),
    "export": Command("evaluate and export (ONNX; TFLite with the extra) the compact network of a run",
                      _pipeline_args, _run_until("export")),
    "run": Command("the whole pipeline: pretrain, search, derive, finetune, eval, export, measure, report",
                   _pipeline_args, _run_until("measure")),
    "demo": Command("local farm + campaign + predictor + the whole pipeline on synthetic data (runs/demo)",
                    _demo_args, run_demo_command),
}
