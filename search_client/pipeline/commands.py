"""``rtseg-search search | finetune | export | run | demo``: the pipeline's subcommands.

Picked up by ``search_client.cli`` (``EXTENSION_MODULES``). ``search``, ``finetune`` and ``export``
run the pipeline up to that phase (earlier phases first, when not done yet); ``run`` runs all of it
and writes the report. Every command resumes the run folder ``<runs>/<name>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from search_client.cli import Command, UsageError, _parse_set


def _size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit():
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x512, got {text!r}")
    return int(h), int(w)


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    from search_client.config import PRESETS

    p.add_argument("--name", default="search", help="run name: the folder <runs>/<name>/ (default search)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="parent of run folders (default runs/)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="synthetic-cpu", help="training preset")
    p.add_argument("--data-root", help="dataset folder")
    p.add_argument("--dataset", choices=["cityscapes", "ade20k", "voc"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any run-config field, e.g. search.latency_weight=0.05 or model.config.stem=32")
    p.add_argument("--pretrain-iters", type=int, help="default: the preset's train.iterations")
    p.add_argument("--search-iters", type=int, help="default: the preset's search.iterations")
    p.add_argument("--finetune-iters", type=int, help="default: the preset's search.finetune_iterations")
    p.add_argument("--target-ms", type=float, help="latency target (default: --target-fraction of the supernet)")
    p.add_argument("--target-fraction", type=float, default=0.5, help="target as a share of the supernet (0.5)")
    p.add_argument("--target-gmacs", type=float,
                   help="GMACs target at --gmacs-size instead of a latency target: the search regularizes and the "
                        "derivation holds the analytic GMACs")
    p.add_argument("--gmacs-size", type=_size, default=(512, 1024), metavar="HxW",
                   help="input size at which GMACs are counted for --target-gmacs (default 512x1024)")
    p.add_argument("--latency-size", type=_size, default=(256, 512), metavar="HxW",
                   help="input size at which latency is predicted and measured (default 256x512)")
    p.add_argument("--device-class", help="target device class (default: this host, host/<cpu>)")
    p.add_argument("--runtime", default="onnxruntime", help="runtime or runtime key, e.g. onnxruntime/t1/cpu")
    p.add_argument("--server", default=os.environ.get("RTSEG_SERVER", "http://127.0.0.1:8000"),
                   help="profiler service URL (env RTSEG_SERVER)")
    p.add_argument("--token", default=os.environ.get("RTSEG_TOKEN"), help="bearer token (env RTSEG_TOKEN)")
    p.add_argument("--cache-dir", type=Path, help="predictor cache (default ~/.cache/rtseg-farm/predictors)")
    p.add_argument("--no-measure", action="store_true", help="skip the real measurement of the final network")
    p.add_argument("--measure-supernet", action="store_true", help="also measure the supernet on the device")
    p.add_argument("--tflite", action="store_true", help="also export TFLite (needs the tflite extra)")
    p.add_argument("--max-steps", type=int, help="stop a training phase after this many steps (resume later)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def settings_from_args(args: argparse.Namespace) -> Any:
    from search_client.pipeline.settings import PipelineSettings

    overrides = _parse_set(args.set)
    data = overrides.setdefault("data", {})
    if args.data_root:
        data["root"] = args.data_root
    if args.dataset:
        data["kind"] = args.dataset
    if not data:
        overrides.pop("data")
    return PipelineSettings(
        name=args.name, runs_dir=args.runs, preset=args.preset, overrides=overrides,
        pretrain_iters=args.pretrain_iters, search_iters=args.search_iters, finetune_iters=args.finetune_iters,
        target_ms=args.target_ms, target_fraction=args.target_fraction, target_gmacs=args.target_gmacs,
        gmacs_height=args.gmacs_size[0], gmacs_width=args.gmacs_size[1],
        latency_height=args.latency_size[0], latency_width=args.latency_size[1],
        device_class=args.device_class, runtime=args.runtime, server=args.server, token=args.token,
        cache_dir=args.cache_dir, measure=not args.no_measure, measure_supernet=args.measure_supernet,
        export_tflite=args.tflite,
    )


def _run_until(until: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        import torch

        from search_client.pipeline.runner import run_pipeline
        from search_client.pipeline.training import PhaseInterrupted
        from search_client.remote import RemoteError

        if args.threads:
            torch.set_num_threads(args.threads)
        settings = settings_from_args(args)
        try:
            report = run_pipeline(settings, until=until, say=print, max_steps=args.max_steps)
        except PhaseInterrupted as exc:
            print(f"stopped: {exc}")
            return 0
        except RemoteError as exc:
            raise UsageError(str(exc)) from exc
        _print_outcome(settings, until, report, args.json)
        return 0

    return run


def _print_outcome(settings: Any, until: str, report: dict | None, as_json: bool) -> None:
    if report is None:
        print(f"{settings.run_dir}: phases up to {until} done")
        return
    if as_json:
        print(json.dumps(report, default=str))
        return
    print(f"{settings.run_dir / 'report.json'}: target {report['target_ms']:.2f} ms, predicted "
          f"{report['predicted_ms']:.2f} ms, measured {_ms(report['measured_ms'])}, {report['gmacs']:.3f} GMACs "
          f"(supernet {report['supernet_gmacs']:.3f}), mIoU {100 * report['miou']:.2f} "
          f"(supernet {100 * report['supernet_miou']:.2f})")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true", help="larger campaign and longer training (more faithful)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder (default runs/demo)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")


def run_demo_command(args: argparse.Namespace) -> int:
    from search_client.demo import DemoError, run_demo

    try:
        run_demo(full=args.full, out=args.out, threads=args.threads)
    except DemoError as exc:
        print(f"rtseg-search demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


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
