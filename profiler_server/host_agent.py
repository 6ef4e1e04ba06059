"""The built-in host-CPU agent of ``profiler-server --host-device``: its token, its command line,
and a supervisor that starts it once the server answers, restarts it when it dies and, at
shutdown, stops it before the server (so a measurement in hand is reported or its lease released
while the server still answers).

The token lives in ``<data>/host_agent_token`` (mode 0600) and is reused on every start while it
is valid; a lost or revoked one is replaced and every earlier host-agent token revoked. It reaches
the agent through the environment (``RTSEG_AGENT_TOKEN``), never its command line (``ps`` shows
that to every user of the machine).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select, update

from profiler_server import auth
from profiler_server.db import Database, Token

log = logging.getLogger(__name__)
TOKEN_NAME = "host-device (profiler-server --host-device)"
TOKEN_FILE = "host_agent_token"
RESTART_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # after quick successive deaths; reset once it ran a minute


def host_agent_token(db: Database, data_dir: Path) -> str:
    """The host agent's token: the stored one while valid, else a new one (earlier ones revoked)."""
    path = data_dir / TOKEN_FILE
    stored = path.read_text().strip() if path.is_file() else ""
    with db.transaction() as session:
        if stored:
            row = session.scalar(select(Token).where(Token.token_hash == auth.hash_token(stored)))
            if row is not None and not row.revoked and row.role == "agent":
                return stored
        session.execute(
            update(Token).where(Token.name == TOKEN_NAME, Token.revoked.is_(False)).values(revoked=True)
        )
        token = auth.issue_token(session, "agent", name=TOKEN_NAME)
    auth.write_secret(path, token)
    return token


def agent_command(port: int, grace_s: float, max_outage_s: float) -> list[str]:
    """``phone-agent`` for this machine's CPU, stopping on its own when this process is gone."""
    return [
        sys.executable, "-m", "android_harness.cli", "--server", f"http://127.0.0.1:{port}",
        "--host-device", "--no-adb", "--shutdown-grace", str(grace_s), "--max-outage", str(max_outage_s),
        "--parent-pid", str(os.getpid()),
    ]  # fmt: skip


class HostAgentSupervisor:
    """Runs the agent process while the server runs; ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, command: list[str], token: str, grace_s: float) -> None:
        self.command = command
        self.env = {**os.environ, "RTSEG_AGENT_TOKEN": token}
        self.grace_s = grace_s
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def run(self, server_ready: Callable[[], bool], timeout_s: float = 60.0) -> None:
        """Wait for the server to answer, then keep the agent running until ``stop()``."""
        deadline = time.monotonic() + timeout_s
        while not server_ready() and time.monotonic() < deadline:
            if self._stopping.wait(0.1):
                return
        quick_deaths = 0
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                self.proc = subprocess.Popen(self.command, env=self.env)
                self.starts += 1
            print(f"host-device agent started (pid {self.proc.pid})", flush=True)
            started = time.monotonic()
            while self.proc.poll() is None:
                if self._stopping.wait(0.5):
                    return
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < 60 else 0
            delay = RESTART_DELAYS_S[min(quick_deaths, len(RESTART_DELAYS_S)) - 1] if quick_deaths else 1.0
            log.warning(
                "host-device agent exited with status %s; restarting in %.0f s", self.proc.returncode, delay
            )
            if self._stopping.wait(delay):
                return

    def stop(self) -> None:
        """Stop supervising and end the agent: it finishes or releases its job within its grace."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=self.grace_s + 10)
        except subprocess.TimeoutExpired:
            log.warning("host-device agent did not stop within %.0f s; killing it", self.grace_s + 10)
            proc.kill()
            proc.wait()
