"""``phone-agent``: the farm agent, plus ``devices`` and ``measure`` for one-off use.

    phone-agent --server URL --token T [--host-device] [--no-adb] [--name N]
    phone-agent devices [--json]
    phone-agent measure --serial S --model FILE [--benchmark-binary FILE] [--runs N] [--warmup N]
                        [--threads N] [--min-seconds S] --json

Errors exit with status 2 and one line on stderr saying what to fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from pathlib import Path

from android_harness.adb import TOOL_OF_FORMAT, AdbRunner, AdbSettings, discover
from android_harness.adb_io import adb_client, no_stray_server
from android_harness.agent import Agent, AgentConfig
from android_harness.errors import HarnessError
from android_harness.host import HOST_SERIAL, HostRunner, host_device_info
from android_harness.runner import MeasureOptions, model_format
from shared.schemas import JOB_DEFAULTS, DeviceInfo
from shared.version import add_version_flag

# Minimum timed seconds per measurement: phones run at least 1 s (after >= 10 warm-ups and >= 50 timed
# runs); the host CPU has no thermal drift to average over, so it may use a shorter minimum.
HOST_MIN_SECONDS = 0.2
PHONE_MIN_SECONDS = 1.0


class UsageError(Exception):
    """Bad command-line input; the message says what to fix."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _add_adb_options(parser: argparse.ArgumentParser, default: object) -> None:
    """On the main parser and on each subcommand (SUPPRESS there, so a subcommand does not reset
    a value given before it)."""
    flag_default = False if default is None else default
    parser.add_argument("--no-adb", action="store_true", default=flag_default, help="do not look for phones through adb")
    parser.add_argument("--adb-port", type=int, default=default,
                        help="adb server port (default ANDROID_ADB_SERVER_PORT or 5037)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="phone-agent", description=__doc__.split("\n\n")[0])
    add_version_flag(p)
    p.add_argument("--server", help="profiler server URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--token", default=os.environ.get("RTSEG_AGENT_TOKEN"), help="agent bearer token (or RTSEG_AGENT_TOKEN)")
    p.add_argument("--name", help="agent name (default: host name)")
    p.add_argument("--host-device", action="store_true", help="also serve this machine's CPU as a device")
    _add_adb_options(p, None)
    p.add_argument("--tflite-benchmark", type=Path, help="benchmark_model binary for the phones")
    p.add_argument("--ort-perf-test", type=Path, help="onnxruntime_perf_test binary for the phones")
    p.add_argument("--cache-dir", type=Path, default=Path("var/agent-cache"), help="artifact cache folder")
    p.add_argument("--max-jobs", type=_positive_int, help="exit after this many jobs")
    p.add_argument("--shutdown-grace", type=float, default=60.0,
                   help="on SIGTERM, seconds to let jobs in hand finish before their leases are released")
    p.add_argument("--max-outage", type=float, default=3600.0,
                   help="stop after this many seconds without an answer from the server")
    p.add_argument("--parent-pid", type=int, help="stop when the process with this id is no longer our parent "
                                                  "(set by profiler-server --host-device)")
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command")
    d = sub.add_parser("devices", help="list the devices this agent would serve")
    d.add_argument("--json", action="store_true")
    _add_adb_options(d, argparse.SUPPRESS)
    m = sub.add_parser("measure", help="measure one model on one device now")
    m.add_argument("--serial", required=True, help="adb serial, or 'host' for this CPU")
    m.add_argument("--model", required=True, type=Path, help=".onnx or .tflite file")
    m.add_argument("--benchmark-binary", type=Path, help="benchmark_model / onnxruntime_perf_test built for the phone")
    m.add_argument("--runs", type=_positive_int, default=JOB_DEFAULTS.runs)
    m.add_argument("--warmup", type=_non_negative_int, default=JOB_DEFAULTS.warmup)
    m.add_argument("--threads", type=_positive_int, default=1)
    m.add_argument("--min-seconds", type=float, help=f"default {HOST_MIN_SECONDS} on the host, {PHONE_MIN_SECONDS} on phones")
    m.add_argument("--max-seconds", type=float, default=60.0)
    m.add_argument("--delegate", default="cpu", choices=["cpu", "xnnpack", "gpu", "nnapi", "qnn"])
    m.add_argument("--clock", default="wall", choices=["wall", "thread-cpu"],
                   help="host sample clock (thread-cpu: the measuring thread's CPU time, 1 thread only)")
    m.add_argument("--cpu-mask", type=lambda t: int(t, 16), help="taskset mask in hex (default: the big cores)")
    m.add_argument("--json", action="store_true")
    _add_adb_options(m, argparse.SUPPRESS)
    return p


def list_devices(args: argparse.Namespace) -> list[DeviceInfo]:
    devices = [host_device_info()]
    if args.no_adb:
        return devices
    with no_stray_server(adb_client(args.adb_port)) as client:
        try:
            serials = discover(client)
        except HarnessError as exc:  # no adb server/binary: the host is still a device
            print(f"phone-agent: warning: no adb devices listed ({exc}); use --no-adb to skip adb", file=sys.stderr)
            serials = []
        devices.extend(AdbRunner(serial, client).device_info() for serial in serials)
    return devices


def cmd_devices(args: argparse.Namespace) -> int:
    devices = list_devices(args)
    if args.json:
        print(json.dumps([d.model_dump(mode="json") for d in devices], indent=2))
    else:
        for d in devices:
            print(f"{d.serial}\t{d.kind}\t{d.device_class}")
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    if not args.model.is_file():
        raise UsageError(f"--model {args.model}: no such file")
    fmt = model_format(args.model)
    host = args.serial == HOST_SERIAL
    min_seconds = args.min_seconds if args.min_seconds is not None else (HOST_MIN_SECONDS if host else PHONE_MIN_SECONDS)
    options = MeasureOptions(threads=args.threads, warmup=args.warmup, runs=args.runs, min_seconds=min_seconds,
                             max_seconds=args.max_seconds, delegate=args.delegate, clock=args.clock)
    if host:
        info, stats = host_device_info(), HostRunner().measure(args.model, options)
    elif args.no_adb:
        raise UsageError(f"--serial {args.serial} is a phone, reached through adb: drop --no-adb, "
                         f"or measure this machine with --serial {HOST_SERIAL}")
    else:
        with no_stray_server(adb_client(args.adb_port)) as client:
            if args.serial not in discover(client):
                raise UsageError(f"--serial {args.serial}: no such online adb device (see `phone-agent devices`)")
            binaries = {TOOL_OF_FORMAT[fmt]: args.benchmark_binary} if args.benchmark_binary else {}
            runner = AdbRunner(args.serial, client, binaries, AdbSettings(cpu_mask=args.cpu_mask))
            info, stats = runner.device_info(), runner.measure(args.model, options)
    if args.json:
        print(json.dumps({"serial": info.serial, "device_class": info.device_class, **stats.model_dump(mode="json")}))
    else:
        print(f"{info.device_class}: median {stats.median_ms:.4f} ms  mean {stats.mean_ms:.4f}  "
              f"p10 {stats.p10_ms:.4f}  p90 {stats.p90_ms:.4f}  runs {stats.runs}")
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    if not args.server or not args.token:
        raise UsageError("the agent needs --server URL and --token T (or RTSEG_AGENT_TOKEN); "
                         "or use a subcommand: devices, measure")
    binaries = {tool: path for tool, path in (("benchmark_model", args.tflite_benchmark),
                                              ("onnxruntime_perf_test", args.ort_perf_test)) if path}
    config = AgentConfig(server=args.server, token=args.token, name=args.name or socket.gethostname(),
                         host_device=args.host_device, use_adb=not args.no_adb, adb_port=args.adb_port,
                         binaries=binaries, cache_dir=args.cache_dir, max_jobs=args.max_jobs,
                         shutdown_grace_s=args.shutdown_grace, max_outage_s=args.max_outage,
                         parent_pid=args.parent_pid)
    agent = Agent(config)
    agent.install_signal_handlers()
    agent.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    command = {"devices": cmd_devices, "measure": cmd_measure}.get(args.command, cmd_agent)
    try:
        return command(args)
    except (UsageError, HarnessError, ValueError) as exc:
        print(f"phone-agent: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
