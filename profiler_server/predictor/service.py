"""Training and serving of predictors for one database.

Fits run in a single worker thread (never on the event loop); predictions use the latest ready
version of a (device class, runtime), kept in memory and replaced when a newer version is stored.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from profiler_server.db import Database, PredictorVersion
from profiler_server.errors import Conflict, NotFound, Unprocessable
from profiler_server.predictor import store
from profiler_server.predictor.adapt import AdaptSettings, adapting
from profiler_server.predictor.columnar import DecodedRequest, block_columns
from profiler_server.predictor.encode import encode_columns, encode_many
from profiler_server.predictor.fit import (
    FitStopped,
    NotEnoughData,
    TrainSettings,
    fit_predictor,
    predict_ms,
    range_features,
)
from profiler_server.predictor.network_service import (
    NetworkCorrections,
    fit_on_stored_networks,
    stored_correction,
)
from shared.api import BasePredictor
from shared.config import KINDS, AnyBlock
from shared.encoding import N_FEATURES
from shared.export import sha256_bytes
from shared.network_correction import PLAIN_SUM, NetworkCorrection
from shared.predictor import LatencyMLP, PredictorFormatError, dump_predictor, load_predictor
from shared.schemas import BadRuntime, PredictorRef, PredictRequest, PredictResponse, runtime_key

log = logging.getLogger(__name__)
MIN_CONFIGS = 20
LATEST_TTL_S = 5.0  # how long "the latest version is N" is trusted before asking the database again
MAX_MS = 1e12
RANGE_SLACK = 1e-4  # features are log2(1 + x) floats; equal values must not count as outside
MEMO_BLOCKS = 200_000  # per loaded version: distinct block configs whose answer is remembered
MEMO_ANSWERS = 20_000  # per loaded version: small request bodies (at most 2 KB each) and their answers


@dataclass
class Loaded:
    """One predictor version ready to answer: the module and its per-kind feature bounds."""

    id: int
    version: int
    model: LatencyMLP
    lo: torch.Tensor  # (len(KINDS), range features); +inf rows for kinds never trained on
    hi: torch.Tensor
    # config -> (ms, outside). A version never changes, and a search asks for the same blocks again
    # and again, so each distinct config goes through the network once (dict ops are GIL-atomic).
    memo: dict[tuple, tuple[float, bool]] = field(default_factory=dict, repr=False)
    # small request body -> its JSON answer from this version (see routes/predictors.py)
    answers: dict[bytes, str] = field(default_factory=dict, repr=False)
    # the memo of decoded large requests: a block struct (columnar.py) -> its row in ``known_ms``
    # and ``known_outside``; a struct seen before was validated then, so a hit needs no checks
    known_rows: dict[Any, int] = field(default_factory=dict, repr=False)
    known_ms: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    known_outside: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    known_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # the network-level correction of this version (refitted in place by NetworkCorrections)
    correction: NetworkCorrection = field(default_factory=lambda: PLAIN_SUM, repr=False)

    @classmethod
    def from_row(cls, row: PredictorVersion) -> Loaded:
        model = load_predictor(row.blob).model
        width = N_FEATURES + 1  # range_features: the encoded ones and the joint one
        lo = torch.full((len(KINDS), width), float("inf"))
        hi = torch.full((len(KINDS), width), float("-inf"))
        for kind, r in (row.feature_ranges or {}).items():
            unchecked = [float("inf")] * (width - len(r["min"]))  # versions fitted before the joint feature
            lo[KINDS.index(kind)] = torch.tensor(r["min"] + [-x for x in unchecked]) - RANGE_SLACK
            hi[KINDS.index(kind)] = torch.tensor(r["max"] + unchecked) + RANGE_SLACK
        return cls(id=row.id, version=row.version, model=model, lo=lo, hi=hi,
                   correction=stored_correction(row.metrics))

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> tuple[list[float], list[bool]]:
        """(N, F) features -> per-block ms and whether each lies outside the trained ranges."""
        # absurd blocks far outside training can overflow exp(); JSON has no inf (they are flagged)
        ms = torch.nan_to_num(self.model(x), nan=MAX_MS, posinf=MAX_MS).clamp(max=MAX_MS)
        kind = x[:, : len(KINDS)].argmax(1)
        checked = range_features(x)
        outside = ((checked < self.lo[kind]) | (checked > self.hi[kind])).any(1)
        return ms.double().tolist(), outside.tolist()

    def remember_answer(self, body: bytes, answer: str) -> None:
        if len(self.answers) >= MEMO_ANSWERS:
            self.answers.clear()
        self.answers[body] = answer

    def predict_blocks(self, blocks: Sequence[AnyBlock]) -> tuple[list[float], list[bool]]:
        """Per-block ms and extrapolation flags; configs not seen before are computed in one batch."""
        memo = self.memo
        keys = [memo_key(b) for b in blocks]
        known = [memo.get(k) for k in keys]
        missing = list(dict.fromkeys((k, b) for k, b, hit in zip(keys, blocks, known, strict=True) if hit is None))
        if missing:
            ms, outside = self.predict(encode_many([b for _, b in missing]))
            fresh = dict(zip((k for k, _ in missing), zip(ms, outside, strict=True), strict=True))
            if len(memo) + len(fresh) > MEMO_BLOCKS:
                memo.clear()
            memo.update(fresh)
            known = [hit if hit is not None else fresh[k] for k, hit in zip(keys, known, strict=True)]
        return [k[0] for k in known], [k[1] for k in known]

    def predict_decoded(self, blocks: list) -> tuple[list[float], list[bool]]:
        """Per-block ms and extrapolation flags of decoded blocks (``columnar.decode_body``); the
        ones not seen before are validated as columns and go through the network in one batch.
        Raises ``NotValidAsSent`` when one of those fails its model's validators."""
        with self.known_lock:  # one batch at a time: none clears the memo while another reads it
            if len(self.known_rows) + len(blocks) > MEMO_BLOCKS:
                self.known_rows.clear()
            rows = list(map(self.known_rows.get, blocks))
            if None in rows:
                self._remember(list(dict.fromkeys(b for b, r in zip(blocks, rows, strict=True) if r is None)))
                rows = list(map(self.known_rows.__getitem__, blocks))
            at = np.fromiter(rows, dtype=np.int64, count=len(rows))
            return self.known_ms[at].tolist(), self.known_outside[at].tolist()

    def _remember(self, fresh: list) -> None:
        """Predict blocks never seen (validated as columns, one forward pass) and remember them."""
        groups = block_columns(fresh)
        x = np.zeros((len(fresh), N_FEATURES), dtype=np.float32)
        for g in groups:
            x[g.index] = encode_columns(g.kind, g.names, g.values)
        ms, outside = self.predict(torch.from_numpy(x))
        start = len(self.known_rows)
        self._make_room(start + len(fresh))
        self.known_ms[start : start + len(fresh)] = ms
        self.known_outside[start : start + len(fresh)] = outside
        self.known_rows.update(zip(fresh, range(start, start + len(fresh)), strict=True))

    def _make_room(self, rows: int) -> None:
        if rows > len(self.known_ms):  # doubling, so that a version asked little holds little
            size = min(MEMO_BLOCKS, max(rows, 2 * len(self.known_ms)))
            self.known_ms = np.concatenate([self.known_ms, np.zeros(size - len(self.known_ms))])
            self.known_outside = np.concatenate([self.known_outside, np.zeros(size - len(self.known_outside), bool)])


