"""``profiler-server``: run the farm coordinator; ``--host-device`` also runs a host-CPU agent."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from uvicorn.supervisors import Multiprocess

from profiler_server.app import SUPERVISOR_PID_ENV, create_app, open_database
from profiler_server.host_agent import HostAgentSupervisor, agent_command, host_agent_token
from profiler_server.settings import Settings
from shared.version import add_version_flag

log = logging.getLogger("profiler_server")
# How long a worker process may take to start (it imports torch: slow on a busy machine) or to
# answer the supervisor's health check before it is replaced.
WORKER_START_S = 120
DRIVER_HINTS = {  # driver module -> what to install
    "psycopg": "install the 'postgres' extra: pip install 'rtseg-farm[postgres]'",
    "psycopg2": "install the 'postgres' extra (pip install 'rtseg-farm[postgres]') and use postgresql+psycopg://",
    "MySQLdb": "pip install mysqlclient, or pip install pymysql and use mysql+pymysql://",
    "pymysql": "pip install pymysql",
    "asyncpg": "the server needs a synchronous driver: use postgresql+psycopg:// with the 'postgres' extra",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="profiler-server", description=__doc__)
    add_version_flag(p)
    p.add_argument("--db", help="SQLAlchemy URL (default sqlite:///<data>/profiler.db; env RTSEG_DB_URL)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 to serve the lab network)")
    p.add_argument("--data", type=Path, help="data folder: artifacts, admin_token (env RTSEG_DATA_DIR)")
    p.add_argument("--host-device", action="store_true", help="also run phone-agent for this machine's CPU")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port and the database (for a database with "
                        "concurrent writers; on SQLite one is faster; --host-device needs 1)")  # fmt: skip
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


def make_settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if args.db:
        overrides["db_url"] = args.db
    if args.data:
        overrides["data_dir"] = args.data
    return Settings(**overrides)


class FarmServer(uvicorn.Server):
    """uvicorn that, on SIGTERM/SIGINT, stops the host agent before itself: the agent reports the
    measurement in hand (or releases its lease) while the server still answers. A second signal
    during that wait gets uvicorn's own handling."""

    def __init__(self, config: uvicorn.Config, agent: HostAgentSupervisor | None = None) -> None:
        super().__init__(config)
        self.agent = agent
        self._agent_stopping = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.agent is None or self._agent_stopping:
            super().handle_exit(sig, frame)
            return
        self._agent_stopping = True
        self._captured_signals.append(sig)  # re-raised after the shutdown, like uvicorn's own

        def agent_then_server() -> None:
            self.agent.stop()
            self.should_exit = True

        threading.Thread(target=agent_then_server, name="stop-host-agent", daemon=True).start()


def database_error(url: str | None, exc: BaseException) -> str:
    """One line for a database that cannot be opened: the URL and message with the password
    hidden, and for a missing driver which package to install."""
    password, shown = None, url or "(default)"
    if url:
        try:
            parsed = make_url(url)
            password, shown = parsed.password, parsed.render_as_string(hide_password=True)
        except ArgumentError:
            pass
    if isinstance(exc, ImportError):
        module = exc.name or str(exc)
        hint = DRIVER_HINTS.get(module, f"install the Python package that provides {module!r}")
        message = f"the database driver {module!r} is not installed: {hint}"
    else:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if password:
        message = message.replace(str(password), "***")
    return f"profiler-server: cannot open the database {shown}: {message}"


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.workers < 1 or (args.workers > 1 and args.host_device):
        why = "--workers must be at least 1" if args.workers < 1 else "--host-device runs with --workers 1"
        print(f"profiler-server: {why}", file=sys.stderr)
        return 2
    try:
        settings = make_settings(args)
        if args.workers > 1:
            return run_workers(args, settings)
        app = create_app(settings)
    except (ArgumentError, SQLAlchemyError, OSError, ValueError, ImportError) as exc:
        print(database_error(args.db or os.environ.get("RTSEG_DB_URL"), exc), file=sys.stderr)
        return 2
    show_generated_token(app.state.generated_admin_token, settings)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5
    )
    agent = None
    if args.host_device:
        token = host_agent_token(app.state.db, settings.data_dir)
        command = agent_command(args.port, settings.host_agent_grace_s, settings.host_agent_max_outage_s)
        agent = HostAgentSupervisor(command, token, settings.host_agent_grace_s)
    server = FarmServer(config, agent)
    if agent is not None:
        ready = lambda: server.started or server.should_exit  # noqa: E731
        threading.Thread(target=agent.run, args=(ready,), name="host-agent", daemon=True).start()
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turning them into SystemExit
    # here lets the finally block run instead of the process dying on the spot.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        if agent is not None:
            agent.stop()  # already stopped on a signal; here when uvicorn failed to start
    return 0 if server.started else 1


def show_generated_token(token: str | None, settings: Settings) -> None:
    if token:
        print(f"admin token (shown once; also in {settings.data_dir / 'admin_token'}):", flush=True)
        print(token, flush=True)


def run_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Serve with ``args.workers`` processes on one listening socket (uvicorn's supervisor restarts
    one that dies). This process migrates the database and makes the admin token first; each
    worker builds the app from the same settings, passed in the environment. Everything the
    workers share is in the database, as for several servers on one PostgreSQL database; request
    histograms in ``/metrics`` are those of the worker that answers."""
    db, generated = open_database(settings)
    db.dispose()
    show_generated_token(generated, settings)
    os.environ["RTSEG_DB_URL"] = settings.database_url
    os.environ["RTSEG_DATA_DIR"] = str(settings.data_dir)
    os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
    config = uvicorn.Config("profiler_server.app:create_app", factory=True, host=args.host, port=args.port,
                            workers=args.workers, log_level=args.log_level, timeout_graceful_shutdown=5,
                            timeout_worker_healthcheck=WORKER_START_S)  # fmt: skip
    Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
