"""A real profiler server on loopback for tests and benches, started one of two ways:

- :class:`ThreadedServer`: an app (``create_app(settings)``) under a real uvicorn in a daemon thread of
  the test process, so the test can reach ``app.state`` (its database) directly; ``stop()`` and
  ``start()`` again serve a new app on the same port (a server restart).
- :class:`ServerProcess`: ``profiler-server`` as its own process (``kill()`` is SIGKILL, no clean
  shutdown), for crash, restart and command-line tests.

Both wait until the server answers and raise, naming the log, when it does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

# The product's own free-port helper (the demo's local farm picks its port with it): one definition.
from search_client.pipeline.localfarm import free_port

__all__ = ["ServerProcess", "ThreadedServer", "free_port"]


class ThreadedServer:
    """``make_app()`` served by uvicorn on 127.0.0.1 in a daemon thread; restartable on its port."""

    def __init__(self, make_app: Callable[[], FastAPI], port: int | None = None) -> None:
        self.make_app = make_app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: FastAPI | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30) -> ThreadedServer:
        self.app = self.make_app()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port} within {timeout} s")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 15) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess:
    """``profiler-server --data DATA_DIR --port PORT ARGS`` as a real process on loopback, its output
    in ``server-<port>.log`` beside the data folder."""

    def __init__(self, data_dir: Path, port: int | None = None, env: dict | None = None,
                 args: tuple[str, ...] = (), workers: int = 1) -> None:
        self.data_dir = data_dir
        self.args = args  # e.g. ("--host-device",)
        self.workers = workers
        self.worker_pids: set[int] = set()  # the processes seen answering /readyz
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> ServerProcess:  # a start imports torch: slow on a busy machine
        cmd = [sys.executable, "-m", "profiler_server.cli", "--data", str(self.data_dir), "--port", str(self.port),
               "--log-level", "warning", "--workers", str(self.workers), *self.args]  # fmt: skip
        self.log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:  # a new connection each time: with several workers, each must be up before use
                r = httpx.get(f"{self.url}/readyz", timeout=1)
                if r.status_code == 200:
                    self.worker_pids.add(r.json()["pid"])
                    if len(self.worker_pids) >= self.workers:
                        return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout} s; see {self.log.name}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
