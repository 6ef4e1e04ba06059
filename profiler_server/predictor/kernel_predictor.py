"""Kernel-level latency predictors: one per (device class, runtime), covering every kernel kind.

Training data are the measurements of kernel campaigns (``Measurement.kind == "kernel"``): each
one-kernel model's latency. A one-kernel model also pays one inference call's overhead and, on an
x86 host, the NCHWc layout conversions onnxruntime puts around it; a whole model pays the overhead
once and only the conversions its own graph needs (they are ``reorder`` kernels of its
decomposition). Agents that profile (the host runner) measure a leased kernel as it runs inside a
whole model: each sample is the kernel's own node time in onnxruntime's profile, without that run's
conversions and the ``aux_`` helper nodes a one-kernel model carries to put its kernel in a whole
model's layout (e.g. the 1x1 depthwise conv ahead of an NCHWc Upsample), flags ``clock=ort-node``,
``layout_reorders_excluded_ms``, and the run's time outside any node with its node count
(``run_gap_ms``, ``run_nodes``). Such a label is the kernel alone; the call and a per-node dispatch
cost are fitted from the run gaps and added once per model and per node of it. Labels of older
agents (wall clock) are the measurement less the ``overhead`` kernel's, and, when measured with
the conversions, less the predicted ``reorder`` kernels of its own model (fitted first, from
their own one-kernel models); once node-time labels exist only those are used.

Per kernel kind the model is a non-negative linear fit of latency in compute, memory traffic and a
constant (weighted for relative error; it extrapolates sanely), times a random-forest correction
of its log residual on the kernel's shape features (bounded: outside the measured shapes it falls
back to the linear part). The held-out figures per kind (a split by config hash) are the error
bar of a prediction; the served model is refitted on every row. Versions are stored as predictor
versions under the runtime ``kernels:<runtime key>`` with their metrics and peers.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from sklearn.ensemble import RandomForestRegressor
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from profiler_server.db import Artifact, CampaignItem, Database, Measurement, PredictorVersion
from profiler_server.errors import Conflict, NotFound
from profiler_server.predictor import accuracy as M
from profiler_server.predictor import store
from shared.api import runtime_key
from shared.export import sha256_bytes
from shared.kernels import (
    Decomposition,
    KernelConfig,
    decompose,
    kernel_costs,
    kernel_features,
    kernel_graph,
    linear_terms,
)
from shared.schemas import NODE_CLOCK, REORDERS_EXCLUDED_FLAG, RUN_GAP_FLAG, RUN_NODES_FLAG

log = logging.getLogger(__name__)
PREFIX = "kernels:"
MIN_KERNELS = 20
TEST_SHARE = 0.2
LABEL_FLOOR = 0.05  # a label is at least this share of its raw measurement (noise can over-subtract)


def predictor_runtime(runtime_key: str) -> str:
    return PREFIX + runtime_key


def decomposition_level(device_class: str) -> str:
    """``all`` (NCHWc layout included) for the x86 host the server runs on, else ``extended``."""
    return "all" if device_class.startswith("host/") else "extended"


def kernel_campaign_hint(device_class: str, runtime: str) -> str:
    return (f"run a kernel campaign first: POST /v1/campaigns with {{\"device_class\": \"{device_class}\", "
            f"\"runtime\": \"{runtime}\", \"family\": \"kernels\", \"n\": 600}}; its predictor is fitted when it "
            f"completes (or POST /v1/kernel-predictors)")


@dataclass
class KindModel:
    coef: np.ndarray  # over shared.kernels.linear_terms
    forest: RandomForestRegressor | None
    lo: np.ndarray  # feature ranges seen in training (log2 scale)
    hi: np.ndarray
    metrics: dict = field(default_factory=dict)

    def predict(self, cfgs: Sequence[KernelConfig]) -> tuple[np.ndarray, np.ndarray]:
        lin = np.array([linear_terms(c) for c in cfgs]) @ self.coef
        feats = np.array([kernel_features(c) for c in cfgs])[:, :len(self.lo)]  # older versions: fewer features
        if self.forest is not None:
            lin = lin * np.exp(self.forest.predict(feats))
        outside = ((feats[:, :4] < self.lo[:4] - 1e-6) | (feats[:, :4] > self.hi[:4] + 1e-6)).any(1)
        return np.maximum(lin, 1e-6), outside


@dataclass
class KernelPredictor:
    level: str
    overhead_ms: float
    kinds: dict[str, KindModel]
    metrics: dict
    scale: float = 1.0  # network-level calibration (see ``calibrate``)
    # labels are node times (``RunGap`` rows): a whole model also pays this per node it runs
    dispatch_ms: float = 0.0

    def predict_configs(self, cfgs: Sequence[KernelConfig]) -> tuple[list[float | None], list[bool]]:
        """Per config: predicted ms (None for a kind never measured) and the extrapolated flag."""
        ms: list[float | None] = [None] * len(cfgs)
        outside = [False] * len(cfgs)
        by_kind: dict[str, list[int]] = defaultdict(list)
        for i, c in enumerate(cfgs):
            by_kind[c.op].append(i)
        for kind, idx in by_kind.items():
            if kind == "overhead":
                for i in idx:
                    ms[i] = self.overhead_ms
                continue
            model = self.kinds.get(kind)
            if model is None:
                continue
            pred, out = model.predict([cfgs[i] for i in idx])
            for j, i in enumerate(idx):
                ms[i], outside[i] = float(pred[j]) * self.scale, bool(out[j])
        return ms, outside

    def predict(self, decomposition: Decomposition) -> dict:
        cfgs = [k.config for k in decomposition.kernels]
        ms, outside = self.predict_configs(cfgs)
        rows, unsupported = [], list(decomposition.unsupported)
        dispatch = getattr(self, "dispatch_ms", 0.0)  # predictors pickled before it existed: 0
        total, error = self.overhead_ms + dispatch * (len(decomposition.kernels) + len(decomposition.free)), 0.0
        for kernel, pred, out in zip(decomposition.kernels, ms, outside, strict=True):
            cfg = kernel.config
            if pred is None:
                unsupported += [{"node": n, "op_type": t, "reason": f"no measured {cfg.op} kernels on this device"}
                                for n, t in zip(kernel.nodes, kernel.op_types, strict=True)]
                continue
            err_pct = self.kinds[cfg.op].metrics.get("mape")
            total += pred
            error += pred * (err_pct or 0.0) / 100
            rows.append({"nodes": kernel.nodes, "op_types": kernel.op_types, "runtime_op": kernel.runtime_op,
                         "kind": cfg.op, "fn": cfg.fn,
                         "dims": cfg.values, "predicted_ms": pred, "extrapolated": out,
                         "error_pct": err_pct})
        return {"total_ms": total, "overhead_ms": self.overhead_ms, "error_ms": error, "kernels": rows,
                "unsupported": unsupported, "extrapolated": any(r["extrapolated"] for r in rows)}


def _bucket(key: str) -> float:
    return int.from_bytes(hashlib.sha256(f"kernels:{key}".encode()).digest()[:8], "big") / 2**64


def _fit_linear(cfgs: Sequence[KernelConfig], y: np.ndarray) -> np.ndarray:
    a = np.array([linear_terms(c) for c in cfgs], dtype=np.float64)
    scale = a.max(0) + 1e-12
    w = 1.0 / y  # relative error
    coef, _ = nnls((a / scale) * w[:, None], y * w)
    return coef / scale


def _fit_kind(cfgs: list[KernelConfig], y: np.ndarray, seed: int, with_forest: bool = True) -> KindModel:
    coef = _fit_linear(cfgs, y)
    lin = np.maximum(np.array([linear_terms(c) for c in cfgs]) @ coef, 1e-9)
    feats = np.array([kernel_features(c) for c in cfgs])
    forest = None
    if with_forest and len(cfgs) >= 8:
        forest = RandomForestRegressor(n_estimators=60, min_samples_leaf=2, random_state=seed, n_jobs=1)
        forest.fit(feats, np.log(y / lin))
    return KindModel(coef=coef, forest=forest, lo=feats.min(0), hi=feats.max(0))


@lru_cache(maxsize=20_000)
def _companions(cfg: KernelConfig, level: str) -> tuple[KernelConfig, ...]:
    """The other kernels onnxruntime runs in ``cfg``'s one-kernel model (its layout conversions)."""
    if level != "all" or cfg.op in ("reorder", "overhead"):
        return ()
    kernels = decompose(kernel_graph(cfg), level=level).kernels
    main = next((i for i, k in enumerate(kernels) if k.config.op == cfg.op), None)
    return tuple(k.config for i, k in enumerate(kernels) if i != main)


