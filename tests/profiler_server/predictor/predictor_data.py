"""Synthetic block measurements stored the way ``jobs.record_result`` stores them
(artifact + job + measurement rows), for the predictor tests."""

from __future__ import annotations

import hashlib
import random

from profiler_server.db import Artifact, Database, Job, Measurement, Team
from shared.config import ConvConfig, LIRConfig
from shared.costs import block_macs

ADMIN = "admin-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
DEVICE_CLASS = "host/test-cpu"
RUNTIME = "onnxruntime/t1/cpu"


def synthetic_blocks(n: int, seed: int = 0) -> list:
    """Distinct conv/lir configs with channels in 8..64 and sizes in 8..32 (the trained range)."""
    rng = random.Random(seed)
    out: dict = {}
    for _ in range(50 * n):
        if len(out) == n:
            break
        c, h = rng.choice((8, 16, 24, 32, 48, 64)), rng.choice((8, 12, 16, 24, 32))
        if rng.random() < 0.5:
            cfg = ConvConfig(cin=c, cout=rng.choice((8, 16, 32, 64)), kernel=rng.choice((1, 3)), h=h, w=h)
        else:
            cfg = LIRConfig(cin=c, cmid=c * rng.choice((2, 4)), cout=rng.choice((c, 32)), kernel=3,
                            stride=rng.choice((1, 2)), h=h, w=h)
        out[cfg.key()] = cfg
    return list(out.values())


def synthetic_ms(cfg, rng: random.Random) -> float:
    return (0.02 + block_macs(cfg) / 5e7) * (1 + rng.gauss(0, 0.01))


P10_SHARE = 0.8  # stored p10 = 0.8 x median, so a test can tell which statistic a predictor learned


def store_measurements(
    db: Database, device_class: str, runtime: str, cfgs: list, seed: int = 0, slowdown: float = 1.0
) -> None:
    rng = random.Random(seed)
    store_measured(db, device_class, runtime, cfgs, [synthetic_ms(c, rng) * slowdown for c in cfgs], seed)


def store_measured(
    db: Database, device_class: str, runtime: str, cfgs: list, medians_ms: list[float], seed: int = 0
) -> None:
    """One measurement per config with the given median (its p10: ``P10_SHARE`` of it)."""
    with db.transaction() as s:
        team = Team(name=f"bench-{device_class}-{runtime}-{seed}")
        s.add(team)
        s.flush()
        for cfg, ms in zip(cfgs, medians_ms, strict=True):
            config = cfg.model_dump()
            sha = hashlib.sha256(f"{device_class}{runtime}{cfg.key()}".encode()).hexdigest()
            if s.get(Artifact, sha) is None:  # a re-measured config shares its artifact
                s.add(Artifact(sha256=sha, format="onnx", size=1, kind=cfg.kind, config=config,
                               config_key=cfg.key()))
            job = Job(team_id=team.id, artifact_sha256=sha, kind=cfg.kind, device_class=device_class,
                      runtime=runtime, state="done")
            s.add(job)
            s.flush()
            s.add(Measurement(job_id=job.id, artifact_sha256=sha, config=config, kind=cfg.kind,
                              device_class=device_class, runtime=runtime, serial="dev-1", median_ms=ms,
                              mean_ms=ms, p10_ms=P10_SHARE * ms, p90_ms=ms, std_ms=0.0, runs=50, samples=[ms]))


