"""Exports run in a lower-priority worker process: same bytes, another process, gone with the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from profiler_server import export_worker
from shared.config import LIRConfig, MHSAConfig
from shared.kernels import export_config

BLOCKS = [LIRConfig(cin=16, cmid=32, cout=16, h=16, w=16), MHSAConfig(cin=32, heads=2, patch=2, cmid=64, h=8, w=8)]


def test_the_worker_exports_the_same_bytes_in_another_process_at_lower_priority():
    for cfg in BLOCKS:
        assert export_worker.export_in_worker(cfg, "onnx") == export_config(cfg, "onnx")
    worker = export_worker.start_worker().result(timeout=120)
    assert worker != os.getpid()
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + export_worker.WORKER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, worker) == expected


def test_a_killed_worker_is_replaced():
    worker = export_worker.start_worker().result(timeout=120)
    os.kill(worker, signal.SIGKILL)
    assert export_worker.export_in_worker(BLOCKS[0], "onnx") == export_config(BLOCKS[0], "onnx")
    assert export_worker.start_worker().result(timeout=120) not in (worker, os.getpid())


HOLDER = """
import sys
from profiler_server.export_worker import start_worker
if __name__ == "__main__":
    print(start_worker().result(timeout=120), flush=True)
    sys.stdin.read()
"""


def test_the_worker_ends_when_its_server_is_killed(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=env, text=True)  # fmt: skip
    try:
        worker = int(holder.stdout.readline())
        holder.kill()  # kill -9: no atexit, no shutdown
        holder.wait(timeout=30)
        deadline = time.monotonic() + 10 * export_worker.PARENT_CHECK_S + 5
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.2)
        assert not _alive(worker), "the export worker outlived its killed server"
    finally:
        if holder.poll() is None:
            holder.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
