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

from profiler_server.app import create_app
from profiler_server.host_agent import HostAgentSupervisor, agent_command, host_agent_token
from profiler_server.settings import Settings
from shared.version import add_version_flag

log = logging.getLogger("profiler_server")
# How long a thread holding the GIL runs before one waiting for it is let in (Python's default:
# 5 ms). Exports and fits run in threads of the server process; with the default, the event loop
# waited up to 5 ms for the GIL at each step of a request while an export traced a block.
GIL_SWITCH_S = 0.001
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
    try:
        settings = make_settings(args)
        app = create_app(settings)
    except (ArgumentError, SQLAlchemyError, OSError, ValueError, ImportError) as exc:
        print(database_error(args.db or os.environ.get("RTSEG_DB_URL"), exc), file=sys.stderr)
        return 2
    if app.state.generated_admin_token:
        print(f"admin token (shown once; also in {settings.data_dir / 'admin_token'}):", flush=True)
        print(app.state.generated_admin_token, flush=True)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5
    )
    agent = None
    if args.host_device:
        token = host_agent_token(app.state.db, settings.data_dir)
        command = agent_command(args.port, settings.host_agent_grace_s, settings.host_agent_max_outage_s)
        agent = HostAgentSupervisor(command, token, settings.host_agent_grace_s)
    server = FarmServer(config, agent)
    sys.setswitchinterval(GIL_SWITCH_S)
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


if __name__ == "__main__":
    sys.exit(main())
