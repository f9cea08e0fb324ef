"""A syslog listener: nginx's ``error_log syslog:server=HOST:PORT`` without a shared volume.

``udp://HOST:PORT`` receives datagrams: each one is one record, never joined to the next.
``tcp://HOST:PORT`` accepts several clients and frames each stream by RFC 6587, frame by
frame: octet counting (``LEN SP MSG``) when a frame starts with a length, otherwise one
record per line (non-transparent framing, LF-delimited). nginx itself only sends UDP;
TCP is for relays (rsyslog, syslog-ng, fluent-bit).

The records keep their RFC 3164 header: :class:`~retrywatch.detect.core.Core`
removes it (``feed_records``).

Design: :meth:`SyslogListener.start` binds and starts one receiver thread, which reads
in bursts and queues batches; the consumer calls :meth:`SyslogListener.poll` with a
timeout and gets every record queued so far, each with its peer address. The queue is
bounded: when the consumer falls behind, the receiver stops reading, UDP datagrams then
pile up in the kernel's receive buffer (asked large) and, past it, are dropped by the
kernel and counted in :meth:`SyslogListener.drops`; a TCP sender is slowed by its window.

TCP is bounded: at most ``max_clients`` clients at once (further ones are accepted and
closed at once, and counted as refused), never more than half of what the process's
descriptor limit leaves after :data:`FD_RESERVE` descriptors for files and the state
database (the other half is the HTTP service's); a client that sends nothing for
``idle_timeout`` seconds is closed (its last line delivered), so idle clients cannot
lock the others out; frames over ``max_record`` bytes are skipped and counted. When ``accept`` fails
for want of descriptors (EMFILE, ENFILE) or memory, the listening socket is left alone
for a while (doubling up to a second) instead of being retried in a busy loop, and such
failures are logged at most once every :data:`LOG_EVERY` seconds, with a count.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import os
import queue
import re
import resource
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

from retrywatch.detect.core import DEFAULT_MAX_LINE
from retrywatch.errors import ListenError

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_RCVBUF",
    "FD_RESERVE",
    "LOG_EVERY",
    "ListenerStats",
    "Record",
    "StreamFramer",
    "SyslogListener",
    "SyslogURL",
    "parse_syslog_url",
    "rcvbuf_errors",
    "udp_socket_drops",
]

Transport = Literal["udp", "tcp"]

DEFAULT_RCVBUF = 64 * 1024 * 1024
_RECV_SIZE = 65536  # above the largest UDP payload (65,507 bytes over IPv4)
_BURST_RECORDS = 1024  # records read before handing a batch over
_BURST_BYTES = 1 << 20
_QUEUE_BATCHES = 64  # at most 64 MiB of records waiting for the consumer
DEFAULT_MAX_CLIENTS = 1024
DEFAULT_IDLE_TIMEOUT = 300.0  # seconds without a byte before a TCP client is closed
#: Descriptors kept for the rest of the process (followed files, the state database,
#: the server's own): a TCP listener takes at most half of the RLIMIT_NOFILE beyond them,
#: so HTTP clients (``/healthz``) always find descriptors, however many syslog clients.
FD_RESERVE = 128
LOG_EVERY = 10.0  # seconds: at most one log line per kind of trouble this often
_ACCEPT_BACKOFF_MIN = 0.05
_ACCEPT_BACKOFF_MAX = 1.0
#: accept() failures that only time can cure: retrying at once would spin.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_PROC_NET = Path("/proc/net")

log = logging.getLogger("retrywatch")


@dataclass(frozen=True, slots=True)
class SyslogURL:
    """Where to listen: ``udp://127.0.0.1:5514``, ``tcp://[::1]:5514``."""

    transport: Transport
    host: str
    port: int  # 0: any free port (tests); the bound one is SyslogListener.port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"


