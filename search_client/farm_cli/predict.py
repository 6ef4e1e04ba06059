"""``rtseg-farm predict`` and ``rtseg-farm measure``: latency of your own ONNX model on a device class.

``predict`` asks the farm's kernel predictor (no device time); ``measure`` runs the model on a
device of the class through a measurement job, and prints the prediction beside the measurement.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from search_client.farm_cli import UsageError
from search_client.remote import ProfilerClient, RemoteError
from shared.api import OnnxPrediction
from shared.kernels import parse_input_shape

MAX_ROWS_DEFAULT = 40


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="predicted latency of an ONNX model, kernel by kernel")
    _common(p)
    p.add_argument("--all", action="store_true", help="list every kernel (default: the costliest 40)")
    p.set_defaults(func=run_predict)
    m = subparsers.add_parser("measure", help="measure an ONNX model on the farm; prints predicted beside measured")
    _common(m)
    m.add_argument("--runs", type=int, default=50, help="timed runs (default %(default)s)")
    m.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the measurement")
    m.add_argument("--repeat", action="store_true", help="measure again even if this model was measured before")
    m.set_defaults(func=run_measure)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="the .onnx file")
    p.add_argument("--device-class", required=True, help="e.g. host/amd-epyc or SM-G991B/lahaina")
    p.add_argument("--runtime", default="onnxruntime", help="runtime key (default %(default)s)")
    p.add_argument("--input-shape", help="first input's shape when it is dynamic, e.g. 1x3x512x1024")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON document")


def _read_model(args: argparse.Namespace) -> bytes:
    path: Path = args.model
    if not path.is_file():
        raise UsageError(f"{path} is not a file: give the path of an .onnx model")
    if args.input_shape:
        try:
            parse_input_shape(args.input_shape)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return path.read_bytes()


def _dims(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


def kernel_table(answer: OnnxPrediction, limit: int | None = MAX_ROWS_DEFAULT) -> str:
    """The readable per-kernel table (costliest first) with totals and unsupported ops."""
    rows = sorted(answer.kernels, key=lambda r: -(r.predicted_ms or 0.0))
    shown = rows if limit is None else rows[:limit]
    name_w = min(48, max([len("+".join(r.nodes)) for r in shown] + [4]))
    lines = [f"{'ms':>9}  {'share':>6}  {'kind':<11} {'fn':<18} {'node':<{name_w}}  shape"]
    total = answer.total_ms or 1.0
    for r in shown:
        node = "+".join(r.nodes)
        node = node if len(node) <= name_w else "…" + node[-(name_w - 1):]
        flag = "  (extrapolated)" if r.extrapolated else ""
        lines.append(f"{r.predicted_ms:9.3f}  {100 * r.predicted_ms / total:5.1f}%  {r.kind:<11} "
                     f"{r.fn:<18} {node:<{name_w}}  {_dims(r.dims)}{flag}")
    if len(rows) > len(shown):
        rest = sum(r.predicted_ms for r in rows[len(shown):])
        lines.append(f"{rest:9.3f}  {100 * rest / total:5.1f}%  ... {len(rows) - len(shown)} more kernels (--all lists them)")
    lines.append(f"{answer.overhead_ms:9.3f}  {100 * answer.overhead_ms / total:5.1f}%  call overhead")
    lines.append(f"total {answer.total_ms:.3f} ms ± {answer.error_ms:.3f} ms (held-out error per kernel kind) "
                 f"over {len(rows)} kernels on {answer.device_class} / {answer.runtime} "
                 f"(kernel predictor v{answer.predictor.version})")
    n_extra = sum(r.extrapolated for r in rows)
    if n_extra:
        lines.append(f"{n_extra} kernels lie outside the measured shapes (extrapolated)")
    if answer.unsupported:
        ops = sorted({u["op_type"] for u in answer.unsupported})
        lines.append(f"NOT included: {len(answer.unsupported)} nodes no kernel kind covers ({', '.join(ops)})")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace, client: ProfilerClient) -> int:
    data = _read_model(args)
    answer = client.predict_onnx(data, args.device_class, args.runtime, args.input_shape, name=args.model.stem)
    if args.json:
        print(answer.model_dump_json(indent=2))
    else:
        print(kernel_table(answer, None if args.all else MAX_ROWS_DEFAULT))
    return 0


def run_measure(args: argparse.Namespace, client: ProfilerClient) -> int:
    data = _read_model(args)
    try:
        predicted = client.predict_onnx(data, args.device_class, args.runtime, args.input_shape, name=args.model.stem)
    except RemoteError as exc:  # measuring needs no predictor: say why there is no prediction
        predicted, why = None, str(exc)
    job = client.upload_network(data, args.device_class, args.runtime, args.model.stem, repeat=args.repeat)
    measured = client.wait_job(job.job_id, timeout=args.timeout)
    out = {"model": str(args.model), "device_class": args.device_class, "runtime": args.runtime,
           "job_id": job.job_id, "measured": measured.model_dump(include={"p10_ms", "median_ms", "mean_ms", "p90_ms", "runs"}),
           "predicted_ms": predicted.total_ms if predicted else None,
           "predicted_error_ms": predicted.error_ms if predicted else None}
    if predicted:
        out["error_pct"] = 100 * (predicted.total_ms - measured.p10_ms) / measured.p10_ms
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"measured  p10 {measured.p10_ms:.3f} ms  median {measured.median_ms:.3f} ms  "
          f"({measured.runs} runs, job {job.job_id})")
    if predicted:
        print(f"predicted     {predicted.total_ms:.3f} ms ± {predicted.error_ms:.3f} ms  "
              f"({out['error_pct']:+.1f} % against the measured p10)")
    else:
        print(f"predicted     - ({why})")
    return 0
