"""``rtseg-search``: the search client's command line.

Subcommands are :class:`~search_client.subcommand.Command` entries: this module defines the data,
training, evaluation and counting commands, ``search_client.pipeline.commands`` the pipeline's
(``search``, ``finetune``, ``export``, ``run``, ``demo``); :func:`all_commands` joins them. Bad
input (a latency target outside what the supernet can derive included) exits with status 2 and one line saying what to fix;
a ``run`` or ``demo`` whose measured latency misses its target beyond the tolerance ends with a
line saying so and exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from search_client.pipeline.commands import COMMANDS as PIPELINE_COMMANDS
from search_client.subcommand import Command, UsageError, parse_set
from shared.version import add_version_flag

log = logging.getLogger("rtseg-search")


# ---- make-synthetic --------------------------------------------------------------------------------
def _synthetic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="dataset folder to write (Cityscapes layout)")
    p.add_argument("--train", type=int, default=40, help="training scenes (default 40)")
    p.add_argument("--val", type=int, default=10, help="validation scenes (default 10)")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)


def run_make_synthetic(args: argparse.Namespace) -> int:
    from search_client.data.synthetic import SyntheticSpec, make_synthetic

    if args.train < 1 or args.val < 0:
        raise UsageError("--train must be >= 1 and --val >= 0")
    if args.height < 32 or args.width < 32:
        raise UsageError(f"--height/--width must be at least 32, got {args.height}x{args.width}")
    spec = SyntheticSpec(args.train, args.val, args.height, args.width, args.seed)
    out = make_synthetic(args.out, spec)
    print(f"wrote {args.train} train + {args.val} val scenes ({args.height}x{args.width}) to {out}")
    return 0


# ---- run configs -----------------------------------------------------------------------------------
def _config_args(p: argparse.ArgumentParser) -> None:
    from search_client.config import PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset run config")
    p.add_argument("--config", type=Path, help="run config file (JSON or YAML) applied on top of the preset")
    p.add_argument("--arch", help="architecture (bisenetv2, supernet, ...)")
    p.add_argument("--data-root", help="dataset folder")
    p.add_argument("--dataset", choices=["cityscapes", "ade20k", "voc"])
    p.add_argument("--iterations", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any field, e.g. train.lr=0.05")


def build_run_config(args: argparse.Namespace) -> Any:
    from search_client.config import build_config, merge_dicts, read_config_file

    over: dict[str, Any] = {}
    preset = args.preset
    if args.config is not None:
        over = read_config_file(args.config)
        preset = over.pop("preset", preset)
    flags = {"arch": args.arch, "data": {"root": args.data_root, "kind": args.dataset},
             "train": {"iterations": args.iterations, "batch_size": args.batch_size}}
    flags = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
             for k, v in flags.items()}
    flags = {k: v for k, v in flags.items() if v not in (None, {})}
    if getattr(args, "name", None):
        flags["name"] = args.name
    return build_config(preset, merge_dicts(merge_dicts(over, flags), parse_set(args.set)))


# ---- pretrain --------------------------------------------------------------------------------------
def _pretrain_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--name", help="run name (default: the config's name)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="parent of run folders (default runs/)")
    p.add_argument("--run-dir", type=Path, help="run folder (default <runs>/<name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto: cuda when available")
    p.add_argument("--max-steps", type=int, help="stop after this many steps of this call (resume later)")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def _resume_config(run_dir: Path) -> Any:
    from search_client.config import load_config

    path = run_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume: {path} not found; {run_dir} is not a run folder")
    return load_config(path)


def run_pretrain(args: argparse.Namespace) -> int:
    import torch

    from search_client.train import cleanup_distributed, init_distributed
    from search_client.train.ddp import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume:
        if args.run_dir is None:
            raise UsageError("--resume needs --run-dir (the run folder to continue)")
        cfg, run_dir = _resume_config(args.run_dir), args.run_dir
    else:
        cfg = build_run_config(args)
        run_dir = args.run_dir or args.runs / cfg.name
        if any((run_dir / "checkpoints").glob("iter_*.pt")):
            raise UsageError(f"{run_dir} already has checkpoints; pass --resume or pick another --run-dir")
    dist = init_distributed(resolve_device(args.device))
    try:
        result = train_run(cfg, run_dir, dist, resume=args.resume, max_steps=args.max_steps)
    finally:
        cleanup_distributed()
    if dist.is_main:
        terms = " ".join(f"{k}={v:.4f}" for k, v in result["terms"].items())
        print(f"{run_dir}: iteration {result['iteration']}/{result['total']} {terms}")
        if result.get("eval"):
            print(f"mIoU {100 * result['eval']['miou']:.2f}")
    return 0


def train_run(cfg: Any, run_dir: Path, dist: Any, resume: bool, max_steps: int | None) -> dict[str, Any]:
    """Build the model and data of ``cfg`` and train into ``run_dir`` (resuming when asked)."""
    from search_client.data import build_dataset, class_names
    from search_client.models import build_from_config
    from search_client.train import Trainer, seed_everything

    seed_everything(cfg.train.seed, cfg.train.deterministic)
    train_set = build_dataset(cfg.data, cfg.data.train_split, train=True)
    val_set = build_dataset(cfg.data, cfg.data.val_split, train=False)
    model = build_from_config(cfg)
    trainer = Trainer(cfg, run_dir, model, train_set, val_set=val_set, class_names=class_names(cfg.data.kind), dist=dist)
    if resume:
        trainer.resume()
    result = trainer.fit(max_steps=max_steps)
    eval_path = run_dir / "eval.json"
    if trainer.iteration >= trainer.total and eval_path.is_file():
        result["eval"] = json.loads(eval_path.read_text())
    return {**result, "total": trainer.total}


# ---- eval ------------------------------------------------------------------------------------------
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, help="run folder (uses model.pt, else the newest checkpoint)")
    p.add_argument("--checkpoint", type=Path, help="a model.pt or checkpoint file instead of --run-dir")
    p.add_argument("--data-root", help="dataset folder (default: the run's)")
    p.add_argument("--split", help="split (default: the run's val split)")
    p.add_argument("--max-images", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto: cuda when available")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _weights_file(args: argparse.Namespace) -> Path:
    from search_client.train.checkpoint import latest_checkpoint

    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise UsageError(f"checkpoint file not found: {args.checkpoint}")
        return args.checkpoint
    if args.run_dir is None:
        raise UsageError("eval needs --run-dir or --checkpoint")
    path = args.run_dir / "model.pt"
    path = path if path.is_file() else latest_checkpoint(args.run_dir)
    if path is None:
        raise UsageError(f"{args.run_dir} has neither model.pt nor checkpoints/iter_*.pt")
    return path


def run_eval(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from search_client.config import RunConfig
    from search_client.data import build_dataset, class_names
    from search_client.eval import evaluate
    from search_client.models import build_from_config
    from search_client.train.checkpoint import load_checkpoint
    from search_client.train.ddp import resolve_device

    device = torch.device(resolve_device(args.device))
    path = _weights_file(args)
    state = load_checkpoint(path)
    cfg = RunConfig.model_validate(state["config"])
    data = cfg.data.model_copy(update={"root": args.data_root}) if args.data_root else cfg.data
    model = build_from_config(cfg)
    try:
        model.load_state_dict(state.get("state_dict") or state["model"])
    except RuntimeError as exc:  # weights written by another version or another architecture
        detail = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UsageError(f"{path} does not fit arch {cfg.arch!r}: {detail}") from exc
    dataset = build_dataset(data, args.split or data.val_split, train=False)
    loader = DataLoader(dataset, batch_size=1, num_workers=data.num_workers)
    result = evaluate(model.to(device), loader, class_names(data.kind), device, args.max_images)
    if args.json:
        print(json.dumps({"weights": str(path), **result.as_dict()}))
    else:
        print(f"{path} on {data.root} ({args.split or data.val_split}, {len(dataset)} images)")
        print(result.table())
    return 0


# ---- count -----------------------------------------------------------------------------------------
def _count_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--num-classes", "--classes", dest="num_classes", type=int, default=19)
    p.add_argument("--spec", help="subnet spec JSON file (for --arch subnet)")
    p.add_argument("--json", action="store_true", help='print {"params_m": float, "gmacs": float}')


def run_count(args: argparse.Namespace) -> int:
    from search_client.count import count_model

    if args.height < 32 or args.width < 32:
        raise UsageError(f"--height/--width must be at least 32, got {args.height}x{args.width}")
    kw = {"spec": args.spec} if args.spec else {}
    counted = count_model(args.arch, args.height, args.width, args.num_classes, **kw)
    figures = {"params_m": float(counted["params_m"]), "gmacs": float(counted["gmacs"])}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"{args.arch} at {args.height}x{args.width}: {figures['params_m']:.2f} M params, "
              f"{figures['gmacs']:.2f} GMACs (inference graph, aux heads excluded)")
    return 0


COMMANDS: dict[str, Command] = {
    "make-synthetic": Command("write procedural street scenes in the Cityscapes layout", _synthetic_args,
                              run_make_synthetic),
    "pretrain": Command("train an architecture on a dataset into a run folder (torchrun for DDP)",
                        _pretrain_args, run_pretrain),
    "eval": Command("single-scale mIoU and per-class IoU of a trained run", _eval_args, run_eval),
    "count": Command("parameters and GMACs of an architecture (inference graph)", _count_args, run_count),
}


def all_commands() -> dict[str, Command]:
    """The commands of this module and the pipeline's."""
    return {**COMMANDS, **PIPELINE_COMMANDS}


def build_parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtseg-search", description="Latency-aware segmentation search client")
    add_version_flag(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in commands.items():
        sp = sub.add_parser(name, help=command.help, description=command.help)
        # also after the subcommand; SUPPRESS keeps the top-level value when it is not repeated here
        sp.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings and errors only")
        command.add_arguments(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    commands = all_commands()
    args = build_parser(commands).parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress lines
    from search_client.config import ConfigError
    from search_client.data import DatasetError

    try:
        return commands[args.command].run(args)
    except (UsageError, ConfigError, DatasetError, FileNotFoundError) as exc:
        print(f"rtseg-search {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad arch names, shapes and the like from the library
        log.debug("value error", exc_info=True)
        print(f"rtseg-search {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rtseg-search {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # ``python -m search_client.cli``, how torchrun starts it
    sys.exit(main())
