"""HTTP client of the profiler service, as the search client uses it.

Everything the search needs from the farm goes through :class:`ProfilerClient`: predictor weights
(fetched once, cached on disk by device class, runtime and version, ETag-checked), whole-network
predictions, campaigns, predictor fits and the final network's real measurement. When the service
cannot be reached, :meth:`ProfilerClient.fetch_predictor` falls back to the newest cached predictor
and logs a warning that says so, so an overnight search survives a server restart.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.api import (
    BasePredictor,
    CampaignCreate,
    CampaignView,
    DeviceView,
    FarmStatus,
    FitStarted,
    JobView,
    MeasurementRow,
    MeasurementSummary,
    NetworkCorrection,
    NetworkSubmitted,
    OnnxPrediction,
    Page,
    PredictorDetail,
    PredictorView,
    PredictResponse,
    TokenList,
    TokenView,
    runtime_key,
)
from shared.config import AnyBlock
from shared.network_correction import PLAIN_SUM
from shared.predictor import LatencyMLP, load_predictor

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("RTSEG_CACHE_DIR", Path.home() / ".cache" / "rtseg-farm"))
Progress = Callable[[Any], None]  # called with each polled answer (CampaignView, JobView) or a state dict


class RemoteError(RuntimeError):
    """The profiler service answered with an error, or could not be reached (message says which)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServiceUnavailable(RemoteError):
    """No connection to the service (down, wrong URL, firewall)."""


@dataclass
class FetchedPredictor:
    """A predictor rebuilt locally: the same module the server trained, ready for autograd."""

    model: LatencyMLP
    meta: dict
    id: int
    version: int
    device_class: str
    runtime: str
    path: Path
    from_cache: bool = False
    offline: bool = False
    info: PredictorView | None = None
    # the version's network-level correction when it was fetched (plain sum when none is fitted)
    correction: NetworkCorrection = field(default_factory=lambda: PLAIN_SUM)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


def _error_detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500] or resp.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else json.dumps(detail)[:500]


