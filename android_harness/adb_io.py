"""Bounded adb I/O on one device through the adb server: shell with an exit status and a hard
deadline, and the sync protocol (STAT/LIST/SEND) with timeouts (adbutils' own sync has none).

Every adbutils/socket error is converted here, at the boundary, into the harness error family.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import adbutils
from adbutils._adb import AdbConnection
from adbutils.errors import AdbError, AdbTimeout

from android_harness.errors import (
    BenchmarkFailed,
    DeviceOffline,
    HarnessError,
    HarnessTimeout,
    MeasurementAborted,
)

log = logging.getLogger(__name__)

EXIT_MARK = "__RTSEG_EXIT__:"
SYNC_CHUNK = 64 * 1024  # the sync protocol's maximum DATA payload


@dataclass(frozen=True)
class RemoteFile:
    name: str
    mode: int
    size: int
    mtime: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def adb_binary() -> str:
    """The adb executable adbutils uses (adb on PATH, else the one bundled in its wheel)."""
    return adbutils.adb_path()


class _NoStartConnection(AdbConnection):
    """adbutils starts a server when none answers, always on the default port whatever port was
    asked for; for an explicit port that would leave a stray server on 5037, so just fail."""

    def _safe_connect(self) -> socket.socket:
        return self._create_socket()


class HarnessAdbClient(adbutils.AdbClient):
    """AdbClient that auto-starts the adb server only when using the default server."""

    def __init__(self, host: str, port: int | None, timeout_s: float, autostart: bool) -> None:
        super().__init__(host=host, port=port, socket_timeout=timeout_s)
        self._timeout_s, self._autostart = timeout_s, autostart

    def make_connection(self, timeout: float | None = None) -> AdbConnection:
        if self._autostart:
            return super().make_connection(timeout)
        conn = _NoStartConnection(self.host, self.port)
        conn.conn.settimeout(timeout or self._timeout_s)
        return conn


def adb_client(port: int | None = None, host: str = "127.0.0.1", timeout_s: float = 30.0) -> adbutils.AdbClient:
    """Client of the adb server (``ANDROID_ADB_SERVER_PORT`` or 5037 unless ``port`` is given); every
    request to the server itself (device list, version) is bounded by ``timeout_s``. Like the adb
    command line, it starts the default server when none runs; an explicit port is never started."""
    return HarnessAdbClient(host, port, timeout_s, autostart=port is None)


def adb_server_answers(client: adbutils.AdbClient) -> bool:
    """True when something accepts connections on the client's adb server port."""
    try:
        socket.create_connection((client.host, client.port), timeout=1.0).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def no_stray_server(client: adbutils.AdbClient) -> Iterator[adbutils.AdbClient]:
    """Use ``client``; on leaving, kill the adb server if this block started it (adbutils starts
    one when none answers), so a one-off command leaves no daemon behind. A server that was
    already running is left alone."""
    was_running = adb_server_answers(client)
    try:
        yield client
    finally:
        if not was_running and adb_server_answers(client):
            log.info("stopping the adb server this command started on port %d", client.port)
            with contextlib.suppress(AdbError, OSError):
                client.server_kill()


def list_serials(client: adbutils.AdbClient) -> list[str]:
    """Serials of devices in state ``device`` (authorized and online)."""
    with convert_errors("list devices"):
        return [info.serial for info in client.list() if info.state == "device"]


@contextlib.contextmanager
def convert_errors(what: str, serial: str = "") -> Iterator[None]:
    """adbutils/socket errors -> DeviceOffline / HarnessTimeout with the original message."""
    try:
        yield
    except HarnessError:
        raise
    except (AdbTimeout, TimeoutError) as exc:
        raise HarnessTimeout(f"adb {what} on {serial or 'adb server'} timed out: {exc}", str(exc)) from exc
    except AdbError as exc:
        raise DeviceOffline(f"adb {what} failed on {serial or 'adb server'}: {exc}", str(exc)) from exc
    except (OSError, EOFError) as exc:
        raise DeviceOffline(f"adb {what}: connection to {serial or 'adb server'} lost ({exc})", str(exc)) from exc