def parse_syslog_url(url: str) -> SyslogURL:
    """Parse and validate a listener URL; ``ValueError`` with the reason when it is bad."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad syslog URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("udp", "tcp"):
        raise ValueError(f"bad syslog URL {url!r}: the scheme must be udp:// or tcp://")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"bad syslog URL {url!r}: no user or password")
    if parts.path or parts.query or parts.fragment:
        raise ValueError(f"bad syslog URL {url!r}: only {scheme}://HOST:PORT")
    host = parts.hostname
    if not host:
        raise ValueError(f"bad syslog URL {url!r}: no host (all interfaces: 0.0.0.0 or [::])")
    if port is None:
        raise ValueError(f"bad syslog URL {url!r}: no port (nginx sends to 514 by default)")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad syslog URL {url!r}: {host!r} is no IPv6 address") from None
    elif not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", host):
        raise ValueError(f"bad syslog URL {url!r}: {host!r} is no host name or address")
    return SyslogURL(scheme, host, port)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Record:
    """One syslog message as received (header included), and who sent it."""

    data: bytes
    peer: tuple[str, int]


@dataclass(slots=True)
class ListenerStats:
    """Counters, written by the receiver thread only."""

    datagrams: int = 0  # records received: UDP datagrams, or TCP frames
    bytes: int = 0
    too_long: int = 0  # records over max_record, skipped (counted in datagrams)
    errors: int = 0  # socket errors, truncated TCP frames
    connections: int = 0  # TCP clients accepted
    refused: int = 0  # TCP clients closed at once: max_clients were connected
    timed_out: int = 0  # TCP clients closed after idle_timeout seconds without a byte
    accept_errors: int = 0  # accept() failures (out of descriptors: accepting paused)
    clients: int = 0  # TCP clients connected now
    last_error: str | None = None


# -- TCP framing (pure) ---------------------------------------------------------
_OCTET_HEADER = re.compile(rb"[1-9][0-9]{0,8} ")
_ALL_DIGITS = re.compile(rb"[0-9]{1,9}")


@dataclass(slots=True)
class Frames:
    records: list[bytes] = field(default_factory=list)
    too_long: int = 0
    errors: int = 0


class StreamFramer:
    """RFC 6587 framing of one TCP stream, decided frame by frame.

    A frame starting with ``[1-9][0-9]* `` is octet-counted; anything else runs to the
    next LF (a plain nginx line ``2026/11/25 …`` too: digits not followed by a space).
    Over-long frames are skipped to their end and counted; blank lines are ignored.
    """

    def __init__(self, max_record: int = DEFAULT_MAX_LINE) -> None:
        self.max_record = max_record
        self._buf = bytearray()
        self._skip = 0  # bytes left of an over-long octet-counted frame
        self._discarding = False  # inside an over-long LF-delimited frame

    def feed(self, data: bytes) -> Frames:
        out = Frames()
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while pos < end:
            if self._skip:
                n = min(self._skip, end - pos)
                self._skip -= n
                pos += n
                continue
            if self._discarding:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    pos = end
                    break
                self._discarding = False
                pos = nl + 1
                continue
            if 0x31 <= buf[pos] <= 0x39:  # 1-9: maybe an octet count
                header = _OCTET_HEADER.match(buf, pos)
                if header is not None:
                    size = int(buf[pos:header.end() - 1])
                    start = header.end()
                    if size > self.max_record:
                        out.too_long += 1
                        self._skip = size
                        pos = start
                        continue
                    if end - start < size:
                        break  # wait for the rest of the frame
                    out.records.append(bytes(buf[start:start + size]))
                    pos = start + size
                    continue
                digits = _ALL_DIGITS.match(buf, pos)
                if digits is not None and digits.end() == end:
                    break  # only digits so far: the header may still come
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if end - pos > self.max_record:
                    out.too_long += 1
                    self._discarding = True
                    pos = end
                break
            if nl - pos > self.max_record:
                out.too_long += 1
            elif nl > pos and buf[pos:nl] != b"\r":
                out.records.append(bytes(buf[pos:nl]))
            pos = nl + 1
        del buf[:pos]
        return out

    def close(self) -> Frames:
        """The end of the stream: a last line without LF is a record; a cut counted
        frame is an error."""
        out = Frames()
        rest = bytes(self._buf)
        self._buf.clear()
        if self._skip:
            out.errors += 1
        elif rest and not self._discarding:
            if _OCTET_HEADER.match(rest) or _ALL_DIGITS.fullmatch(rest):
                out.errors += 1
            elif rest.strip():
                out.records.append(rest)
        self._skip = 0
        self._discarding = False
        return out


# -- kernel drop counters ---------------------------------------------------------
def udp_socket_drops(inode: int, proc_net: Path = _PROC_NET) -> int | None:
    """The ``drops`` column of the UDP socket with this inode (``/proc/net/udp`` and
    ``udp6``, in this process' network namespace); ``None`` when not found."""
    wanted = str(inode)
    for name in ("udp", "udp6"):
        try:
            text = (proc_net / name).read_text()
        except OSError:
            continue
        for row in text.splitlines()[1:]:
            cols = row.split()
            if len(cols) >= 13 and cols[9] == wanted:
                return int(cols[-1])
    return None


def rcvbuf_errors(proc_net: Path = _PROC_NET) -> int:
    """Datagrams the kernel dropped for a full receive buffer, all UDP sockets together
    (``RcvbufErrors`` of ``/proc/net/snmp`` plus ``Udp6RcvbufErrors``); 0 if unreadable."""
    total = 0
    try:
        rows = [r.split() for r in (proc_net / "snmp").read_text().splitlines()
                if r.startswith("Udp:")]
        if len(rows) >= 2 and "RcvbufErrors" in rows[0]:
            total += int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        pass
    try:
        for row in (proc_net / "snmp6").read_text().splitlines():
            cols = row.split()
            if len(cols) == 2 and cols[0] == "Udp6RcvbufErrors":
                total += int(cols[1])
    except (OSError, ValueError):
        pass
    return total


def _ask_rcvbuf(sock: socket.socket, size: int) -> tuple[int, bool]:
    """Ask for a receive buffer of ``size``: SO_RCVBUFFORCE (CAP_NET_ADMIN) beyond
    ``net.core.rmem_max``, else SO_RCVBUF. Returns what the kernel granted (its own
    figure, twice the usable payload size) and whether the force worked."""
    forced = False
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            forced = True
        except OSError:
            pass
    if not forced:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), forced


