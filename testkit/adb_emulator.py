"""A device-side emulator of the adb transport protocol on loopback TCP, for tests and benchmarks.

No adbd exists for this machine, so this plays the phone: a real adb server reaches it with
``adb connect 127.0.0.1:PORT`` and speaks the wire protocol (24-byte little-endian header: command,
arg0, arg1, data length, data checksum, command ^ 0xffffffff; messages CNXN / OPEN / OKAY / WRTE /
CLSE). Services: ``shell:``/``exec:`` (run by :mod:`testkit.emulator_shell`) and ``sync:``
(STAT, LIST, SEND, RECV, QUIT). The device's file system is a folder on the host; fake sysfs files
give CPU max frequencies and thermal zones. :meth:`DeviceEmulator.kill` drops the connection like an
unplugged cable.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import adbutils

from android_harness.adb_io import adb_binary, adb_client
from testkit.emulator_shell import DeviceShell, EmulatedFS

log = logging.getLogger(__name__)

A_CNXN, A_OPEN, A_OKAY = 0x4E584E43, 0x4E45504F, 0x59414B4F
A_WRTE, A_CLSE, A_AUTH = 0x45545257, 0x45534C43, 0x48545541
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024
_HEADER = struct.Struct("<6I")
_ACK_TIMEOUT_S = 30.0

PIXEL_LIKE_FREQS = (1803000,) * 4 + (2348000,) * 2 + (2850000,) * 2


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("adb server closed the transport")
        buf += chunk
    return bytes(buf)


class _Stream:
    """One adb stream (a service instance) with the protocol's one-WRTE-in-flight flow control."""

    def __init__(self, transport: _Transport, local_id: int, remote_id: int) -> None:
        self.transport, self.local_id, self.remote_id = transport, local_id, remote_id
        self._inbox = bytearray()
        self._cond = threading.Condition()
        self._can_write = threading.Event()
        self._can_write.set()
        self.closed = False

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._inbox += data
            self._cond.notify_all()

    def acked(self) -> None:
        self._can_write.set()

    def peer_closed(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._can_write.set()

    def read_exact(self, n: int) -> bytes:
        with self._cond:
            while len(self._inbox) < n:
                if self.closed:
                    raise EOFError("stream closed by the adb server")
                self._cond.wait(timeout=1.0)
            data = bytes(self._inbox[:n])
            del self._inbox[:n]
            return data

    def write(self, data: bytes) -> None:
        step = self.transport.max_payload
        for start in range(0, len(data), step):
            if not self._can_write.wait(_ACK_TIMEOUT_S) or self.closed:
                raise EOFError("stream closed before the adb server acknowledged our data")
            self._can_write.clear()
            self.transport.send(A_WRTE, self.local_id, self.remote_id, data[start:start + step])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.send(A_CLSE, self.local_id, self.remote_id)
            self.transport.forget(self.local_id)


class _Transport:
    """One connection from the adb server."""

    def __init__(self, emulator: DeviceEmulator, sock: socket.socket) -> None:
        self.emulator, self.sock = emulator, sock
        self.max_payload = 4096
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count(1)

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        header = _HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF)
        with self._send_lock:
            try:
                self.sock.sendall(header + data)
            except OSError as exc:
                raise EOFError(f"transport closed: {exc}") from exc

    def forget(self, local_id: int) -> None:
        self._streams.pop(local_id, None)

    def serve(self) -> None:
        try:
            while True:
                command, arg0, arg1, length, _, magic = _HEADER.unpack(_recv_exact(self.sock, _HEADER.size))
                payload = _recv_exact(self.sock, length) if length else b""
                if magic != command ^ 0xFFFFFFFF:
                    log.warning("bad adb header magic; dropping the transport")
                    return
                self._dispatch(command, arg0, arg1, payload)
        except (EOFError, OSError):
            pass
        finally:
            for stream in list(self._streams.values()):
                stream.peer_closed()
            self.sock.close()

    def _dispatch(self, command: int, arg0: int, arg1: int, payload: bytes) -> None:
        if command == A_CNXN:
            self.max_payload = max(4096, min(arg1, MAX_PAYLOAD))
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.emulator.banner())
        elif command == A_OPEN:
            self._open(arg0, payload.rstrip(b"\0").decode("utf-8", errors="replace"))
        elif command in (A_OKAY, A_WRTE, A_CLSE):
            stream = self._streams.get(arg1)
            if stream is None:
                if command == A_WRTE:
                    self.send(A_CLSE, 0, arg0)
                return
            if command == A_OKAY:
                stream.acked()
            elif command == A_WRTE:
                stream.feed(payload)
                self.send(A_OKAY, stream.local_id, stream.remote_id)
            else:
                stream.peer_closed()
                self.forget(stream.local_id)

    def _open(self, remote_id: int, service: str) -> None:
        handler = self.emulator.service_handler(service)
        if handler is None:
            self.send(A_CLSE, 0, remote_id)  # unknown service: refuse like adbd
            return
        stream = _Stream(self, next(self._ids), remote_id)
        self._streams[stream.local_id] = stream
        self.send(A_OKAY, stream.local_id, remote_id)
        threading.Thread(target=self._run_service, args=(handler, stream), daemon=True,
                         name=f"adb-emu-{service[:20]}").start()

    @staticmethod
    def _run_service(handler: Callable[[_Stream], None], stream: _Stream) -> None:
        try:
            handler(stream)
        except (EOFError, OSError) as exc:
            log.debug("service ended early: %s", exc)
        finally:
            try:
                stream.close()
            except (EOFError, OSError):
                pass