def _labels(data: dict[str, tuple[KernelConfig, float, bool]], overhead: float, reorder: KernelPredictor | None,
            level: str, node_times: bool = False) -> dict[str, float]:
    if node_times:  # the kernel's own node time: nothing else in it
        return {key: ms for key, (_, ms, _) in data.items()}
    out = {}
    for key, (cfg, ms, reorders_excluded) in data.items():
        extra = 0.0
        companions = () if reorders_excluded else _companions(cfg, level)
        if companions and reorder is not None:
            pred, _ = reorder.predict_configs(list(companions))
            extra = sum(p for p in pred if p is not None)
        out[key] = max(ms - overhead - extra, LABEL_FLOOR * ms)
    return out


def _judge(cfgs: list[KernelConfig], y: np.ndarray, keys: list[str], seed: int) -> tuple[dict, dict]:
    """Held-out figures of the model and of its peers (linear only, forest only) on one kind."""
    test = np.array([_bucket(k) < TEST_SHARE for k in keys])
    if test.sum() < 2 or (~test).sum() < 4:
        return {"n": len(keys), "n_test": int(test.sum())}, {}
    train_c = [c for c, t in zip(cfgs, test, strict=True) if not t]
    test_c = [c for c, t in zip(cfgs, test, strict=True) if t]
    model = _fit_kind(train_c, y[~test], seed)
    pred, _ = model.predict(test_c)
    linear, _ = _fit_kind(train_c, y[~test], seed, with_forest=False).predict(test_c)
    feats_tr = np.array([kernel_features(c) for c in train_c])
    forest = RandomForestRegressor(n_estimators=60, min_samples_leaf=2, random_state=seed, n_jobs=1)
    forest.fit(feats_tr, np.log(y[~test]))
    forest_pred = np.exp(forest.predict(np.array([kernel_features(c) for c in test_c])))
    truth = y[test]
    figures = {**M.accuracy_report(pred, truth), "n": len(keys), "n_test": int(test.sum())}
    peers = {name: {"mape": M.mape(p, truth), "within_10": M.within(p, truth, 0.10)}
             for name, p in (("linear_only", linear), ("random_forest_only", forest_pred))}
    return figures, peers


