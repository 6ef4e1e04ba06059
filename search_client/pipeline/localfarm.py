"""A local profiler farm as a child process: ``profiler-server --db URL --port N --host-device``.

Used by the demo, the end-to-end test and the benchmark. The server runs in its own process group
so that stopping it (also on Ctrl-C) takes its host agent down with it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command() -> list[str]:
    """The ``profiler-server`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "profiler-server"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from profiler_server.cli import main; main()"]


class FarmError(RuntimeError):
    pass


class LocalFarm:
    """Start/stop one profiler server with its host agent; ``url`` and ``token`` once started."""

    def __init__(self, db_path: Path, log_path: Path, port: int | None = None, extra_args: list[str] | None = None,
                 data_dir: Path | None = None):
        """``data_dir`` (artifacts, admin token) defaults to ``<db folder>/profiler-data``."""
        self.db_path = Path(db_path)
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.data_dir = Path(data_dir) if data_dir else self.db_path.parent / "profiler-data"
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = server_command() + ["--db", f"sqlite:///{self.db_path}", "--port", str(self.port), "--host-device",
                                  "--data", str(self.data_dir)]
        return cmd + self.extra_args

    def start(self, timeout: float = 60.0) -> LocalFarm:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logfile = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log.info("starting %s", " ".join(self.command()))
        self.proc = subprocess.Popen(
            self.command(), stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
        logfile.close()
        try:
            self._wait_ready(timeout)
            self.token = self._read_token(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise FarmError(f"profiler-server exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise FarmError(f"profiler-server not ready on {self.url} after {timeout:.0f} s; see {self.log_path}")

    def _read_token(self, timeout: float) -> str | None:
        # The server writes its generated admin token to <data_dir>/admin_token at first start.
        path = self.data_dir / "admin_token"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().strip():
                return path.read_text().strip()
            time.sleep(0.25)
        raise FarmError(f"profiler-server wrote no admin token to {path}; see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever is left after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("profiler-server did not stop within %.0f s; killing it", timeout)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LocalFarm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