class DeviceIO:
    """Shell and file transfer on one device, every call bounded by a timeout."""

    def __init__(self, client: adbutils.AdbClient, serial: str, timeout_s: float = 30.0,
                 abort: threading.Event | None = None) -> None:
        self.abort = abort or threading.Event()  # set: a running shell command is abandoned (and killed)
        self.client = client
        self.serial = serial
        self.timeout_s = timeout_s
        self._tport: bool | None = None

    # --- transport -------------------------------------------------------------------------

    def _open_transport(self, timeout: float) -> adbutils.AdbConnection:
        """A connection switched to this device. adbutils asks the server's version on every call;
        it is asked once here (one round trip less per adb call)."""
        if self._tport is None:
            self._tport = self.client.server_version() >= 41
        conn = self.client.make_connection(timeout=timeout)
        # small request/reply exchanges (sync headers, DONE): without NODELAY, Nagle + delayed ACK add ~40 ms
        conn.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self._tport:
                conn.send_command(f"host:tport:serial:{self.serial}")
                conn.check_okay()
                conn.read_exact(8)  # transport id
            else:
                conn.send_command(f"host:transport:{self.serial}")
                conn.check_okay()
        except BaseException:
            conn.close()
            raise
        return conn

    # --- shell -------------------------------------------------------------------------------

    def shell(self, args: Sequence[str] | str, timeout_s: float | None = None) -> tuple[int, str]:
        """Run a command (argument list, quoted here; a str is passed as is) -> (exit status, output)."""
        rc, out, _ = self.shell_then(args, "", timeout_s)
        return rc, out

    def shell_then(self, args: Sequence[str] | str, epilogue: str, timeout_s: float | None = None
                   ) -> tuple[int, str, str]:
        """Like :meth:`shell`, then run the fixed ``epilogue`` command in the same round trip (e.g.
        reading temperatures right after a benchmark) -> (status, output, epilogue output)."""
        cmd = args if isinstance(args, str) else shlex.join(args)
        timeout = timeout_s or self.timeout_s
        deadline = time.monotonic() + timeout
        tail = f"; {epilogue}" if epilogue else ""
        with convert_errors(f"shell {cmd[:80]!r}", self.serial):
            conn = self._open_transport(timeout)
            try:
                conn.send_command(f"shell:{cmd}; echo {EXIT_MARK}$?{tail}")
                conn.check_okay()
                raw = self._read_until_close(conn.conn, deadline, cmd)
            finally:
                conn.close()
        return self._split_exit(cmd, raw.decode("utf-8", errors="replace"))

    def check_output(self, args: Sequence[str] | str, timeout_s: float | None = None) -> str:
        rc, out = self.shell(args, timeout_s)
        if rc != 0:
            cmd = args if isinstance(args, str) else shlex.join(args)
            raise BenchmarkFailed(f"`{cmd}` exited with status {rc} on {self.serial}: {out.strip()[-300:]}", out)
        return out

    def _read_until_close(self, sock: socket.socket, deadline: float, cmd: str) -> bytes:
        chunks: list[bytes] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HarnessTimeout(f"`{cmd[:120]}` on {self.serial} ran past its time limit",
                                     b"".join(chunks).decode("utf-8", errors="replace"))
            if self.abort.is_set():
                raise MeasurementAborted(f"`{cmd[:120]}` on {self.serial} aborted",
                                         b"".join(chunks).decode("utf-8", errors="replace"))
            sock.settimeout(min(remaining, 0.25))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue  # loop re-checks the deadline and raises with the output so far
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _split_exit(self, cmd: str, out: str) -> tuple[int, str, str]:
        idx = out.rfind(EXIT_MARK)
        if idx < 0:
            # the stream ended without our exit marker: the transport died under the command
            state = self.state()
            if state != "device":
                raise DeviceOffline(f"device {self.serial} went offline (adb state: {state}) while running "
                                    f"`{cmd[:120]}`", out)
            raise BenchmarkFailed(f"`{cmd[:120]}` on {self.serial} ended without an exit status", out)
        status, _, epilogue = out[idx + len(EXIT_MARK):].partition("\n")
        status = status.strip()
        return (int(status) if status.isdigit() else 255), out[:idx], epilogue

    def state(self) -> str:
        """``device``, ``offline``, ... or ``absent`` when the adb server no longer lists it."""
        try:
            for info in self.client.list():
                if info.serial == self.serial:
                    return info.state
        except (AdbError, OSError) as exc:
            log.warning("adb server unreachable while checking %s: %s", self.serial, exc)
            return "unreachable"
        return "absent"

    # --- sync protocol -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _sync(self, what: str) -> Iterator[socket.socket]:
        with convert_errors(what, self.serial):
            conn = self._open_transport(self.timeout_s)
            try:
                conn.send_command("sync:")
                conn.check_okay()
                yield conn.conn
                conn.conn.sendall(b"QUIT" + struct.pack("<I", 0))
            finally:
                conn.close()

    @staticmethod
    def _request(sock: socket.socket, cmd: bytes, path: str) -> None:
        data = path.encode("utf-8")
        sock.sendall(cmd + struct.pack("<I", len(data)) + data)

    @staticmethod
    def _read_exact(sock: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"sync stream closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def stat(self, path: str) -> RemoteFile | None:
        """None when the path does not exist."""
        with self._sync(f"stat {path}") as sock:
            self._request(sock, b"STAT", path)
            head = self._read_exact(sock, 16)
            if head[:4] != b"STAT":
                raise DeviceOffline(f"bad sync STAT reply {head[:4]!r} from {self.serial}")
            mode, size, mtime = struct.unpack("<III", head[4:])
        return None if mode == 0 else RemoteFile(path.rsplit("/", 1)[-1], mode, size, mtime)

    def listdir(self, path: str) -> list[RemoteFile]:
        entries = []
        with self._sync(f"list {path}") as sock:
            self._request(sock, b"LIST", path)
            while True:
                head = self._read_exact(sock, 20)
                if head[:4] == b"DONE":
                    break
                mode, size, mtime, namelen = struct.unpack("<IIII", head[4:])
                name = self._read_exact(sock, namelen).decode("utf-8", errors="replace")
                if name not in (".", ".."):
                    entries.append(RemoteFile(name, mode, size, mtime))
        return entries

    def push(self, local: Path, remote: str, mode: int = 0o644) -> int:
        """Push a local file; returns bytes sent. The device creates missing parent folders."""
        total = 0
        with self._sync(f"push {remote}") as sock, open(local, "rb") as src:
            self._request(sock, b"SEND", f"{remote},{stat.S_IFREG | mode}")
            while chunk := src.read(SYNC_CHUNK):
                sock.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                total += len(chunk)
            sock.sendall(b"DONE" + struct.pack("<I", int(time.time())))
            reply = self._read_exact(sock, 8)
            if reply[:4] != b"OKAY":
                size = struct.unpack("<I", reply[4:])[0]
                message = self._read_exact(sock, size).decode("utf-8", errors="replace")
                raise HarnessError(f"push of {local.name} to {self.serial}:{remote} failed: {message}", message)
        return total
