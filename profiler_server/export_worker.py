"""Block and kernel exports in a worker process, so that tracing a block never holds the server's GIL.

An export traces a PyTorch module in Python for 0.1-0.3 s; in a thread of the server it held the
GIL for most of that time, and every prediction answered meanwhile waited for it (single-block p99
1.4-3.0x idle during a campaign on a loaded 2-core machine). One worker process, started with the
exporter and kept for the server's life, runs ``shared.kernels.export_config`` at a lower CPU
priority (requests come first when the cores are busy); the export thread only waits for it. The
bytes are those of an export in the server process (the export is deterministic: weights seeded
from the config). The worker ends itself when the server process is gone (even after kill -9),
and if no worker can be started the export runs in the calling thread, as before.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from shared.kernels import export_config

log = logging.getLogger(__name__)
WORKER_NICE = 10  # below the server, not so low that a busy machine starves the campaign
PARENT_CHECK_S = 1.0

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_unavailable = False  # no worker could be started here: export in the calling thread


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:  # re-parented: the server is gone
            os._exit(0)


def _start_worker(parent: int) -> None:
    os.nice(WORKER_NICE)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    import torch

    torch.set_num_threads(1)  # one small block at a time: no intra-op threads spinning on the other core
    import torch.onnx  # noqa: F401


def _worker_pool() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            context = multiprocessing.get_context("spawn")  # the server has threads: never fork it
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_start_worker,
                                        initargs=(os.getpid(),))  # fmt: skip
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def start_worker() -> Future | None:
    """Start the worker now (its imports take seconds), so that the first export need not wait."""
    if _unavailable:
        return None
    try:
        return _worker_pool().submit(os.getpid)
    except (BrokenProcessPool, RuntimeError, OSError) as exc:
        log.warning("no export worker process (%s); exports run in the server process", exc)
        return None


def export_in_worker(cfg, fmt: str) -> bytes:  # noqa: ANN001 - block or kernel config
    """``export_config(cfg, fmt)`` run in the export worker process (a worker that died is
    replaced once; with none to be had, the export runs here)."""
    global _unavailable
    for _ in range(2):
        if _unavailable:
            break
        pool = _worker_pool()
        try:
            future = pool.submit(export_config, cfg, fmt)
        except (BrokenProcessPool, RuntimeError, OSError) as exc:  # no process can start here
            _discard(pool)
            log.warning("could not start the export worker process (%s)", exc)
            continue
        try:
            return future.result()  # the export's own errors are raised as they are
        except BrokenProcessPool as exc:
            _discard(pool)
            log.warning("the export worker process died (%s); starting a new one", exc)
    else:
        _unavailable = True
        log.warning("no export worker process could be started; exports run in the server process")
    return export_config(cfg, fmt)


def stop_worker() -> None:
    """End the worker process (at interpreter exit; an export started later starts a new one)."""
    with _lock:
        pool = _pool
    if pool is not None:
        _discard(pool)


atexit.register(stop_worker)