def _peer(addr: object) -> tuple[str, int]:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), int(addr[1])
    return str(addr), 0


def client_room(reserve: int = FD_RESERVE) -> int | None:
    """TCP syslog clients the descriptor limit (soft RLIMIT_NOFILE) leaves room for: half
    of it beyond ``reserve`` (the other half for HTTP clients); ``None`` when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, (soft - reserve) // 2)


class LogThrottle:
    """One log line per ``every`` seconds at most; the lines held back in between are
    counted and said with the next one."""

    def __init__(self, every: float = LOG_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._next = float("-inf")
        self.held = 0  # lines held back since the last one logged

    def __call__(self, level: int, message: str, *args: object) -> bool:
        """Log ``message % args`` unless one was logged less than ``every`` s ago."""
        now = self.clock()
        if now < self._next:
            self.held += 1
            return False
        self._next = now + self.every
        if self.held:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, self.held, self.every)
            self.held = 0
        log.log(level, message, *args)
        return True


@dataclass(slots=True, eq=False)
class _Client:
    framer: StreamFramer
    peer: tuple[str, int]
    last: float  # clock() when a byte last came


# -- the listener -------------------------------------------------------------------
class SyslogListener:
    """Receives syslog records on one UDP or TCP address, in a thread; see the module doc.

    ``name`` is ``syslog:udp://127.0.0.1:5514``, with the bound port once started.
    """

    def __init__(self, url: str | SyslogURL, *, rcvbuf: int = DEFAULT_RCVBUF,
                 max_record: int = DEFAULT_MAX_LINE, max_clients: int = DEFAULT_MAX_CLIENTS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, fd_reserve: int = FD_RESERVE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url if isinstance(url, SyslogURL) else parse_syslog_url(url)
        self.max_record = max_record
        #: TCP clients at once: as asked, lowered at start to what RLIMIT_NOFILE leaves.
        self.max_clients = max_clients
        self.max_clients_asked = max_clients
        self.idle_timeout = idle_timeout
        self._fd_reserve = fd_reserve
        self._clock = clock
        self.stats = ListenerStats()
        self._rcvbuf_wanted = rcvbuf
        #: The receive buffer the kernel granted (its figure: twice the payload room).
        self.rcvbuf = 0
        #: Whether SO_RCVBUFFORCE worked (root / CAP_NET_ADMIN), past net.core.rmem_max.
        self.rcvbuf_forced = False
        self.port = self.url.port
        self._sock: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._queue: queue.Queue[list[Record]] = queue.Queue(_QUEUE_BATCHES)
        #: TCP clients, the one that sent a byte longest ago first.
        self._clients: OrderedDict[socket.socket, _Client] = OrderedDict()
        self._sel: selectors.BaseSelector | None = None
        self._drops_base = 0
        self._last_drops = 0
        self._accept_backoff = _ACCEPT_BACKOFF_MIN
        self._accept_paused_until: float | None = None
        self._log_refused = LogThrottle(clock=clock)
        self._log_accept = LogThrottle(clock=clock)

    @property
    def name(self) -> str:
        return f"syslog:{SyslogURL(self.url.transport, self.url.host, self.port)}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Bind (:class:`ListenError` when the address is taken, not local or not found)
        and start receiving."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        kind = socket.SOCK_DGRAM if self.url.transport == "udp" else socket.SOCK_STREAM
        try:
            family, _, _, _, addr = socket.getaddrinfo(
                self.url.host, self.url.port, socket.AF_UNSPEC, kind, 0, socket.AI_PASSIVE)[0]
        except OSError as exc:  # socket.gaierror: a host name that does not resolve
            raise ListenError(str(self.url), exc) from exc
        sock = socket.socket(family, kind)
        try:
            if kind == socket.SOCK_DGRAM:
                self.rcvbuf, self.rcvbuf_forced = _ask_rcvbuf(sock, self._rcvbuf_wanted)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            if kind == socket.SOCK_STREAM:
                sock.listen(128)
                self._fit_descriptor_limit()
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ListenError(str(self.url), exc) from exc
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._drops_base = rcvbuf_errors()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving and close every socket. Records still queued stay pollable."""
        if self._thread is None:
            return
        self._last_drops = self.drops()
        self._stopping.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        self._thread.join(timeout)
        for sock in (*self._clients, self._sock, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._clients.clear()
        self.stats.clients = 0
        self._sock = None

    def _fit_descriptor_limit(self) -> None:
        """Lower ``max_clients`` to what RLIMIT_NOFILE leaves room for, and say so."""
        room = client_room(self._fd_reserve)
        if room is not None and room < self.max_clients_asked:
            self.max_clients = room
            log.warning("%s: at most %d TCP clients at once, not %d: the descriptor limit "
                        "(RLIMIT_NOFILE, ulimit -n) is %d; beyond %d kept for files and "
                        "state, half is left to HTTP clients",
                        self.name, room, self.max_clients_asked,
                        resource.getrlimit(resource.RLIMIT_NOFILE)[0], self._fd_reserve)
        else:
            self.max_clients = self.max_clients_asked

    def summary(self) -> dict[str, object]:
        """The listener's figures for ``/api/v1/sources`` and the metrics (plain data)."""
        st = self.stats
        out: dict[str, object] = {
            "transport": self.url.transport, "records": st.datagrams, "bytes": st.bytes,
            "frames_too_long": st.too_long, "errors": st.errors, "drops": self._last_drops}
        if self.url.transport == "tcp":
            out.update(clients=st.clients, max_clients=self.max_clients,
                       idle_timeout=self.idle_timeout, connections=st.connections,
                       refused=st.refused, timed_out=st.timed_out,
                       accept_errors=st.accept_errors,
                       accepting=self._accept_paused_until is None)
        return out

    def __enter__(self) -> SyslogListener:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- consumer side ----------------------------------------------------------------
    def poll(self, timeout: float | None = None) -> list[Record]:
        """Every record received so far, oldest first; waits up to ``timeout`` seconds
        (``None``: until one comes) when there is none yet; ``[]`` on timeout, and at
        once after :meth:`stop` when nothing is left."""
        try:
            if timeout == 0 or self._stopping.is_set():
                records = self._queue.get_nowait()
            else:
                records = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        while True:
            try:
                records.extend(self._queue.get_nowait())
            except queue.Empty:
                return records

    def drops(self) -> int:
        """Datagrams the kernel dropped for this listener's full receive buffer.

        The socket's own ``drops`` column in /proc/net/udp; when that cannot be read,
        the growth of the host's ``RcvbufErrors`` since :meth:`start` (all UDP sockets
        of the network namespace: an upper bound). Always 0 for TCP (no loss there).
        """
        sock = self._sock
        if self.url.transport != "udp" or sock is None:
            return self._last_drops
        try:
            inode = os.fstat(sock.fileno()).st_ino
        except OSError:
            return self._last_drops
        found = udp_socket_drops(inode)
        if found is None:
            found = max(0, rcvbuf_errors() - self._drops_base)
        self._last_drops = found
        return found

    # -- receiver thread ----------------------------------------------------------------
    def _run(self) -> None:
        assert self._sock is not None and self._wake_r is not None
        on_ready = self._read_udp if self.url.transport == "udp" else self._accept
        with selectors.DefaultSelector() as sel:
            self._sel = sel
            sel.register(self._wake_r, selectors.EVENT_READ, None)
            sel.register(self._sock, selectors.EVENT_READ, on_ready)
            tcp = self.url.transport == "tcp"
            while not self._stopping.is_set():
                for key, _ in sel.select(self._select_timeout() if tcp else None):
                    if key.data is None:  # woken by stop()
                        return
                    key.data()
                if tcp:
                    self._housekeep()

    def _select_timeout(self) -> float | None:
        """Until the next TCP deadline: an idle client's timeout, accepting again."""
        now = self._clock()
        deadlines = []
        if self._clients:
            oldest = next(iter(self._clients.values()))
            deadlines.append(oldest.last + self.idle_timeout)
        if self._accept_paused_until is not None:
            deadlines.append(self._accept_paused_until)
        if not deadlines:
            return None
        return min(1.0, max(0.01, min(deadlines) - now))  # at least once a second

    def _housekeep(self) -> None:
        """Close the clients idle for ``idle_timeout``; accept again after a pause."""
        now = self._clock()
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            if self._sock is not None and self._sel is not None:
                self._sel.register(self._sock, selectors.EVENT_READ, self._accept)
            self._accept()
        while self._clients:
            client, state = next(iter(self._clients.items()))
            if now - state.last < self.idle_timeout:
                break
            self.stats.timed_out += 1
            self._close_client(client, state)

    def _close_client(self, client: socket.socket, state: _Client) -> None:
        """Forget and close ``client``; its last line without LF is a record."""
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(client)
        self._clients.pop(client, None)
        self.stats.clients = len(self._clients)
        client.close()
        self._count(state.framer.close(), state.peer)

    def _error(self, exc: OSError) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"

    def _deliver(self, records: list[Record]) -> None:
        while records and not self._stopping.is_set():
            try:
                self._queue.put(records, timeout=0.2)
                return
            except queue.Full:
                continue

    def _read_udp(self) -> None:
        assert self._sock is not None
        recv = self._sock.recvfrom
        stats = self.stats
        batch: list[Record] = []
        size = 0
        while len(batch) < _BURST_RECORDS and size < _BURST_BYTES:
            try:
                data, addr = recv(_RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                self._error(exc)
                break
            stats.datagrams += 1
            stats.bytes += len(data)
            if len(data) > self.max_record:
                stats.too_long += 1
                continue
            size += len(data)
            batch.append(Record(data, _peer(addr)))
        self._deliver(batch)

    def _accept_one(self) -> tuple[socket.socket, object]:
        assert self._sock is not None
        return self._sock.accept()

    def _accept(self) -> None:
        if self._sock is None or self._accept_paused_until is not None:
            return
        for _ in range(_BURST_RECORDS):  # then the clients get their turn
            try:
                client, addr = self._accept_one()
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause_accept(exc)
                    return
                if exc.errno == errno.ECONNABORTED:  # the client gave up while queued
                    continue
                self._error(exc)
                return
            self._accept_backoff = _ACCEPT_BACKOFF_MIN
            peer = _peer(addr)
            if len(self._clients) >= self.max_clients:
                self.stats.refused += 1  # counted before the client can see it
                client.close()
                self.stats.last_error = (f"{self.max_clients} TCP clients connected: "
                                         f"refused {peer[0]}:{peer[1]}")
                self._log_refused(logging.WARNING,
                                  "%s: %d TCP clients connected (max_clients): refused %s:%d",
                                  self.name, self.max_clients, *peer)
                continue
            client.setblocking(False)
            self.stats.connections += 1
            self._clients[client] = _Client(StreamFramer(self.max_record), peer, self._clock())
            self.stats.clients = len(self._clients)
            assert self._sel is not None
            self._sel.register(client, selectors.EVENT_READ,
                               functools.partial(self._read_client, client))

    def _pause_accept(self, exc: OSError) -> None:
        """Out of descriptors (or memory): stop watching the listening socket for a
        while, doubling the pause while it lasts; connections wait in the backlog."""
        pause = self._accept_backoff
        self._accept_backoff = min(_ACCEPT_BACKOFF_MAX, pause * 2)
        self._accept_paused_until = self._clock() + pause
        if self._sel is not None and self._sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self._sock)
        self.stats.accept_errors += 1
        self.stats.last_error = f"accept: {type(exc).__name__}: {exc}"
        self._log_accept(logging.WARNING,
                         "%s: cannot accept a TCP client (%s): not accepting for %.2f s; "
                         "%d clients connected",
                         self.name, os.strerror(exc.errno or 0), pause, len(self._clients))

    def _read_client(self, client: socket.socket) -> None:
        state = self._clients.get(client)
        if state is None:
            return
        try:
            data = client.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._error(exc)
            data = b""
        if not data:
            self._close_client(client, state)
            return
        state.last = self._clock()
        self._clients.move_to_end(client)
        self.stats.bytes += len(data)
        self._count(state.framer.feed(data), state.peer)

    def _count(self, frames: Frames, peer: tuple[str, int]) -> None:
        stats = self.stats
        stats.datagrams += len(frames.records) + frames.too_long
        stats.too_long += frames.too_long
        stats.errors += frames.errors
        if frames.errors:
            stats.last_error = f"a TCP frame from {peer[0]}:{peer[1]} was cut short"
        self._deliver([Record(r, peer) for r in frames.records])
