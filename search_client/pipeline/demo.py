"""``rtseg-search demo``: the whole product on one machine, from nothing to a measured network.

Starts ``profiler-server`` (SQLite under ``runs/demo/``, the host CPU as the device), measures a
campaign of the supernet's blocks, fits the latency predictor, writes a synthetic street-scene
dataset, runs pretrain -> search -> derive -> fine-tune -> eval -> export -> real measurement with the
target halfway (in measured latency) between the smallest and the largest network the supernet can
derive, and writes ``report.json``, ``report.md`` and plots.
Everything already measured, fitted or trained is reused by the next run (and it says so). The
server and its host agent are stopped on every exit path, Ctrl-C included.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from search_client.pipeline.campaign import fit_after_campaign
from search_client.pipeline.feasible import InfeasibleTarget
from search_client.pipeline.localfarm import FarmError, LocalFarm
from search_client.pipeline.settings import PipelineSettings
from search_client.pipeline.state import PHASES, write_json_atomic
from search_client.remote import ProfilerClient, RemoteError
from shared.api import CampaignView

if TYPE_CHECKING:
    from search_client.report import RunReport

log = logging.getLogger(__name__)

# A narrow supernet of the paper's shape (same blocks, smaller widths), so that the demo trains in
# minutes on two CPU cores; --full doubles the widths.
DEMO_SUPERNET = {
    "detail_widths": (16, 32, 32), "detail_depths": (1, 1, 1), "stem": 16, "stage_widths": (24, 32, 32),
    "depths": (1, 2, 2), "down_expansion": 2, "lir_expansion": 3, "heads": (2, 2, 4), "patches": (2, 2, 1),
    "mhsa_mid": (32, 64, 64), "head_mid": 64, "aux_mid": 16,
}
FULL_SUPERNET = {
    "detail_widths": (32, 64, 64), "detail_depths": (2, 2, 2), "stem": 16, "stage_widths": (32, 48, 64),
    "depths": (2, 2, 3), "down_expansion": 3, "lir_expansion": 4, "heads": (2, 4, 4), "patches": (2, 2, 1),
    "mhsa_mid": (64, 128, 128), "head_mid": 128, "aux_mid": 32,
}


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what failed and where its log is."""


@dataclass(frozen=True)
class DemoProfile:
    campaign_configs: int
    supernet: dict
    pretrain_iters: int
    search_iters: int
    finetune_iters: int
    train_images: int
    val_images: int
    latency_size: tuple[int, int] = (256, 512)
    crop: tuple[int, int] = (128, 256)
    batch_size: int = 4


DEFAULT = DemoProfile(campaign_configs=400, supernet=DEMO_SUPERNET, pretrain_iters=150, search_iters=120,
                      finetune_iters=100, train_images=40, val_images=10)
FULL = DemoProfile(campaign_configs=1500, supernet=FULL_SUPERNET, pretrain_iters=1500, search_iters=1000,
                   finetune_iters=1000, train_images=200, val_images=40)


