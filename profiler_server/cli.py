"""``profiler-server``: run the farm coordinator; ``--host-device`` also runs a host-CPU agent."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from profiler_server import auth
from profiler_server.app import create_app
from profiler_server.settings import Settings
from shared.version import add_version_flag

log = logging.getLogger("profiler_server")


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


def agent_command(port: int, token: str) -> list[str]:
    exe = Path(sys.executable).with_name("phone-agent")
    binary = str(exe) if exe.exists() else shutil.which("phone-agent")
    if binary is None:
        raise FileNotFoundError("phone-agent not found: install the project (pip install -e .) first")
    return [binary, "--server", f"http://127.0.0.1:{port}", "--token", token, "--host-device", "--no-adb"]


def issue_agent_token(app) -> str:  # noqa: ANN001 - a FastAPI app
    with app.state.db.session() as session:
        return auth.issue_token(session, "agent", name="host-device (profiler-server --host-device)")


def start_agent_when_ready(server: uvicorn.Server, command: list[str], holder: dict) -> None:
    """Start the agent once the server accepts connections (it registers on start)."""
    deadline = time.monotonic() + 60
    while not server.started and not server.should_exit and time.monotonic() < deadline:
        time.sleep(0.1)
    if server.started and not server.should_exit:
        holder["proc"] = subprocess.Popen(command)
        print(f"host-device agent started (pid {holder['proc'].pid})", flush=True)


def stop_agent(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    except (ArgumentError, SQLAlchemyError, OSError, ValueError) as exc:
        print(f"profiler-server: cannot open the database {args.db or '(default)'}: {exc}", file=sys.stderr)
        return 2
    if app.state.generated_admin_token:
        print(f"admin token (shown once; also in {settings.data_dir / 'admin_token'}):", flush=True)
        print(app.state.generated_admin_token, flush=True)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    holder: dict = {}
    if args.host_device:
        try:
            command = agent_command(args.port, issue_agent_token(app))
        except FileNotFoundError as exc:
            print(f"profiler-server: {exc}", file=sys.stderr)
            return 2
        threading.Thread(target=start_agent_when_ready, args=(server, command, holder), daemon=True).start()
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turning them into SystemExit
    # here lets the finally block stop the agent instead of the process dying on the spot.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        stop_agent(holder.get("proc"))
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