class DeviceEmulator:
    """A fake phone on ``127.0.0.1:port``. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        model: str = "Pixel 7",
        platform: str = "gs201",
        manufacturer: str = "Google",
        release: str = "14",
        abi: str = "arm64-v8a",
        cpu_max_freqs_khz: Sequence[int] = PIXEL_LIKE_FREQS,
        temps_mc: Sequence[int] = (38000, 41500),
        capacity_kb: int = 64 * 1024 * 1024,
        port: int = 0,
    ) -> None:
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="adb-emu-"))
        props = {"ro.product.model": model, "ro.product.manufacturer": manufacturer,
                 "ro.board.platform": platform, "ro.build.version.release": release,
                 "ro.product.cpu.abi": abi, "ro.product.name": model.lower().replace(" ", "_"),
                 "ro.product.device": platform, "ro.build.version.sdk": "34"}
        self.fs = EmulatedFS(self.root, props, capacity_kb)
        self._make_sysfs(cpu_max_freqs_khz, temps_mc)
        self._requested_port = port
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._transports: list[_Transport] = []
        self._lock = threading.Lock()
        self.sync_log: list[tuple[str, str]] = []  # (request, path) of every sync request

    # --- device state ------------------------------------------------------------------------

    def _make_sysfs(self, freqs: Sequence[int], temps_mc: Sequence[int]) -> None:
        (self.root / "data/local/tmp").mkdir(parents=True, exist_ok=True)
        for cpu, freq in enumerate(freqs):
            d = self.root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
            d.mkdir(parents=True, exist_ok=True)
            (d / "cpuinfo_max_freq").write_text(f"{freq}\n")
        self.set_temperatures(temps_mc)

    def set_temperatures(self, temps_mc: Sequence[int]) -> None:
        thermal = self.root / "sys/class/thermal"
        shutil.rmtree(thermal, ignore_errors=True)
        for zone, temp in enumerate(temps_mc):
            d = thermal / f"thermal_zone{zone}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "temp").write_text(f"{temp}\n")
            (d / "type").write_text(f"zone{zone}\n")

    @property
    def exec_log(self) -> list[tuple[list[str], float]]:
        """(device argv, wall seconds) of every executable the device ran."""
        return self.fs.exec_log

    def banner(self) -> bytes:
        p = self.fs.props
        return (f"device::ro.product.name={p['ro.product.name']};ro.product.model={p['ro.product.model']};"
                f"ro.product.device={p['ro.product.device']};features=cmd,fixed_push_mkdir").encode()

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("emulator not started")
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DeviceEmulator:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._requested_port))  # loopback only
        listener.listen(4)
        self._listener = listener
        self._port = listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True, name="adb-emu-accept").start()
        return self

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = _Transport(self, sock)
            with self._lock:
                self._transports.append(transport)
            threading.Thread(target=transport.serve, daemon=True, name="adb-emu-transport").start()

    def kill(self) -> None:
        """Like pulling the cable: stop listening, drop every connection, kill running tools."""
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            transports, self._transports = self._transports, []
        for t in transports:
            try:
                t.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            t.sock.close()
        for proc in list(self.fs.processes):
            if proc.poll() is None:
                proc.kill()

    def stop(self) -> None:
        self.kill()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DeviceEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- services ----------------------------------------------------------------------------

    def service_handler(self, service: str) -> Callable[[_Stream], None] | None:
        for prefix in ("shell:", "exec:"):
            if service.startswith(prefix):
                command = service[len(prefix):]
                return lambda stream: self._shell(stream, command)
        if service == "sync:":
            return self._sync
        return None

    def _shell(self, stream: _Stream, command: str) -> None:
        self.fs.command_log.append(command)
        DeviceShell(self.fs, stream.write, lambda: stream.closed).run(command)

    def _sync(self, stream: _Stream) -> None:
        while True:
            request = stream.read_exact(8)
            cmd, length = request[:4].decode("ascii", errors="replace"), struct.unpack("<I", request[4:])[0]
            if cmd == "QUIT":
                return
            path = stream.read_exact(length).decode("utf-8", errors="replace")
            self.sync_log.append((cmd, path))
            handler = {"STAT": self._sync_stat, "LIST": self._sync_list,
                       "SEND": self._sync_send, "RECV": self._sync_recv}.get(cmd)
            if handler is None:
                self._sync_fail(stream, f"unknown sync command {cmd!r}")
                return
            handler(stream, path)

    def _sync_stat(self, stream: _Stream, path: str) -> None:
        try:
            st = self.fs.host_path(path).stat()
            stream.write(b"STAT" + struct.pack("<III", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
        except OSError:
            stream.write(b"STAT" + struct.pack("<III", 0, 0, 0))

    def _sync_list(self, stream: _Stream, path: str) -> None:
        host = self.fs.host_path(path)
        names = [".", ".."] + sorted(os.listdir(host)) if host.is_dir() else []  # missing folder: just DONE
        for name in names:
            st = (host / name).stat()
            encoded = name.encode()
            stream.write(b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF,
                                               int(st.st_mtime), len(encoded)) + encoded)
        stream.write(b"DONE" + struct.pack("<IIII", 0, 0, 0, 0))

    def _sync_send(self, stream: _Stream, spec: str) -> None:
        path, _, mode_text = spec.rpartition(",")
        mode = int(mode_text) if mode_text.isdigit() else 0o644
        target = self.fs.host_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with partial.open("wb") as out:
            while True:
                head = stream.read_exact(8)
                kind, size = head[:4], struct.unpack("<I", head[4:])[0]
                if kind == b"DATA":
                    out.write(stream.read_exact(size))
                elif kind == b"DONE":
                    mtime = size
                    break
                else:
                    self._sync_fail(stream, f"unexpected {kind!r} during SEND")
                    return
        os.replace(partial, target)
        os.chmod(target, stat.S_IMODE(mode))
        os.utime(target, (mtime, mtime))
        stream.write(b"OKAY" + struct.pack("<I", 0))

    def _sync_recv(self, stream: _Stream, path: str) -> None:
        try:
            data = self.fs.host_path(path).read_bytes()
        except OSError as exc:
            self._sync_fail(stream, f"open failed: {exc.strerror}")
            return
        for start in range(0, len(data), SYNC_DATA_MAX):
            chunk = data[start:start + SYNC_DATA_MAX]
            stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        stream.write(b"DONE" + struct.pack("<I", 0))

    @staticmethod
    def _sync_fail(stream: _Stream, message: str) -> None:
        encoded = message.encode()
        stream.write(b"FAIL" + struct.pack("<I", len(encoded)) + encoded)


class AdbServer:
    """A real adb server (the adb binary) on its own port, for tests and benchmarks; killed on stop."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = adb_binary()
        self.port = port or _free_port()

    def _adb(self, *args: str, timeout: float = 20.0) -> str:
        env = {**os.environ, "ANDROID_ADB_SERVER_PORT": str(self.port)}
        proc = subprocess.run([self.binary, "-P", str(self.port), *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
        return proc.stdout + proc.stderr

    def start(self) -> AdbServer:
        self._adb("start-server")
        return self

    def connect(self, address: str, wait_s: float = 10.0) -> str:
        """``adb connect`` and wait (bounded) until the device is online; returns its serial."""
        answer = self._adb("connect", address)
        client = adb_client(self.port)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if any(i.serial == address and i.state == "device" for i in client.list()):
                return address
            time.sleep(0.05)
        raise RuntimeError(f"adb connect {address} did not bring the device online: {answer.strip()}")

    def disconnect(self, address: str) -> str:
        return self._adb("disconnect", address)

    def run_adb(self, *args: str, timeout: float = 60.0) -> str:
        """Run the adb command line against this server (``adb -P PORT ARGS``); stdout + stderr."""
        return self._adb(*args, timeout=timeout)

    def client(self) -> adbutils.AdbClient:
        return adb_client(self.port)

    def stop(self) -> None:
        try:
            self._adb("kill-server", timeout=10.0)
        except subprocess.TimeoutExpired:
            log.warning("adb kill-server on port %d timed out", self.port)

    def __enter__(self) -> AdbServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