class Progress:
    """Timestamped progress lines on stdout (the demo is a CLI)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.last_poll = 0.0

    def __call__(self, message: str) -> None:
        elapsed = int(time.monotonic() - self.t0)
        print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {message}", flush=True)

    def every(self, seconds: float, message: str) -> None:
        now = time.monotonic()
        if now - self.last_poll >= seconds:
            self.last_poll = now
            self(message)


def demo_settings(profile: DemoProfile, out: Path) -> PipelineSettings:
    overrides = {
        "model": {"config": profile.supernet},
        "data": {"root": str(out / "data"), "crop": profile.crop, "eval_size": profile.latency_size},
        "train": {"batch_size": profile.batch_size, "log_every": 10, "checkpoint_every": 50, "warmup_iters": 10},
        # Short searches need faster architecture steps than the paper's 40k iterations; β is larger
        # because Lreg here is relative (|E/T - 1|), not in milliseconds.
        "search": {"arch_lr": 3e-3, "latency_weight": 0.5, "tau_start": 5.0, "tau_end": 0.5, "reg_mode": "two-sided"},
    }
    return PipelineSettings(
        name=out.name, runs_dir=out.parent, preset="synthetic-cpu", overrides=overrides,
        pretrain_iters=profile.pretrain_iters, search_iters=profile.search_iters,
        finetune_iters=profile.finetune_iters, target_position=0.5, gate_lr=0.02,
        latency_height=profile.latency_size[0], latency_width=profile.latency_size[1],
        measure=True, measure_supernet=True, progress=False, cache_dir=out / "cache",
    )


def _restart_if_changed(settings: PipelineSettings, say: Progress) -> None:
    """A run folder made with other settings (e.g. --full after the default) is started afresh."""
    saved_path = settings.run_dir / "pipeline.json"
    if not saved_path.exists():
        return
    changed = settings.changed_fields(PipelineSettings.load(settings.run_dir))
    if not changed:
        return
    say(f"demo settings changed ({', '.join(sorted(changed))}): training again from scratch")
    for phase in PHASES:
        shutil.rmtree(settings.run_dir / phase, ignore_errors=True)
    shutil.rmtree(settings.run_dir / "phases", ignore_errors=True)
    saved_path.unlink()


def ensure_dataset(profile: DemoProfile, root: Path, say: Progress) -> None:
    from search_client.data.synthetic import SyntheticSpec, make_synthetic

    spec = SyntheticSpec(train=profile.train_images, val=profile.val_images,
                         height=profile.latency_size[0], width=profile.latency_size[1])
    marker = root / "synthetic.json"
    if marker.exists() and json.loads(marker.read_text()) == asdict(spec):
        say(f"synthetic dataset: reusing {root} (cache)")
        return
    shutil.rmtree(root, ignore_errors=True)
    make_synthetic(root, spec)
    say(f"synthetic dataset: wrote {spec.train} train + {spec.val} val scenes to {root}")


def run_campaign(client: ProfilerClient, device_class: str, runtime: str, profile: DemoProfile,
                 settings: PipelineSettings, say: Progress) -> CampaignView:
    from search_client.models import build_from_config
    from search_client.pipeline.space import supernet_space

    supernet = build_from_config(settings.run_config())
    space = supernet_space(supernet, [profile.latency_size])
    camp = client.create_campaign(device_class=device_class, runtime=runtime, space=space.model_dump(),
                                  n=profile.campaign_configs, seed=0, warmup=10, runs=50, min_seconds=0.1,
                                  wait_s=60)
    say(f"campaign {camp.id}: {camp.n} block configs of the supernet's space; {camp.cached} "
        f"already measured (cache), {camp.queued + camp.running} to measure")

    def progress(c: CampaignView) -> None:
        eta = f", eta {c.eta_s:.0f} s" if c.eta_s else ""
        say.every(10, f"campaign {c.id}: {c.done} measured, {c.queued} queued, "
                      f"{c.running} running, {c.failed} failed{eta}")

    return client.wait_campaign(camp.id, timeout=3600, poll=1.0, progress=progress)


def ensure_predictor(client: ProfilerClient, device_class: str, runtime: str, profile: DemoProfile,
                     settings: PipelineSettings, out: Path, say: Progress) -> dict:
    record_path = out / "demo-state.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    latest = client.latest_version(device_class, runtime)
    if latest and record.get("campaign_configs", 0) >= profile.campaign_configs:
        say(f"predictor: reusing v{latest} for {device_class} / {runtime} (cache: fitted on an earlier run)")
        return record
    camp = run_campaign(client, device_class, runtime, profile, settings, say)
    if camp.failed:
        say(f"warning: {camp.failed} measurements failed (see {out / 'profiler-server.log'})")
    say(f"fitting the latency predictor for {device_class} / {runtime}")
    info = fit_after_campaign(client, device_class, runtime, latest)
    metrics = info.metrics
    say(f"predictor v{info.version}: " + ", ".join(f"{k} {metrics[k]:.3g}" for k in ("mape", "within_10")
                                                     if isinstance(metrics.get(k), int | float)))
    peers = metrics.get("peers") or {}
    if peers:
        say("peers on the same held-out split: " + ", ".join(f"{n} MAPE {p['mape']:.3g}" for n, p in peers.items())
            + f"; winner: {metrics.get('winner', '?')}")
    record = {"campaign_id": camp.id, "campaign_configs": profile.campaign_configs,
              "predictor": info.model_dump(mode="json")}  # fmt: skip
    write_json_atomic(record_path, record)
    return record


def plot_predictor_test_split(client: ProfilerClient, device_class: str, runtime: str, path: Path) -> Path | None:
    """Predicted vs measured block latency on the predictor's held-out test split (same split rule
    as the server's fit: by config hash)."""
    from profiler_server.predictor.fit import prepare_dataset, split_by_key
    from search_client.report import plot_predicted_vs_measured
    from shared.encoding import encode_blocks

    rows = [r for r in client.measurements(device_class=device_class, runtime=runtime) if r.config]
    if len(rows) < 20:
        return None
    fetched = client.fetch_predictor(device_class, runtime)
    statistic = fetched.meta.get("metrics", {}).get("statistic", "median_ms")  # what the predictor learned
    data = prepare_dataset([r.config for r in rows], [getattr(r, statistic) for r in rows])
    test = split_by_key(data.keys, int(fetched.meta.get("seed", 0))).test
    with torch.no_grad():
        predicted = fetched.model(encode_blocks([data.configs[i] for i in test])).tolist()
    measured = data.y_ms[test].tolist()
    title = f"predictor v{fetched.version}, {device_class} {runtime}: test split ({len(test)} configs)"
    try:
        return plot_predicted_vs_measured(predicted, measured, path, title)
    except ValueError as exc:  # a broken predictor must not cost the user the rest of the report
        log.warning("predictor test-split plot skipped: %s", exc)
        return None


