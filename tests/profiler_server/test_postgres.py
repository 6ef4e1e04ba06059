"""The server on a real PostgreSQL: a throwaway cluster (initdb + pg_ctl) on 127.0.0.1 in a tmp dir.

Skipped, with the reason, when no PostgreSQL server binaries or no psycopg (the ``postgres`` extra)
are installed. Binaries are looked up on PATH, in ``$RTSEG_PG_BIN`` and in Debian's
``/usr/lib/postgresql/<version>/bin``. initdb refuses to run as root: as root the cluster runs as
the ``postgres`` user (``runuser``), as a packaged server would.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from farm_helpers import (
    ADMIN,
    DEVICE_CLASS,
    LiveServer,
    bearer,
    lease_until_empty,
    small_configs,
    stats,
)

from testkit.live_server import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
psycopg = pytest.importorskip("psycopg", reason="psycopg not installed: pip install -e '.[postgres]'")


def _pg_bin() -> Path | None:
    candidates = [os.environ.get("RTSEG_PG_BIN", "")]
    found = shutil.which("pg_ctl")
    candidates.append(str(Path(found).parent) if found else "")
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _run_as() -> list[str] | None:
    """Command prefix that runs the cluster as a non-root user (None: impossible here)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--"] if runuser else None


class Cluster:
    def __init__(self, bin_dir: Path, root: Path, prefix: list[str]) -> None:
        self.bin, self.root, self.prefix, self.port = bin_dir, root, prefix, free_port()
        self.data = root / "data"
        self._names = itertools.count()

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.prefix, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120
        )

    def start(self) -> Cluster:
        if self.prefix:
            shutil.chown(self.root, user="postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "rtseg", "--auth=trust", "-E", "UTF8")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._pg(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-o", opts, "-w", "start"
        )
        return self

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = f"rtseg_{next(self._names)}"
        with psycopg.connect(f"postgresql://rtseg@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://rtseg@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="module")
def cluster():
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    prefix = _run_as()
    if prefix is None:
        pytest.skip("running as root without a 'postgres' user and runuser: initdb refuses root")
    # Not under pytest's 0700 tmp folders: the postgres user must reach it (and the socket path
    # must stay short).
    root = Path(tempfile.mkdtemp(prefix="rtseg-pg-"))
    started = Cluster(bin_dir, root, prefix)
    try:
        yield started.start()
    finally:
        if (root / "data" / "postmaster.pid").exists():
            started.stop()
        shutil.rmtree(root, ignore_errors=True)


def _server(tmp_path: Path, name: str, db_url: str) -> LiveServer:
    data = tmp_path / name
    data.mkdir()
    return LiveServer(data, env={"RTSEG_DB_URL": db_url}).start()


def _roles(url: str) -> tuple[dict, dict, str]:
    admin = bearer(ADMIN)
    team = httpx.post(f"{url}/v1/teams", json={"name": "vision"}, headers=admin).json()["token"]
    agent = httpx.post(f"{url}/v1/tokens", json={"role": "agent", "name": "a"}, headers=admin).json()["token"]
    devices = [{"serial": f"dev-{i}", "device_class": DEVICE_CLASS, "kind": "host"} for i in range(8)]
    r = httpx.post(f"{url}/v1/agents", json={"name": "a", "devices": devices}, headers=bearer(agent))
    assert r.status_code == 201, r.text
    return bearer(team), bearer(agent), r.json()["agent_id"]


def _campaign(url: str, team: dict, n: int) -> int:
    body = {"device_class": DEVICE_CLASS, "configs": small_configs(n)}
    r = httpx.post(f"{url}/v1/campaigns", json=body, headers=team, timeout=60)
    assert r.status_code == 201, r.text
    for _ in range(600):  # export runs in the background
        state = httpx.get(f"{url}/v1/campaigns/{r.json()['id']}", headers=team).json()["state"]
        if state != "exporting":
            return r.json()["id"]
        threading.Event().wait(0.1)
    raise TimeoutError("campaign still exporting")


def test_lease_then_report_round_trip_is_stored_in_postgres(cluster: Cluster, tmp_path: Path):
    db_url = cluster.new_database()
    server = _server(tmp_path, "data", db_url)
    try:
        url = server.url
        team, agent, agent_id = _roles(url)
        campaign_id = _campaign(url, team, 1)
        lease = {"agent_id": agent_id, "serial": "dev-0"}
        job = httpx.post(f"{url}/v1/jobs/lease", json=lease, headers=agent).json()["job"]
        assert job is not None
        assert httpx.get(f"{url}{job['artifact_url']}", headers=agent).status_code == 200
        body = {"lease_id": job["lease_id"], "serial": "dev-0", "stats": stats(2.5)}
        assert (
            httpx.post(f"{url}/v1/jobs/{job['job_id']}/result", json=body, headers=agent).status_code == 200
        )
        again = httpx.post(f"{url}/v1/jobs/{job['job_id']}/result", json=body, headers=agent)
        assert again.status_code == 409, "a result is accepted once"
        assert httpx.get(f"{url}/v1/campaigns/{campaign_id}", headers=team).json()["state"] == "done"
        rows = httpx.get(f"{url}/v1/measurements", params={"device_class": DEVICE_CLASS}, headers=team).json()
        assert [r["median_ms"] for r in rows] == [2.5]
        # Values PostgreSQL enforces (and SQLite does not) are the client's error, not a 500.
        assert (
            httpx.post(f"{url}/v1/teams", json={"name": "x" * 200}, headers=bearer(ADMIN)).status_code == 201
        )
        assert httpx.get(f"{url}/v1/jobs/{2**62}", headers=team).status_code == 422
        nul = {"name": "a\u0000", "devices": []}
        assert httpx.post(f"{url}/v1/agents", json=nul, headers=agent).status_code == 422
    finally:
        server.stop()
    assert not (tmp_path / "data" / "profiler.db").exists(), "the server fell back to SQLite"
    with psycopg.connect(db_url.replace("+psycopg", "")) as conn:
        assert conn.execute("SELECT median_ms FROM measurements").fetchall() == [(2.5,)]
        assert conn.execute("SELECT state FROM jobs").fetchall() == [("done",)]


def test_concurrent_leasers_on_two_servers_never_share_a_job(cluster: Cluster, tmp_path: Path):
    """Two server processes on one database, four leasing threads each: every job is leased once,
    every result lands, and the campaign ends done (its last results arrive concurrently)."""
    n = 30
    db_url = cluster.new_database()
    first = _server(tmp_path, "one", db_url)
    second = _server(tmp_path, "two", db_url)
    try:
        team, agent, agent_id = _roles(first.url)
        campaign_id = _campaign(first.url, team, n)
        leased: list[int] = []
        errors: list[str] = []

        def work(url: str, serial: str) -> None:
            with httpx.Client(base_url=url, headers=agent, timeout=60) as c:
                while True:
                    r = c.post("/v1/jobs/lease", json={"agent_id": agent_id, "serial": serial})
                    if r.status_code != 200:
                        errors.append(r.text)
                        return
                    job = r.json()["job"]
                    if job is None:
                        return
                    leased.append(job["job_id"])
                    body = {"lease_id": job["lease_id"], "serial": serial, "stats": stats()}
                    r = c.post(f"/v1/jobs/{job['job_id']}/result", json=body)
                    if r.status_code != 200:
                        errors.append(r.text)

        threads = [
            threading.Thread(target=work, args=(server.url, f"dev-{i}"))
            for i, server in enumerate([first, second] * 4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not errors, errors[:3]
        twice = [job for job, k in Counter(leased).items() if k > 1]
        assert not twice, f"jobs leased twice: {twice}"
        assert len(leased) == n
        assert httpx.get(f"{second.url}/v1/campaigns/{campaign_id}", headers=team).json()["state"] == "done"
    finally:
        first.stop()
        second.stop()
    with psycopg.connect(db_url.replace("+psycopg", "")) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT job_id) FROM measurements").fetchone() == (n, n)


def test_racing_results_complete_every_campaign_and_fits_get_distinct_versions(cluster: Cluster):
    """Database level, many connections at once: the races READ COMMITTED opens and SQLite's
    single writer hides (last two results of a campaign; two fits numbering a version)."""
    from profiler_server import jobs
    from profiler_server.db import Artifact, Campaign, Database, Job, Team, upgrade_database
    from profiler_server.predictor import store
    from shared.schemas import JobResult, JobSettings, RuntimeSettings

    url = cluster.new_database()
    dbs = [Database(url) for _ in range(8)]
    upgrade_database(dbs[0].engine)
    rs = RuntimeSettings()
    with dbs[0].transaction() as s:
        team = Team(name="t")
        s.add(team)
        s.flush()
        for c in range(30):
            campaign = Campaign(team_id=team.id, device_class="host/x", runtime=rs.key(), state="running")
            s.add(campaign)
            s.flush()
            for k in range(3):
                artifact = Artifact(sha256=f"{c:032x}{k:032x}", format="onnx", size=0, kind="conv")
                s.add(artifact)
                s.flush()
                settings = JobSettings(runtime=rs, warmup=1, runs=1, min_seconds=0)
                s.add(jobs.new_job(artifact, team.id, "host/x", settings, campaign_id=campaign.id))
    leased: list[int] = []
    errors: list[str] = []
    result_stats = {"median_ms": 1, "mean_ms": 1, "p10_ms": 1, "p90_ms": 1, "std_ms": 0, "runs": 1}

    def report(db: Database, serial: str, view) -> None:
        leased.append(view.job_id)
        with db.transaction() as s:
            body = JobResult(lease_id=view.lease_id, serial=serial, stats=result_stats)
            jobs.record_result(s, view.job_id, body)

    def work(db: Database, serial: str) -> None:
        try:
            lease_until_empty(db, serial, report)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(db, f"s{i}")) for i, db in enumerate(dbs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors[:3]
    assert sorted(leased) == list(range(1, 91)), "each job leased exactly once, none left behind"
    with dbs[0].sessionmaker() as s:
        assert {j.state for j in s.query(Job)} == {"done"}
        stuck = [c.id for c in s.query(Campaign) if c.state != "done"]
    assert not stuck, f"campaigns whose last result was missed: {stuck}"

    versions: list[int] = []

    def fit(db: Database) -> None:
        try:
            with db.transaction() as s:
                versions.append(store.new_version(s, "host/x", rs.key()).version)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=fit, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert sorted(versions) == list(range(1, 9))
    for db in dbs:
        db.dispose()