@dataclass(frozen=True)
class RunGap:
    """A node-time measurement's run outside any node: ``gap_ms`` over ``nodes`` nodes."""

    gap_ms: float
    nodes: int


def run_gap(flags: Sequence[str] | None) -> RunGap | None:
    """The run gap a profiling runner put in a measurement's flags (None: a wall-clock label)."""
    values = dict(str(f).split("=", 1) for f in flags or () if "=" in str(f))
    if values.get("clock") != NODE_CLOCK:
        return None
    try:
        return RunGap(float(values[RUN_GAP_FLAG[:-1]]), int(values[RUN_NODES_FLAG[:-1]]))
    except (KeyError, ValueError):
        return None


def fit_dispatch(gaps: Sequence[RunGap], out_elements: Sequence[float]) -> tuple[float, float]:
    """(per call, per node) ms of a run outside its nodes, from one-kernel models: a
    least-absolute-deviation fit (robust to the runs a busy host stretched) of the gap over the node
    count and the size of the model's output. The output term is what a lone kernel pays and a
    whole model's inner kernels do not: its output is a graph output, allocated fresh every run
    (page faults for a large one), where a whole model's intermediate tensors come from the arena
    it reuses. Per node 0 without spread in node counts."""
    n = np.array([g.nodes for g in gaps], dtype=np.float64)
    y = np.array([g.gap_ms for g in gaps], dtype=np.float64)
    if len(set(n.tolist())) < 2:
        return float(np.median(y)), 0.0
    design = np.stack([np.ones_like(n), n, np.asarray(out_elements, dtype=np.float64) / 1e6], 1)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    for _ in range(30):  # iteratively reweighted least squares for the L1 fit
        w = 1 / np.maximum(np.abs(y - design @ coef), 1e-6)
        coef = np.linalg.lstsq(design * w[:, None] ** 0.5, y * w ** 0.5, rcond=None)[0]
    return max(float(coef[0]), 0.0), max(float(coef[1]), 0.0)