def _summary(report: RunReport, out: Path, say: Progress) -> None:
    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:+.1f} %"

    say(f"searched network: {report.gmacs:.3f} GMACs ({report.params_m:.3f} M params) vs supernet "
        f"{report.supernet_gmacs:.3f} GMACs; mIoU {100 * report.miou:.1f} vs supernet "
        f"{100 * report.supernet_miou:.1f}")
    stat = report.get("statistic", "median_ms").removesuffix("_ms")
    supernet = report.get("supernet_measured_ms")
    say(f"latency on {report.device_class} ({report.runtime}, per-job {stat}): target {report.target_ms:.2f} ms, "
        f"predicted {report.predicted_ms:.2f} ms, measured {report.measured_ms:.2f} ms "
        f"(measured vs target {pct(report.get('measured_vs_target'))}, predicted vs measured "
        f"{pct(report.get('predicted_vs_measured'))}); supernet measured "
        + ("—" if supernet is None else f"{supernet:.2f} ms"))
    say(f"report: {out / 'report.md'} and {out / 'report.json'}; plots: {', '.join(Path(p).name for p in report.plots)}")
    say(f"the farm's database stays at {out / 'profiler.db'}: "
        f"profiler-server --db sqlite:///{out / 'profiler.db'} --data {out / 'profiler-data'} serves the predictor")


def run_demo(full: bool = False, out: Path = Path("runs/demo"), threads: int | None = None) -> dict:
    """The demo end to end; returns the run report. Raises DemoError with a one-line reason."""
    from android_harness.host import host_device_class
    from search_client.pipeline.runner import run_pipeline, write_run_report
    from search_client.pipeline.state import RunState

    say = Progress()
    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    profile = FULL if full else DEFAULT
    out.mkdir(parents=True, exist_ok=True)
    device_class = host_device_class()
    settings = demo_settings(profile, out).model_copy(update={"device_class": device_class})
    _restart_if_changed(settings, say)
    farm = LocalFarm(out / "profiler.db", out / "profiler-server.log", data_dir=out / "profiler-data")
    try:
        say(f"starting profiler-server --db sqlite:///{farm.db_path} --host-device (log {farm.log_path})")
        farm.start()
        say(f"farm up at {farm.url}")
        client = ProfilerClient(farm.url, farm.token, cache_dir=settings.cache_dir)
        runtime = settings.runtime
        settings = settings.model_copy(update={"server": farm.url, "token": farm.token})
        ensure_predictor(client, device_class, runtime, profile, settings, out, say)
        ensure_dataset(profile, Path(settings.run_config().data.root), say)
        report = run_pipeline(settings, client=client, say=say)
        plot = plot_predictor_test_split(client, device_class, runtime, out / "predictor_test_split.png")
        report = write_run_report(RunState(settings.run_dir), settings, device_class, [plot] if plot else [])
        _summary(report, out, say)
        return report
    except InfeasibleTarget as exc:
        raise DemoError(str(exc)) from exc
    except (FarmError, RemoteError) as exc:
        raise DemoError(f"{exc} (server log: {farm.log_path})") from exc
    except KeyboardInterrupt:
        say("interrupted: stopping the farm; run the demo again to resume where it stopped")
        raise
    finally:
        farm.stop()
