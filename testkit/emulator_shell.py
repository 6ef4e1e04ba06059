"""The small ``sh`` of the adb device emulator: enough of toybox/mksh for what the harness runs.

Supports ``;``/``&&``/``||`` lists, single/double quotes, ``$?``, globs, ``2>/dev/null``-style
redirections, ``VAR=value`` prefixes, and the commands getprop, cat, grep, df, ls, rm, mkdir, chmod,
echo, sleep, true/false, taskset, plus running pushed executables (python stand-ins run with this
interpreter). Device paths map into the emulator's root folder.
"""

from __future__ import annotations

import glob
import os
import posixpath
import re
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]  # the folder holding testkit/

Writer = Callable[[bytes], None]
_OPS = (";", "&&", "||")


@dataclass
class Word:
    text: str
    globbed: bool = False  # contains an unquoted * ? or [


@dataclass
class Command:
    words: list[Word] = field(default_factory=list)
    redirects: list[tuple[str, str]] = field(default_factory=list)  # (fd-op, target)


def tokenize(line: str) -> list[Word | str]:
    """Words and operators, quotes removed (``$?`` is left for expansion when the command runs)."""
    tokens: list[Word | str] = []
    buf: list[str] = []
    globbed = False
    in_word = False
    i = 0

    def flush() -> None:
        nonlocal buf, globbed, in_word
        if in_word:
            tokens.append(Word("".join(buf), globbed))
        buf, globbed, in_word = [], False, False

    while i < len(line):
        c = line[i]
        if c in " \t\n":
            flush()
        elif line.startswith(("&&", "||"), i):
            flush()
            tokens.append(line[i:i + 2])
            i += 1
        elif c == ";":
            flush()
            tokens.append(";")
        elif c == ">" or (c in "12" and line.startswith(">", i + 1) and not in_word):
            flush()
            m = re.match(r"[12]?>>?(&[12])?", line[i:])
            assert m is not None
            tokens.append(m.group(0))
            i += len(m.group(0)) - 1
        elif c == "'":
            end = line.index("'", i + 1)
            buf.append(line[i + 1:end])
            in_word, i = True, end
        elif c == '"':
            end = line.index('"', i + 1)
            buf.append(line[i + 1:end])
            in_word, i = True, end
        elif c == "\\" and i + 1 < len(line):
            buf.append(line[i + 1])
            in_word, i = True, i + 1
        else:
            globbed = globbed or c in "*?["
            buf.append(c)
            in_word = True
        i += 1
    flush()
    return tokens


def split_commands(tokens: list[Word | str]) -> list[tuple[str, Command]]:
    """[(operator joining it to the previous one, command), ...]"""
    out: list[tuple[str, Command]] = []
    op, cmd = ";", Command()
    it = iter(tokens)
    for tok in it:
        if isinstance(tok, str) and tok in _OPS:
            out.append((op, cmd))
            op, cmd = tok, Command()
        elif isinstance(tok, str):
            target = tok.split("&", 1)[1] if "&" in tok else next(it, Word("")).text  # type: ignore[union-attr]
            cmd.redirects.append((tok.split("&", 1)[0], target))
        else:
            cmd.words.append(tok)
    out.append((op, cmd))
    return [(o, c) for o, c in out if c.words]


class DeviceShell:
    """Interprets one ``shell:`` command line against the emulated device."""

    def __init__(self, device: EmulatedFS, write: Writer, cancelled: Callable[[], bool]) -> None:
        self.fs = device
        self.write = write
        self.cancelled = cancelled
        self.status = 0

    def run(self, line: str) -> int:
        for op, cmd in self._commands(line):
            if (op == "&&" and self.status != 0) or (op == "||" and self.status == 0):
                continue
            if self.cancelled():
                break
            self.status = self._run_command(cmd)
        return self.status

    def _commands(self, line: str) -> list[tuple[str, Command]]:
        return split_commands(tokenize(line))

    def _run_command(self, cmd: Command) -> int:
        out, err = self._outputs(cmd.redirects)
        args = self._expand(cmd.words)
        env = {}
        while args and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", args[0]):
            key, _, value = args.pop(0).partition("=")
            env[key] = value
        if not args:
            return 0
        return Builtins(self, out, err, env).call(args)

    def _outputs(self, redirects: list[tuple[str, str]]) -> tuple[Writer, Writer]:
        out: Writer = self.write
        err: Writer = self.write
        for op, target in redirects:
            sink = self._sink(target, op.endswith(">>"))
            if op.startswith("2"):
                err = out if target == "1" else sink
            else:
                out = err if target == "2" else sink
        return out, err

    def _sink(self, target: str, append: bool) -> Writer:
        if target in ("/dev/null", "1", "2"):
            return lambda data: None
        path = self.fs.host_path(target)
        mode = "ab" if append else "wb"
        path.open(mode).close()

        def write(data: bytes) -> None:
            with path.open("ab") as f:
                f.write(data)
        return write

    def _expand(self, words: list[Word]) -> list[str]:
        args: list[str] = []
        for w in words:
            text = w.text.replace("$?", str(self.status)) if "$?" in w.text else w.text
            if w.globbed:
                matches = self.fs.glob(text)
                args.extend(matches or [text])
            else:
                args.append(text)
        return args