def fit_kernel_predictor(configs: Sequence[KernelConfig | dict], latencies_ms: Sequence[float],
                         level: str, seed: int = 0, reorders_excluded: Sequence[bool] | None = None,
                         run_gaps: Sequence[RunGap | None] | None = None) -> KernelPredictor:
    """Fit every kernel kind that has measurements. ``reorders_excluded`` says, per measurement,
    whether its layout conversions were already left out (default: none); ``run_gaps`` marks the
    measurements that are a kernel's own node time (a profiling runner's) with their run's time
    outside any node. When any measurement is a node time only those are used (wall-clock labels
    of older agents carry a call and conversions that node times leave out), and a whole model's
    prediction adds the fitted call and per-node costs. Raises ValueError when there are too few."""
    excluded = list(reorders_excluded) if reorders_excluded is not None else [False] * len(configs)
    gaps = list(run_gaps) if run_gaps is not None else [None] * len(configs)
    node_times = any(g is not None for g in gaps)
    grouped: dict[str, tuple[KernelConfig, float, bool]] = {}
    measured_gaps: list[tuple[RunGap, float]] = []  # with the one-kernel model's output elements
    for raw, ms, ex, gap in zip(configs, latencies_ms, excluded, gaps, strict=True):
        if node_times and gap is None:
            continue
        cfg = raw if isinstance(raw, KernelConfig) else KernelConfig.model_validate(raw)
        if gap is not None:
            measured_gaps.append((gap, kernel_costs(cfg)[2]))
        key = cfg.key()
        if key not in grouped or ms < grouped[key][1]:  # least disturbed session (as the block fit)
            grouped[key] = (cfg, float(ms), bool(ex))
    if len(grouped) < MIN_KERNELS:
        raise ValueError(f"{len(grouped)} distinct measured kernels; need at least {MIN_KERNELS}")
    dispatch = 0.0
    if node_times:
        overhead, dispatch = fit_dispatch([g for g, _ in measured_gaps], [e for _, e in measured_gaps])
    else:
        overheads = [ms for cfg, ms, _ in grouped.values() if cfg.op == "overhead"]
        overhead = float(min(overheads)) if overheads else 0.0
    by_kind: dict[str, dict[str, tuple[KernelConfig, float, bool]]] = defaultdict(dict)
    for key, row in grouped.items():
        if row[0].op != "overhead":
            by_kind[row[0].op][key] = row
    kinds: dict[str, KindModel] = {}
    metrics: dict = {"level": level, "overhead_ms": overhead, "dispatch_ms": dispatch, "node_times": node_times,
                     "kinds": {}, "peers": {}, "n_kernels": len(grouped),
                     "overhead_measured": node_times or any(c.op == "overhead" for c, _, _ in grouped.values()),
                     "reorders_excluded": sum(row[2] for row in grouped.values())}
    reorder: KernelPredictor | None = None
    order = sorted(by_kind, key=lambda k: (k != "reorder", k))  # conversions first: the others subtract them
    for kind in order:
        labels = _labels(by_kind[kind], overhead, reorder, level, node_times)
        keys = sorted(labels)
        cfgs = [by_kind[kind][k][0] for k in keys]
        y = np.array([labels[k] for k in keys])
        figures, peers = _judge(cfgs, y, keys, seed)
        model = _fit_kind(cfgs, y, seed)
        model.metrics = figures
        kinds[kind] = model
        metrics["kinds"][kind] = figures
        metrics["peers"][kind] = peers
        if kind == "reorder":
            reorder = KernelPredictor(level=level, overhead_ms=0.0, kinds={"reorder": model}, metrics={})
    judged = [m for m in metrics["kinds"].values() if "mape" in m]
    if judged:
        weights = np.array([m["n_test"] for m in judged], dtype=np.float64)
        metrics["mape"] = float(np.average([m["mape"] for m in judged], weights=weights))
        metrics["within_10"] = float(np.average([m["within_10"] for m in judged], weights=weights))
    return KernelPredictor(level=level, overhead_ms=overhead, kinds=kinds, metrics=metrics, dispatch_ms=dispatch)