def adaptable_base(session: Session, base: BasePredictor, statistic: str, kinds: set[str]) -> dict:
    """The ready version ``base`` names, as stored in an adapted version's metrics; NotFound when
    there is none, Unprocessable when its weights cannot start this fit (another feature encoding
    or file format, another per-config statistic, none of the block ``kinds`` measured here)."""
    runtime = runtime_key(base.runtime)
    row = (store.latest_ready(session, base.device_class, runtime) if base.version is None
           else store.pinned(session, base.device_class, runtime, base.version))
    name = f"({base.device_class!r}, {runtime!r}{'' if base.version is None else f' v{base.version}'})"
    if row is None:
        raise NotFound(f"base predictor {name} does not exist: no ready version there; "
                       "GET /v1/predictors lists the predictors")
    if row.state != "ready" or row.blob is None:
        raise Unprocessable(f"base predictor {name} is {row.state}, it has no weights to start from; "
                            "name a ready version")
    try:
        load_predictor(row.blob)
    except PredictorFormatError as exc:
        why = ("was fitted with another feature encoding" if "feature encoding" in str(exc)
               else f"has weights this server cannot read ({exc})")
        raise Unprocessable(f"base predictor {name} {why} (another server version): fit it again here "
                            "and name that version, or fit from scratch") from exc
    base_kinds = set(row.feature_ranges or {})
    if kinds and not kinds & base_kinds:
        raise Unprocessable(f"base predictor {name} was fitted on blocks of another space (kinds "
                            f"{', '.join(sorted(base_kinds))}; measured here: {', '.join(sorted(kinds))}): "
                            "name a base fitted on these kinds or fit from scratch")
    base_statistic = (row.metrics or {}).get("statistic", "median_ms")
    if base_statistic != statistic:
        raise Unprocessable(f"base predictor {name} learned {base_statistic}, this fit learns {statistic}: "
                            f"pass \"statistic\": \"{base_statistic}\" or name a base that learned {statistic}")
    return {"id": row.id, "device_class": row.device_class, "runtime": row.runtime, "version": row.version}