class ProfilerClient:
    """Bearer-token client of the ``/v1`` API. ``calls`` counts every HTTP request sent."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        cache_dir: Path | str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout, transport=transport)
        self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR / "predictors"
        self.calls = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ProfilerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.calls += 1
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise RemoteError(f"{method} {path}: profiler service at {self.server} did not answer in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"profiler service at {self.server} unreachable: {exc}") from exc
        if resp.status_code >= 400 and resp.status_code != 304:
            raise RemoteError(
                f"{method} {path} -> HTTP {resp.status_code}: {_error_detail(resp)}", status=resp.status_code
            )
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def ping(self) -> None:
        """``GET /readyz``: raises :class:`ServiceUnavailable` when nothing answers, RemoteError when not ready."""
        self._request("GET", "/readyz")

    def ready(self) -> bool:
        try:
            return self._request("GET", "/readyz").status_code == 200
        except RemoteError:
            return False

    # --- predictors -----------------------------------------------------------------------

    def list_predictors(self, device_class: str | None = None, runtime: str | None = None) -> list[PredictorView]:
        """Usable predictor versions (those still fitting or failed are left out)."""
        return [r for r in self.predictors(device_class, runtime) if r.state == "ready"]

    def _cache_folder(self, device_class: str, runtime: str) -> Path:
        return self.cache_dir / _slug(device_class) / _slug(runtime)

    def _pick_predictor(self, device_class: str, runtime: str, version: int | None) -> PredictorView:
        rows = self.list_predictors(device_class, runtime)
        if version is not None:
            rows = [r for r in rows if r.version == version]
        if rows:
            return max(rows, key=lambda r: r.version)
        known = sorted({f"{r.device_class} / {r.runtime}" for r in self.list_predictors()})
        wanted = f"{device_class} / {runtime}" + (f" version {version}" if version else "")
        raise RemoteError(
            f"no predictor for {wanted}; known: {', '.join(known) or 'none (run a campaign and fit one)'}",
            status=404,
        )

    def fetch_predictor(self, device_class: str, runtime: str, version: int | None = None) -> FetchedPredictor:
        """Newest (or the given) predictor, from the disk cache when the ETag still matches.

        Falls back to the newest cached version when the service is unreachable (logged).
        """
        runtime = runtime_key(runtime)
        try:
            info = self._pick_predictor(device_class, runtime, version)
        except ServiceUnavailable as exc:
            return self._offline_predictor(device_class, runtime, version, exc)
        folder = self._cache_folder(device_class, runtime)
        path = folder / f"v{info.version}.predictor"
        meta_path = path.with_suffix(".json")
        etag = json.loads(meta_path.read_text()).get("etag") if meta_path.exists() and path.exists() else None
        headers = {"If-None-Match": etag} if etag else {}
        resp = self._request("GET", f"/v1/predictors/{info.id}/weights", headers=headers)
        # 304, or a server that ignores If-None-Match but sends the same ETag: the cached file is current.
        from_cache = resp.status_code == 304 or (etag is not None and resp.headers.get("ETag") == etag)
        if not from_cache:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(resp.content)
            tmp.replace(path)
            record = {**info.model_dump(mode="json"), "etag": resp.headers.get("ETag"), "fetched_at": time.time()}
            meta_path.write_text(json.dumps(record, indent=1))
        log.info("predictor %s %s v%s %s", device_class, runtime, info.version, "from cache" if from_cache else "fetched")
        fetched = self._load(path, info, device_class, runtime, from_cache=from_cache, offline=False)
        try:
            fetched.correction = self.network_correction(info.id)
        except RemoteError as exc:  # a server without network corrections: the one in the listing (or the sum)
            log.warning("network correction of predictor %s not fetched (%s); using the listed one", info.id, exc)
        return fetched

    def network_correction(self, predictor_id: int) -> NetworkCorrection:
        """``GET /v1/predictors/{id}/network-correction``: the version's network-level correction,
        refitted by the server on the networks it measured since (the plain sum when none is fitted)."""
        return NetworkCorrection.model_validate(self._json("GET", f"/v1/predictors/{predictor_id}/network-correction"))

    def _offline_predictor(
        self, device_class: str, runtime: str, version: int | None, exc: Exception
    ) -> FetchedPredictor:
        folder = self._cache_folder(device_class, runtime)
        cached = sorted(folder.glob("v*.predictor"), key=lambda p: int(p.stem[1:])) if folder.exists() else []
        if version is not None:
            cached = [p for p in cached if p.stem == f"v{version}"]
        if not cached:
            raise ServiceUnavailable(
                f"{exc}; and no cached predictor for {device_class} / {runtime} under {folder}"
            ) from exc
        path = cached[-1]
        info = PredictorView.model_validate_json(path.with_suffix(".json").read_text())
        log.warning(
            "profiler service at %s is unreachable; continuing with cached predictor %s %s v%s from %s",
            self.server, device_class, runtime, info.version, path,
        )
        return self._load(path, info, device_class, runtime, from_cache=True, offline=True)

    @staticmethod
    def _load(path: Path, info: PredictorView, device_class: str, runtime: str, from_cache: bool,
              offline: bool) -> FetchedPredictor:  # fmt: skip
        pf = load_predictor(path.read_bytes())
        stored = (info.metrics or {}).get("network_correction")  # offline: the one recorded at fetch time
        return FetchedPredictor(
            model=pf.model, meta=pf.meta, id=info.id, version=info.version,
            device_class=device_class, runtime=runtime, path=path, from_cache=from_cache, offline=offline, info=info,
            correction=NetworkCorrection.model_validate(stored) if stored else PLAIN_SUM,
        )

    def predict(self, device_class: str, runtime: str, blocks: Sequence[AnyBlock | dict],
                network: bool = False) -> PredictResponse:
        """``POST /v1/predict``: per-block and total predicted latency, and the predictor used.
        ``network``: the blocks form one network; the answer adds ``network_ms``, the sum corrected by
        the predictor's network-level model, and the correction it used."""
        payload = [b if isinstance(b, dict) else b.model_dump() for b in blocks]
        body = {"device_class": device_class, "runtime": runtime, "blocks": payload}
        if network:
            body["network"] = True
        return PredictResponse.model_validate(self._json("POST", "/v1/predict", json=body))

    def fit_predictor(self, device_class: str, runtime: str, base: BasePredictor | None = None) -> FitStarted:
        """Start a fit on the server; poll ``predictor(answer.id)`` or :meth:`wait_fit` for it.
        ``base``: adapt that predictor (of another device class) instead of training from scratch."""
        body: dict = {"device_class": device_class, "runtime": runtime}
        if base is not None:
            body["base"] = base.model_dump(exclude_none=True)
        return FitStarted.model_validate(self._json("POST", "/v1/predictors", json=body))

    def wait_predictor(
        self, device_class: str, runtime: str, newer_than: int = 0, timeout: float = 600, poll: float = 1.0,
        progress: Progress | None = None,
    ) -> PredictorView:
        """Poll the predictor list until a version above ``newer_than`` exists (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in self.list_predictors(device_class, runtime) if r.version > newer_than]
            if rows:
                return max(rows, key=lambda r: r.version)
            if progress:
                progress({"state": "fitting"})
            if time.monotonic() > deadline:
                raise RemoteError(f"no predictor for {device_class} / {runtime} appeared within {timeout:.0f} s")
            time.sleep(poll)

    def latest_version(self, device_class: str, runtime: str) -> int:
        rows = self.list_predictors(device_class, runtime)
        return max((r.version for r in rows), default=0)

    # --- campaigns and measurements -------------------------------------------------------

    def create_campaign(self, body: CampaignCreate | None = None, **fields: Any) -> CampaignView:
        """``POST /v1/campaigns`` with ``body`` or its fields (checked here first: a typo is a
        ValueError before anything is sent); the server may hold the answer up to ``wait_s``
        while exporting."""
        body = body or CampaignCreate(**fields)
        timeout = (self._http.timeout.read or 30.0) + body.wait_s
        sent = body.model_dump(mode="json", exclude_unset=True)
        return CampaignView.model_validate(self._json("POST", "/v1/campaigns", json=sent, timeout=timeout))

    def get_campaign(self, campaign_id: int) -> CampaignView:
        return CampaignView.model_validate(self._json("GET", f"/v1/campaigns/{campaign_id}"))

    def wait_campaign(
        self, campaign_id: int, timeout: float = 3600, poll: float = 1.0, progress: Progress | None = None
    ) -> CampaignView:
        """Poll until no job of the campaign is queued or running (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            camp = self.get_campaign(campaign_id)
            if progress:
                progress(camp)
            if camp.finished:
                return camp
            if time.monotonic() > deadline:
                raise RemoteError(f"campaign {campaign_id} not finished within {timeout:.0f} s: {camp.counts}")
            time.sleep(poll)

    def measurements(self, **filters: Any) -> list[MeasurementRow]:
        """``GET /v1/measurements`` with the given filters (campaign_id, device_class, runtime, kind, ...)."""
        rows = self._json("GET", "/v1/measurements", params=_params(**filters))
        return [MeasurementRow.model_validate(r) for r in rows]

    def upload_network(self, onnx_bytes: bytes, device_class: str, runtime: str, name: str,
                       repeat: bool = False, predicted_ms: float | None = None,
                       blocks: Sequence[AnyBlock | dict] | None = None) -> NetworkSubmitted:
        """``POST /v1/networks``: the job that measures the network. ``repeat``: a fresh
        measurement job even when this network was measured before; ``predicted_ms``: shown
        beside the measurement on the dashboard; ``blocks``: the network as block configs, so that
        its measurement trains the predictor's network-level correction."""
        files = {"file": (f"{_slug(name)}.onnx", onnx_bytes, "application/octet-stream")}
        data = {"device_class": device_class, "runtime": runtime, "name": name, "repeat": str(repeat).lower()}
        if predicted_ms is not None:
            data["predicted_ms"] = str(predicted_ms)
        if blocks:
            data["blocks"] = json.dumps([b if isinstance(b, dict) else b.model_dump() for b in blocks])
        return NetworkSubmitted.model_validate(self._json("POST", "/v1/networks", files=files, data=data))

    def predict_onnx(self, onnx_bytes: bytes, device_class: str, runtime: str = "onnxruntime",
                     input_shape: str | None = None, name: str = "model") -> OnnxPrediction:
        """``POST /v1/predict/onnx``: total and per-kernel predicted latency of a whole ONNX model."""
        files = {"file": (f"{_slug(name)}.onnx", onnx_bytes, "application/octet-stream")}
        data = {"device_class": device_class, "runtime": runtime}
        if input_shape:
            data["input_shape"] = input_shape
        answer = self._json("POST", "/v1/predict/onnx", files=files, data=data,
                            timeout=max(self._http.timeout.read or 30.0, 300.0))  # fmt: skip
        return OnnxPrediction.model_validate(answer)

    def fit_kernel_predictor(self, device_class: str, runtime: str) -> PredictorView:
        """``POST /v1/kernel-predictors``: fit a kernel predictor version from the kernel measurements."""
        answer = self._json("POST", "/v1/kernel-predictors", json={"device_class": device_class, "runtime": runtime},
                            timeout=max(self._http.timeout.read or 30.0, 600.0))  # fmt: skip
        return PredictorView.model_validate(answer)

    def get_job(self, job_id: int) -> JobView:
        return JobView.model_validate(self._json("GET", f"/v1/jobs/{job_id}"))

    def wait_job(
        self, job_id: int, timeout: float = 900, poll: float = 0.5, progress: Progress | None = None
    ) -> MeasurementSummary:
        """Poll a job until done (returns its measurement) or failed (raises)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if progress:
                progress(job)
            if job.state == "done" and job.measurement is not None:
                return job.measurement
            if job.state in ("failed", "cancelled"):
                raise RemoteError(f"measurement job {job_id} {job.state}: {job.error or 'no error text'}")
            if time.monotonic() > deadline:
                raise RemoteError(
                    f"measurement job {job_id} still {job.state} after {timeout:.0f} s; "
                    f"is an agent for {job.device_class} connected?"
                )
            time.sleep(poll)


    # --- lab control: status, devices, listings, cancel, tokens ----------------------------

    def status(self) -> FarmStatus:
        """``GET /v1/status``: devices online, queue depth, throughput, failures, predictors."""
        return FarmStatus.model_validate(self._json("GET", "/v1/status"))

    def devices(self) -> list[DeviceView]:
        """``GET /v1/devices`` (any valid token): every registered device, online or not."""
        return [DeviceView.model_validate(d) for d in self._json("GET", "/v1/devices")]

    def device(self, serial: str) -> DeviceView:
        """``GET /v1/devices/{serial}``: the device plus last temperature, current job, measured today."""
        return DeviceView.model_validate(self._json("GET", f"/v1/devices/{_quote(serial)}"))

    def campaigns(self, state: str | None = None, device_class: str | None = None, team: str | None = None,
                  limit: int = 50, offset: int = 0) -> Page[CampaignView]:
        """``GET /v1/campaigns``: one page, newest first as the server orders them."""
        params = _params(state=state, device_class=device_class, team=team, limit=limit, offset=offset)
        return Page[CampaignView].model_validate(self._json("GET", "/v1/campaigns", params=params))

    def jobs(self, campaign_id: int | None = None, state: str | None = None, device_class: str | None = None,
             kind: str | None = None, limit: int = 50, offset: int = 0) -> Page[JobView]:
        params = _params(campaign_id=campaign_id, state=state, device_class=device_class, kind=kind,
                         limit=limit, offset=offset)
        return Page[JobView].model_validate(self._json("GET", "/v1/jobs", params=params))

    def cancel_campaign(self, campaign_id: int) -> CampaignView:
        """``POST /v1/campaigns/{id}/cancel``: queued jobs leave the queue; running ones finish."""
        return CampaignView.model_validate(self._json("POST", f"/v1/campaigns/{campaign_id}/cancel"))

    def tokens(self) -> list[TokenView]:
        """``GET /v1/tokens``: the caller's team's tokens (admin: all), never their secrets."""
        return TokenList.model_validate(self._json("GET", "/v1/tokens")).items

    def revoke_token(self, token_id: int) -> TokenView:
        """``DELETE /v1/tokens/{id}``: refused at once by every server process from now on."""
        return TokenView.model_validate(self._json("DELETE", f"/v1/tokens/{token_id}"))

    def predictors(self, device_class: str | None = None, runtime: str | None = None) -> list[PredictorView]:
        """Every predictor version (fitting and failed ones too), typed."""
        params = _params(device_class=device_class, runtime=runtime)
        return [PredictorView.model_validate(r) for r in self._json("GET", "/v1/predictors", params=params)]

    def predictor(self, predictor_id: int) -> PredictorDetail:
        return PredictorDetail.model_validate(self._json("GET", f"/v1/predictors/{predictor_id}"))

    def wait_fit(self, predictor_id: int, timeout: float = 900, poll: float = 1.0) -> PredictorView:
        """Poll a fit until it is ready (returned) or failed (raises); bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.predictor(predictor_id)
            if row.state == "ready":
                return row
            if row.state == "failed":
                raise RemoteError(f"predictor fit {predictor_id} failed: {row.error or 'no error text'}")
            if time.monotonic() > deadline:
                raise RemoteError(f"predictor fit {predictor_id} still {row.state} after {timeout:.0f} s")
            time.sleep(poll)


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset ones."""
    return {k: v for k, v in values.items() if v is not None}


def _quote(segment: str) -> str:
    """A device serial as one URL path segment (serials may hold ':' and '/')."""
    from urllib.parse import quote

    return quote(segment, safe="")