MIN_CALIBRATION = 5


def calibrate(predictor: KernelPredictor, models: Sequence[bytes], measured_ms: Sequence[float]) -> dict:
    """Network-level correction: whole models measured on the device (the farm's own block
    measurements, never a model the user asks about) against the sum of their kernels; the
    median ratio scales every kernel. Kernels measured alone run with cold neighbours and, on an
    x86 host, with layout conversions that are only estimated; a whole graph does neither.
    Returns the calibration figures (also stored in the predictor's metrics)."""
    predictor.scale = 1.0
    pairs = []
    for data, ms in zip(models, measured_ms, strict=True):
        try:
            answer = predictor.predict(decompose(data, level=predictor.level))
        except ValueError:  # DecompositionError: a model the decomposition cannot read is skipped
            continue
        if answer["unsupported"]:
            continue
        kernels = answer["total_ms"] - predictor.overhead_ms
        if kernels > 0 and ms > predictor.overhead_ms:
            pairs.append((kernels, ms))
    info: dict = {"n": len(pairs), "scale": 1.0}
    if len(pairs) >= MIN_CALIBRATION:
        ratios = np.array([(ms - predictor.overhead_ms) / k for k, ms in pairs])
        before = [predictor.overhead_ms + k for k, _ in pairs]
        predictor.scale = float(np.median(ratios))
        after = [predictor.overhead_ms + k * predictor.scale for k, _ in pairs]
        truth = [ms for _, ms in pairs]
        info.update(scale=predictor.scale, mape_before=M.mape(before, truth), mape_after=M.mape(after, truth))
    predictor.metrics["calibration"] = info
    return info


# --- storage and serving ------------------------------------------------------------------------

def training_rows(session: Session, device_class: str, runtime: str, statistic: str = "p10_ms"
                  ) -> tuple[list[dict], list[float], list[bool], list[RunGap | None]]:
    """Kernel configs, their latency, whether each was measured without its layout conversions and
    (node-time measurements) its run gap."""
    rows = session.execute(
        select(Measurement.config, getattr(Measurement, statistic), Measurement.flags)
        .where(Measurement.device_class == device_class, Measurement.runtime == runtime)
        .where(Measurement.kind == "kernel", Measurement.config.is_not(None), Measurement.unstable.is_(False))
        .order_by(Measurement.id)
    ).all()
    excluded = [any(str(f).startswith(REORDERS_EXCLUDED_FLAG) for f in (r[2] or ())) for r in rows]
    return [r[0] for r in rows], [float(r[1]) for r in rows], excluded, [run_gap(r[2]) for r in rows]


_cache: dict[int, KernelPredictor] = {}
_cache_lock = threading.Lock()


MAX_CALIBRATION_MODELS = 60