def widest_ranges(base: dict, new: dict) -> dict:
    """Per kind, the union of the base's and the new measurements' feature ranges (an adapted
    predictor learned the shape of its answer on both); ``n``: the new measurements."""
    out = {kind: dict(r) for kind, r in new.items()}
    for kind, r in base.items():
        if kind not in out:
            out[kind] = {"min": list(r["min"]), "max": list(r["max"]), "n": 0}
        elif len(r["min"]) == len(out[kind]["min"]):
            out[kind]["min"] = [min(a, b) for a, b in zip(r["min"], out[kind]["min"], strict=True)]
            out[kind]["max"] = [max(a, b) for a, b in zip(r["max"], out[kind]["max"], strict=True)]
    return out


def _readable(blob: bytes | None) -> bool:
    try:
        load_predictor(blob or b"")
    except PredictorFormatError:
        return False
    return True


def memo_key(block: AnyBlock) -> tuple:
    """A block's field values in declaration order (its ``kind`` among them): equal exactly when
    the configs are, and hashed and compared in C, where the frozen model's own ``__hash__`` and
    ``__eq__`` run in Python (most of a remembered 10,000-block batch's time)."""
    return tuple(block.__dict__.values())


class PredictorService:
    def __init__(self, db: Database, settings: TrainSettings = TrainSettings()) -> None:
        self.db = db
        self.settings = settings
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], tuple[float, Loaded]] = {}
        self._by_id: dict[int, Loaded] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predictor-fit")
        self._stop = threading.Event()
        self.futures: dict[int, Future] = {}
        self.networks = NetworkCorrections(db)
        self.adapt_settings = AdaptSettings()

    # --- training ------------------------------------------------------------------------

    def start_fit(
        self,
        device_class: str,
        runtime: str,
        session: Session | None = None,
        statistic: str | None = None,
        team_id: int | None = None,
        base: BasePredictor | None = None,
    ) -> PredictorVersion:
        """Queue a fit of a new version on ``statistic`` (default: the service's), adapted from
        ``base`` when given (``adapt.py``); Conflict (409) when there are too few measured configs,
        NotFound (404) for a base that does not exist, Unprocessable (422) for one that cannot be
        adapted.

        Pass the request's ``session`` from a route: SQLite runs on one pooled connection, so a
        second session opened here would wait for the request's own to close.
        """
        runtime = runtime_key(runtime)
        if session is None:
            with self.db.transaction() as own:
                return self.start_fit(device_class, runtime, own, statistic, team_id, base)
        statistic = statistic or self.settings.statistic
        adapted_from = None
        if base is not None:
            adapted_from = adaptable_base(session, base, statistic,
                                          store.measured_kinds(session, device_class, runtime))
        n = store.count_distinct_configs(session, device_class, runtime)
        if n < MIN_CONFIGS:
            raise Conflict(
                f"{n} distinct block configs measured on {device_class!r} with {runtime!r}; "
                f"a predictor needs at least {MIN_CONFIGS}: run a campaign first"
            )
        row = store.new_version(session, device_class, runtime, team_id)
        row.metrics = {"statistic": statistic}  # what the (resumed) fit learns, and from which base
        if adapted_from is not None:
            row.metrics["adapted_from"] = adapted_from
        session.commit()  # the worker reads the row from its own session
        self.futures[row.id] = self._pool.submit(self._run_fit, row.id)
        log.info("queued fit of predictor %d (%s, %s v%d)", row.id, device_class, runtime, row.version)
        return row

    def resume_fits(self) -> list[int]:
        """Fit again the versions a stopped server left in ``fitting`` (each re-reads the stored
        measurements), so that clients waiting for them are answered after a restart. A process
        started while another one on the same database is fitting fits that version too: the
        same seed on the same stored measurements, so the second write repeats the first."""
        with self.db.transaction() as session:
            ids = list(session.scalars(select(PredictorVersion.id).where(PredictorVersion.state == "fitting")))
        for predictor_id in ids:
            log.info("resuming fit of predictor %d", predictor_id)
            self.futures[predictor_id] = self._pool.submit(self._run_fit, predictor_id)
        return ids

    def refit_stale_encodings(self) -> list[int]:
        """For every (device class, runtime) whose latest ready version was fitted with another
        feature encoding (a server before an encoding change: such a version cannot answer), queue
        a fit of a new version on the stored measurements with the same statistic, unless a
        version of that pair is already fitting. Returns the queued predictor ids."""
        with self.db.transaction() as session:
            fitting = set(session.execute(select(PredictorVersion.device_class, PredictorVersion.runtime)
                                          .where(PredictorVersion.state == "fitting")).all())
            stale = []
            for device_class, runtimes in store.served_pairs(session).items():
                for runtime in runtimes:
                    row = store.latest_ready(session, device_class, runtime)
                    if (device_class, runtime) not in fitting and not _readable(row.blob):
                        stale.append((device_class, runtime, (row.metrics or {}).get("statistic")))
        queued = []
        for device_class, runtime, statistic in stale:
            try:
                queued.append(self.start_fit(device_class, runtime, statistic=statistic).id)
                log.info("predictor of (%s, %s) was fitted with another feature encoding: refitting as %d",
                         device_class, runtime, queued[-1])
            except Conflict as exc:
                log.warning("predictor of (%s, %s) was fitted with another feature encoding and cannot be "
                            "refitted: %s", device_class, runtime, exc.message)
        return queued

    def _run_fit(self, predictor_id: int) -> None:
        with self.db.transaction() as session:
            row = session.get(PredictorVersion, predictor_id)
            device_class, runtime, version = row.device_class, row.runtime, row.version
            statistic = (row.metrics or {}).get("statistic", self.settings.statistic)
            adapted_from = (row.metrics or {}).get("adapted_from")
            base_blob = session.get(PredictorVersion, adapted_from["id"]).blob if adapted_from else None
            configs, latencies = store.training_rows(session, device_class, runtime, statistic)
        try:
            base = load_predictor(base_blob) if base_blob is not None else None
            result = fit_predictor(configs, latencies, seed=0, settings=self.settings, min_configs=MIN_CONFIGS,
                                   stop=self._stop, base=base.model if base is not None else None,
                                   trainer=adapting(base.model, self.adapt_settings) if base is not None else None)
            if base is not None:
                result.feature_ranges = widest_ranges(base.meta.get("feature_ranges", {}), result.feature_ranges)
                result.metrics["adapted_from"] = adapted_from
            result.metrics["statistic"] = statistic
            with self.db.transaction() as session:
                correction = fit_on_stored_networks(session, lambda b: predict_ms(result.model, encode_many(b)),
                                                    device_class, runtime, statistic)
            result.metrics["network_correction"] = correction.model_dump()
        except FitStopped:  # the row stays "fitting": the next start fits it again
            log.info("fit of predictor %d stopped by shutdown", predictor_id)
            return
        except (NotEnoughData, ValueError) as exc:
            self._mark_failed(predictor_id, str(exc))
            return
        except Exception:  # a crashed fit is recorded on its row, the server stays up
            log.exception("fit of predictor %d failed", predictor_id)
            self._mark_failed(predictor_id, traceback.format_exc(limit=3))
            return
        meta = {"device_class": device_class, "runtime": runtime, "version": version, "id": predictor_id,
                "feature_ranges": result.feature_ranges, "metrics": result.metrics}
        blob = dump_predictor(result.model, meta)
        with self.db.transaction() as session:
            row = session.get(PredictorVersion, predictor_id)
            row.blob, row.blob_sha256 = blob, sha256_bytes(blob)
            row.metrics, row.feature_ranges = result.metrics, result.feature_ranges
            row.n_train, row.n_test = result.metrics["n_train"], result.metrics["n_test"]
            row.state = "ready"
        self.invalidate(device_class, runtime)
        log.info("predictor %d ready: MAPE %.2f %%", predictor_id, result.metrics["mape"])

    def _mark_failed(self, predictor_id: int, error: str) -> None:
        with self.db.transaction() as session:
            row = session.get(PredictorVersion, predictor_id)
            row.state, row.error = "failed", error[:4000]

    def wait(self, predictor_id: int, timeout: float | None = None) -> None:
        future = self.futures.get(predictor_id)
        if future is not None:
            future.result(timeout)

    def shutdown(self) -> None:
        """Cancel queued fits and stop a running one at its next epoch (they resume on the next start)."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- serving -------------------------------------------------------------------------

    def invalidate(self, device_class: str, runtime: str) -> None:
        with self._lock:
            self._latest.pop((device_class, runtime), None)

    def resolve(self, device_class: str, runtime: str, version: int | None = None) -> Loaded:
        """The predictor to answer with: pinned ``version`` or the latest ready one (cached)."""
        try:
            runtime = runtime_key(runtime)
        except BadRuntime as exc:
            raise NotFound(f"{exc}; {self._known_text()}") from exc
        key = (device_class, runtime)
        if version is None:
            with self._lock:
                hit = self._latest.get(key)
            if hit is not None and time.monotonic() - hit[0] < LATEST_TTL_S:
                return hit[1]
        row_id = self._find(device_class, runtime, version)
        loaded = self._load(row_id)
        if version is None:
            with self._lock:
                self._latest[key] = (time.monotonic(), loaded)
        return loaded

    def cached(self, device_class: str, runtime: str) -> Loaded | None:
        """The latest version if it is in memory and fresh (no database access; safe on the event loop)."""
        with self._lock:
            hit = self._latest.get((device_class, runtime))
        if hit is None or time.monotonic() - hit[0] >= LATEST_TTL_S:
            return None
        return hit[1]

    def _find(self, device_class: str, runtime: str, version: int | None) -> int:
        with self.db.transaction() as session:
            row = (store.latest_ready(session, device_class, runtime) if version is None
                   else store.pinned(session, device_class, runtime, version))
            if row is not None and row.state == "ready":
                return row.id
            known = store.served_pairs(session)
        if device_class not in known:
            raise NotFound(f"no predictor for device class {device_class!r}; {self._known_text(known)}")
        if runtime not in known[device_class]:
            raise NotFound(f"no predictor for runtime {runtime!r} on {device_class!r}; "
                           f"runtimes with predictors there: {', '.join(known[device_class])}")
        raise NotFound(f"no ready predictor version {version} for ({device_class!r}, {runtime!r})")

    def _known_text(self, known: dict | None = None) -> str:
        if known is None:
            with self.db.transaction() as session:
                known = store.served_pairs(session)
        classes = ", ".join(sorted(known)) or "none yet (fit one with POST /v1/predictors)"
        return f"device classes with predictors: {classes}"

    def _load(self, predictor_id: int) -> Loaded:
        with self._lock:
            hit = self._by_id.get(predictor_id)
        if hit is not None:
            return hit
        with self.db.transaction() as session:
            row = session.get(PredictorVersion, predictor_id)
            try:
                loaded = Loaded.from_row(row)
            except PredictorFormatError as exc:
                raise NotFound(f"predictor ({row.device_class!r}, {row.runtime!r}) v{row.version} was fitted by "
                               "another server version (another feature encoding or file format) and cannot "
                               "answer; the server refits such versions when it starts: GET /v1/predictors shows "
                               "the new version, POST /v1/predictors fits one now") from exc
        with self._lock:
            if len(self._by_id) > 64:  # pinned old versions: bounded memory
                self._by_id.clear()
            self._by_id[predictor_id] = loaded
        return loaded

    def predict_decoded(self, request: DecodedRequest) -> PredictResponse:
        """The answer to a body decoded as sent (a large batch, see ``predictor/columnar.py``)."""
        envelope = request.envelope
        loaded = self.resolve(envelope.device_class, envelope.runtime, envelope.predictor_version)
        block_ms, outside = loaded.predict_decoded(request.blocks)
        return PredictResponse(predictor=PredictorRef(id=loaded.id, version=loaded.version),
                               block_ms=block_ms, total_ms=float(sum(block_ms)), extrapolated=outside)

    def predict(self, request: PredictRequest, loaded: Loaded | None = None) -> PredictResponse:
        loaded = loaded or self.resolve(request.device_class, request.runtime, request.predictor_version)
        block_ms, outside = loaded.predict_blocks(request.blocks)
        answer = PredictResponse(predictor=PredictorRef(id=loaded.id, version=loaded.version),
                                 block_ms=block_ms, total_ms=float(sum(block_ms)), extrapolated=outside)
        return self.add_network_total(answer, request, loaded) if request.network else answer

    def network_correction(self, predictor_id: int) -> NetworkCorrection:
        """The current correction of a ready version (NotFound otherwise)."""
        with self.db.transaction() as session:
            row = session.get(PredictorVersion, predictor_id)
            if row is None or row.state != "ready":
                state = "does not exist" if row is None else f"is {row.state}"
                raise NotFound(f"predictor {predictor_id} {state}; GET /v1/predictors lists the ready ones")
            if row.runtime.startswith("kernels:"):
                raise NotFound(f"predictor {predictor_id} is a kernel predictor; network-level corrections belong "
                               "to block predictors (POST /v1/kernel-predictors has its own calibrate option)")
        return self.networks.current(self._load(predictor_id))

    def add_network_total(self, answer: PredictResponse, request: PredictRequest, loaded: Loaded) -> PredictResponse:
        """``"network": true``: the blocks are one network; add its corrected total beside the sum
        (reads the database at most every few seconds: call off the event loop)."""
        correction = self.networks.current(loaded)
        answer.network_ms = correction.apply(answer.total_ms, request.blocks)
        answer.network_correction = correction
        return answer
