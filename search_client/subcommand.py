"""What an ``rtseg-search`` subcommand is, shared by the command modules (``search_client.cli`` and
``search_client.pipeline.commands``): a :class:`Command` (help, arguments, run), the
:class:`UsageError` a command raises for input the user has to fix, and the ``--set KEY=VALUE``
parser."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class UsageError(Exception):
    """Input the user has to fix; printed as one line, exit status 2."""


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set train.lr=0.05`` -> nested override dict; values parse as JSON, else as strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set wants KEY=VALUE (e.g. train.lr=0.05), got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
