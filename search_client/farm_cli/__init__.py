"""``rtseg-farm``: the lab's command-line client of a running farm.

    rtseg-farm [--server URL] [--token T] [--json] COMMAND ...

Server URL and token come from the flags or from ``RTSEG_SERVER`` / ``RTSEG_TOKEN``. Each command
prints a readable table by default and one JSON document with ``--json``. Errors exit with status 2
and one line on stderr saying what to fix; an unreachable server exits with status 3.

Commands live in one module per topic (``predict``: predict and measure a model; ``lab``: status,
devices, campaigns, cancel, fit, tokens); each module of this package with ``register(subparsers)``
adds its subcommands, each setting ``func(args, client) -> exit code``.
"""

from __future__ import annotations

import argparse
import os
import sys

from search_client.remote import ProfilerClient, RemoteError, ServiceUnavailable
from shared.version import add_version_flag

DEFAULT_SERVER = "http://127.0.0.1:8000"


class UsageError(Exception):
    """Bad command-line input; the message says what to fix."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtseg-farm", description="Client of a running rtseg farm.")
    add_version_flag(parser)
    parser.add_argument("--server", default=os.environ.get("RTSEG_SERVER", DEFAULT_SERVER),
                        help="farm URL (default RTSEG_SERVER or %(default)s)")
    parser.add_argument("--token", default=os.environ.get("RTSEG_TOKEN"),
                        help="bearer token (default RTSEG_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules() -> list:
    """Every public module of this package that defines ``register``, in name order."""
    import pkgutil
    from importlib import import_module

    names = sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))
    modules = [import_module(f"{__name__}.{name}") for name in names]
    return [m for m in modules if hasattr(m, "register")]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with ProfilerClient(args.server, token=args.token) as client:
            return int(args.func(args, client) or 0)
    except UsageError as exc:
        print(f"rtseg-farm: {exc}", file=sys.stderr)
        return 2
    except ServiceUnavailable as exc:
        print(f"rtseg-farm: {exc}", file=sys.stderr)
        return 3
    except RemoteError as exc:
        print(f"rtseg-farm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