class EmulatedFS:
    """The device's file system, mapped into a host folder (``root``)."""

    def __init__(self, root: Path, props: dict[str, str], capacity_kb: int) -> None:
        self.root = root
        self.props = props
        self.capacity_kb = capacity_kb
        self.exec_log: list[tuple[list[str], float]] = []  # (argv, wall seconds) of every executable run
        self.command_log: list[str] = []
        self.processes: set[subprocess.Popen] = set()

    def host_path(self, device_path: str) -> Path:
        norm = posixpath.normpath("/" + device_path.lstrip("/"))
        return self.root / norm.lstrip("/")

    def device_path(self, host: str) -> str:
        return "/" + os.path.relpath(host, self.root).replace(os.sep, "/")

    def glob(self, pattern: str) -> list[str]:
        if not pattern.startswith("/"):
            pattern = "/data/local/tmp/" + pattern
        hits = glob.glob(str(self.root) + posixpath.normpath(pattern))
        return sorted(self.device_path(h) for h in hits)

    def used_kb(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.root / "data"):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
        return total // 1024


class Builtins:
    """The commands; each returns an exit status and writes to ``out``/``err``."""

    def __init__(self, shell: DeviceShell, out: Writer, err: Writer, env: dict[str, str]) -> None:
        self.shell, self.fs, self.out, self.err, self.env = shell, shell.fs, out, err, env

    def call(self, args: list[str]) -> int:
        name = args[0]
        method = getattr(self, "cmd_" + name, None) if re.fullmatch(r"[a-z]+", name) else None
        if method is not None:
            return method(args[1:])
        if "/" in name:
            return self.run_executable(args)
        self.err(f"/system/bin/sh: {name}: inaccessible or not found\n".encode())
        return 127

    def _say(self, text: str, to_err: bool = False) -> None:
        (self.err if to_err else self.out)(text.encode())

    @staticmethod
    def _options(args: list[str]) -> tuple[set[str], list[str]]:
        opts: set[str] = set()
        rest = list(args)
        while rest and rest[0].startswith("-") and len(rest[0]) > 1:
            opts.update(rest.pop(0)[1:])
        return opts, rest

    def cmd_echo(self, args: list[str]) -> int:
        self._say(" ".join(args) + "\n")
        return 0

    def cmd_true(self, args: list[str]) -> int:
        return 0

    def cmd_false(self, args: list[str]) -> int:
        return 1

    def cmd_sleep(self, args: list[str]) -> int:
        deadline = time.monotonic() + float(args[0] if args else 0)
        while time.monotonic() < deadline and not self.shell.cancelled():
            time.sleep(0.02)
        return 0

    def cmd_getprop(self, args: list[str]) -> int:
        if args:
            self._say(self.fs.props.get(args[0], "") + "\n")
        else:
            self._say("".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.fs.props.items())))
        return 0

    def _read(self, path: str) -> bytes | None:
        host = self.fs.host_path(path)
        if host.is_dir():
            self._say(f"{path}: Is a directory\n", to_err=True)
            return None
        try:
            return host.read_bytes()
        except OSError:
            self._say(f"{path}: No such file or directory\n", to_err=True)
            return None

    def cmd_cat(self, args: list[str]) -> int:
        status = 0
        for path in args:
            data = self._read(path)
            if data is None:
                status = 1
            else:
                self.out(data)
        return status

    def cmd_grep(self, args: list[str]) -> int:
        opts, rest = self._options(args)
        if not rest:
            self._say("usage: grep [-Hhsv] PATTERN [FILE...]\n", to_err=True)
            return 2
        pattern, files = re.compile(rest[0]), rest[1:]
        named = ("H" in opts or len(files) > 1) and "h" not in opts
        found, status = False, 0
        for path in files:
            data = self._read(path)
            if data is None:
                status = 2
                continue
            for line in data.decode(errors="replace").splitlines():
                if bool(pattern.search(line)) != ("v" in opts):
                    found = True
                    self._say(f"{path}:{line}\n" if named else line + "\n")
        return status if status and not found else (0 if found else 1)

    def cmd_df(self, args: list[str]) -> int:
        used = self.fs.used_kb()
        avail = max(self.fs.capacity_kb - used, 0)
        pct = 100 * used // max(self.fs.capacity_kb, 1)
        self._say("Filesystem      1K-blocks    Used Available Use% Mounted on\n"
                  f"/dev/block/dm-5 {self.fs.capacity_kb} {used} {avail} {pct}% /data\n")
        return 0

    def cmd_ls(self, args: list[str]) -> int:
        _, paths = self._options(args)
        status = 0
        for path in paths or ["/data/local/tmp"]:
            host = self.fs.host_path(path)
            if host.is_dir():
                self._say("".join(name + "\n" for name in sorted(os.listdir(host))))
            elif host.exists():
                self._say(path + "\n")
            else:
                self._say(f"ls: {path}: No such file or directory\n", to_err=True)
                status = 1
        return status

    def cmd_rm(self, args: list[str]) -> int:
        opts, paths = self._options(args)
        status = 0
        for path in paths:
            host = self.fs.host_path(path)
            if host.is_dir() and "r" in opts:
                shutil.rmtree(host)
            elif host.is_file() or host.is_symlink():
                host.unlink()
            elif "f" not in opts:
                self._say(f"rm: {path}: No such file or directory\n", to_err=True)
                status = 1
        return status

    def cmd_mkdir(self, args: list[str]) -> int:
        opts, paths = self._options(args)
        for path in paths:
            self.fs.host_path(path).mkdir(parents="p" in opts, exist_ok="p" in opts)
        return 0

    def cmd_chmod(self, args: list[str]) -> int:
        if len(args) < 2 or not re.fullmatch(r"[0-7]{3,4}", args[0]):
            self._say("chmod: only octal modes are supported here\n", to_err=True)
            return 1
        for path in args[1:]:
            os.chmod(self.fs.host_path(path), int(args[0], 8))
        return 0

    def cmd_taskset(self, args: list[str]) -> int:
        # the host's cores are not the phone's: the mask is recorded (exec_log) but not applied
        if len(args) < 2 or not re.fullmatch(r"(0x)?[0-9a-fA-F]+", args[0]):
            self._say("usage: taskset MASK COMMAND...\n", to_err=True)
            return 1
        self.env["__TASKSET__"] = args[0]
        return self.call(args[1:])

    def _map_arg(self, arg: str) -> str:
        key, sep, value = arg.partition("=")
        if sep and value.startswith("/") and key.startswith("-"):
            return f"{key}={self.fs.host_path(value)}"
        return str(self.fs.host_path(arg)) if arg.startswith("/") else arg

    def run_executable(self, args: list[str]) -> int:
        host = self.fs.host_path(args[0])
        if not host.is_file():
            self._say(f"/system/bin/sh: {args[0]}: inaccessible or not found\n", to_err=True)
            return 127
        if not os.access(host, os.X_OK):
            self._say(f"/system/bin/sh: {args[0]}: can't execute: Permission denied\n", to_err=True)
            return 126
        with host.open("rb") as f:
            first_line = f.readline(200)
        prefix = [sys.executable] if first_line.startswith(b"#!") and b"python" in first_line else []
        argv = prefix + [str(host)] + [self._map_arg(a) for a in args[1:]]
        return self._spawn(args, argv)

    def _spawn(self, device_argv: list[str], argv: list[str]) -> int:
        env = {**os.environ, **{k: v for k, v in self.env.items() if not k.startswith("__")}}
        # A pushed stand-in runs from the device folder, away from testkit/ (which is never installed):
        # the device "has" its tool's runtime, as a phone has the benchmark tool's libraries.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT), env.get("PYTHONPATH")) if p)
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                cwd=self.fs.host_path("/data/local/tmp"), start_new_session=True)
        self.fs.processes.add(proc)
        try:
            self._pump(proc)
            return proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self.fs.processes.discard(proc)
            self.fs.exec_log.append((([f"taskset {self.env['__TASKSET__']}"] if "__TASKSET__" in self.env else [])
                                     + device_argv, time.perf_counter() - started))

    def _pump(self, proc: subprocess.Popen) -> None:
        """Forward the child's stdout/stderr while it runs; kill it when the shell stream closes."""
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, self.out)
        sel.register(proc.stderr, selectors.EVENT_READ, self.err)
        open_pipes = 2
        while open_pipes:
            if self.shell.cancelled():
                proc.kill()
                return
            for key, _ in sel.select(timeout=0.05):
                data = os.read(key.fd, 65536)
                if data:
                    key.data(data)
                else:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
        sel.close()