def _calibration_models(db: Database, root: Path, device_class: str, runtime: str, statistic: str
                        ) -> tuple[list[bytes], list[float]]:
    """The latest measured blocks of (device class, runtime): their artifact bytes and latency."""
    with db.transaction() as session:
        rows = session.execute(
            select(Measurement.artifact_sha256, func.min(getattr(Measurement, statistic)))
            .join(Artifact, Artifact.sha256 == Measurement.artifact_sha256)
            .where(Measurement.device_class == device_class, Measurement.runtime == runtime)
            .where(Measurement.kind.not_in(("kernel", "network")), Artifact.format == "onnx")
            .group_by(Measurement.artifact_sha256).order_by(func.max(Measurement.id).desc())
            .limit(MAX_CALIBRATION_MODELS)
        ).all()
    models, latencies = [], []
    for sha, ms in rows:
        path = root / sha[:2] / sha
        if path.is_file():
            models.append(path.read_bytes())
            latencies.append(float(ms))
    return models, latencies


def fit_and_store(db: Database, device_class: str, runtime: str, statistic: str = "p10_ms",
                  artifacts_root: Path | None = None) -> PredictorVersion:
    """Fit a new version from every kernel measurement of (device class, runtime) and store it;
    calibrated on the measured blocks of the same pair when ``artifacts_root`` holds them."""
    key = runtime_key(runtime)  # BadRuntime: answered 400
    with db.transaction() as session:
        configs, latencies, excluded, gaps = training_rows(session, device_class, key, statistic)
    if len({str(c) for c in configs}) < MIN_KERNELS:
        raise Conflict(f"{len(configs)} kernel measurements on {device_class!r} with {key!r}; "
                       f"{kernel_campaign_hint(device_class, key)}")
    predictor = fit_kernel_predictor(configs, latencies, decomposition_level(device_class),
                                     reorders_excluded=excluded, run_gaps=gaps)
    predictor.metrics["statistic"] = statistic
    if artifacts_root is not None:
        calibrate(predictor, *_calibration_models(db, artifacts_root, device_class, key, statistic))
    blob = pickle.dumps(predictor)
    with db.transaction() as session:
        row = store.new_version(session, device_class, predictor_runtime(key))
        row.blob, row.blob_sha256 = blob, sha256_bytes(blob)
        row.metrics = predictor.metrics
        row.feature_ranges = {k: {"min": m.lo.tolist(), "max": m.hi.tolist()} for k, m in predictor.kinds.items()}
        row.n_train = predictor.metrics["n_kernels"]
        row.n_test = sum(m.get("n_test", 0) for m in predictor.metrics["kinds"].values())
        row.state = "ready"
        session.flush()
        session.expunge(row)
    log.info("kernel predictor %s v%d for (%s, %s): MAPE %s", row.id, row.version, device_class, key,
             predictor.metrics.get("mape"))
    return row


def latest(db: Database, device_class: str, runtime: str) -> tuple[PredictorVersion, KernelPredictor]:
    """The latest ready kernel predictor; NotFound that says which campaign to run."""
    key = runtime_key(runtime)  # BadRuntime: answered 400
    with db.transaction() as session:
        row = store.latest_ready(session, device_class, predictor_runtime(key))
        if row is None:
            raise NotFound(f"no kernel predictor for device class {device_class!r} with {key!r}; "
                           f"{kernel_campaign_hint(device_class, key)}")
        session.expunge(row)
    with _cache_lock:
        hit = _cache.get(row.id)
    if hit is None:
        hit = pickle.loads(row.blob)  # written by fit_and_store of this server, never by a client
        with _cache_lock:
            if len(_cache) > 32:
                _cache.clear()
            _cache[row.id] = hit
    return row, hit


def campaign_has_kernels(db: Database, campaign_id: int) -> bool:
    """Whether a campaign measured kernel configs (then its completion refits the kernel predictor)."""
    with db.transaction() as session:
        return session.scalar(
            select(Artifact.sha256).join(CampaignItem, CampaignItem.artifact_sha256 == Artifact.sha256)
            .where(CampaignItem.campaign_id == campaign_id, Artifact.kind == "kernel").limit(1)) is not None
