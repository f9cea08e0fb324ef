"""The syslog listener (UDP datagrams, TCP with RFC 6587 framing), the stdin source, and a
real nginx sending its error log to the listener."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tzlocal
from nginx_harness import closed_port, free_port, http_temp_paths, running_nginx

from retrywatch.detect.events import Event
from retrywatch.detect.records import RecordReader
from retrywatch.sources.stdin import StdinSource
from retrywatch.sources.syslog import (
    DEFAULT_RCVBUF,
    Record,
    StreamFramer,
    SyslogListener,
    SyslogURL,
    parse_syslog_url,
    rcvbuf_errors,
    udp_socket_drops,
)

WAIT = 10.0  # seconds: the bound of every wait below


def collect(listener: SyslogListener, n: int, timeout: float = WAIT) -> list[Record]:
    """At least ``n`` records, or whatever came before the deadline."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(records) < n and (left := deadline - time.monotonic()) > 0:
        records += listener.poll(left)
    return records


@pytest.fixture
def udp() -> Iterator[SyslogListener]:
    with SyslogListener("udp://127.0.0.1:0") as listener:
        yield listener


@pytest.fixture
def tcp() -> Iterator[SyslogListener]:
    with SyslogListener("tcp://127.0.0.1:0") as listener:
        yield listener


# -- URLs ---------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "expected"), [
    ("udp://127.0.0.1:5514", SyslogURL("udp", "127.0.0.1", 5514)),
    ("TCP://0.0.0.0:514", SyslogURL("tcp", "0.0.0.0", 514)),
    ("udp://[::1]:0", SyslogURL("udp", "::1", 0)),
    ("tcp://localhost:6514", SyslogURL("tcp", "localhost", 6514)),
])
def test_url_parses(url: str, expected: SyslogURL) -> None:
    assert parse_syslog_url(url) == expected


def test_url_prints_back() -> None:
    assert str(parse_syslog_url("udp://[::1]:5514")) == "udp://[::1]:5514"
    assert str(parse_syslog_url("tcp://127.0.0.1:1")) == "tcp://127.0.0.1:1"


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:5514", "scheme"),
    ("127.0.0.1:5514", "scheme"),
    ("udp://127.0.0.1", "no port"),
    ("udp://:5514", "no host"),
    ("udp://127.0.0.1:5514/x", "only udp://"),
    ("udp://127.0.0.1:5514?a=1", "only udp://"),
    ("udp://127.0.0.1:70000", "out of range"),
    ("udp://127.0.0.1:port", "bad syslog URL"),
    ("udp://me@127.0.0.1:5514", "no user"),
    ("udp://[fe::zz]:5514", "bad syslog URL"),
    ("udp://bad_host!:5514", "no host name"),
])
def test_url_rejected(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_syslog_url(url)


def test_name_shows_the_bound_port(udp: SyslogListener) -> None:
    assert udp.port > 0
    assert udp.name == f"syslog:udp://127.0.0.1:{udp.port}"


def test_address_in_use_raises() -> None:
    with SyslogListener("tcp://127.0.0.1:0") as first:
        second = SyslogListener(f"tcp://127.0.0.1:{first.port}")
        with pytest.raises(OSError):
            second.start()


# -- UDP ----------------------------------------------------------------------------------
def test_each_datagram_is_one_record(udp: SyslogListener) -> None:
    sent = [b"<187>Nov 25 17:33:53 nginx: first, no newline", b"second",
            b"third\n", b"fourth\npart of the fourth"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for data in sent:
            s.sendto(data, ("127.0.0.1", udp.port))
        records = collect(udp, len(sent))
        assert records == [Record(data, s.getsockname()) for data in sent]
    assert udp.stats.datagrams == len(sent)
    assert udp.stats.bytes == sum(map(len, sent))
    assert udp.poll(0) == []


def test_udp_too_long_is_counted_and_skipped() -> None:
    with SyslogListener("udp://127.0.0.1:0", max_record=10) as listener, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for data in (b"x" * 11, b"short"):
            s.sendto(data, ("127.0.0.1", listener.port))
        assert [r.data for r in collect(listener, 1)] == [b"short"]
        assert (listener.stats.datagrams, listener.stats.too_long) == (2, 1)


def test_udp_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listener = SyslogListener("udp://[::1]:0")
        listener.start()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.sendto(b"hello", ("::1", listener.port))
            [record] = collect(listener, 1)
        assert record.data == b"hello"
        assert record.peer[0] == "::1"
        assert listener.drops() == 0
        assert listener.name == f"syslog:udp://[::1]:{listener.port}"
    finally:
        listener.stop()


def test_receive_buffer_is_asked_large(udp: SyslogListener) -> None:
    assert udp.rcvbuf > 0
    if udp.rcvbuf_forced:
        assert udp.rcvbuf >= DEFAULT_RCVBUF  # the kernel reports twice what was asked


def test_drops_readable(udp: SyslogListener) -> None:
    assert udp.drops() == 0
    assert rcvbuf_errors() >= 0


def test_udp_socket_drops_reads_the_kernel_counter() -> None:
    """A socket nobody reads, with a tiny buffer: the kernel drops, /proc/net/udp says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # the kernel's minimum
        sink.bind(("127.0.0.1", 0))
        inode = os.fstat(sink.fileno()).st_ino
        if udp_socket_drops(inode) is None:
            pytest.skip("no /proc/net/udp")
        for _ in range(200):
            s.sendto(b"x" * 1000, sink.getsockname())
        drops = udp_socket_drops(inode)
        assert drops is not None and drops > 0


def test_a_burst_is_received_or_counted_as_dropped(udp: SyslogListener) -> None:
    """Every datagram of a burst is either received or in drops(): UDP never loses
    silently here."""
    sent = 20_000
    line = b"<187>Nov 25 17:33:53 nginx: " + b"x" * 250
    records: list[Record] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(sent):
            s.sendto(line, ("127.0.0.1", udp.port))
            if i % 1000 == 0:
                records += udp.poll(0)
    deadline = time.monotonic() + WAIT
    while len(records) + udp.drops() < sent and time.monotonic() < deadline:
        records += udp.poll(0.05)
    assert len(records) + udp.drops() == sent
    assert udp.stats.datagrams == len(records)


def test_proc_parsing(tmp_path: Path) -> None:
    (tmp_path / "udp").write_text(
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
        "  timeout inode ref pointer drops\n"
        " 1234: 0100007F:158A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0"
        "        0 4242 2 0000000000000000 17\n")
    (tmp_path / "snmp").write_text(
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "Udp: 10 0 3 10 5 0\n")
    (tmp_path / "snmp6").write_text("Udp6InDatagrams  \t9\nUdp6RcvbufErrors\t2\n")
    assert udp_socket_drops(4242, tmp_path) == 17
    assert udp_socket_drops(4243, tmp_path) is None
    assert rcvbuf_errors(tmp_path) == 7
    assert rcvbuf_errors(tmp_path / "missing") == 0


# -- TCP framing --------------------------------------------------------------------------
def feed_bytewise(framer: StreamFramer, data: bytes) -> list[bytes]:
    records: list[bytes] = []
    for i in range(len(data)):
        records += framer.feed(data[i:i + 1]).records
    return records


def test_octet_counting_across_reads() -> None:
    msgs = [b"<187>Nov 25 17:33:53 nginx: one", b"two\nwith a newline inside", b"x" * 300]
    data = b"".join(b"%d %s" % (len(m), m) for m in msgs)
    assert feed_bytewise(StreamFramer(), data) == msgs
    assert StreamFramer().feed(data).records == msgs


def test_lf_framing_across_reads() -> None:
    data = b"<187>Nov 25 17:33:53 nginx: one\r\n<187>two\n\n2026/11/25 17:33:53 [error] x\n"
    expected = [b"<187>Nov 25 17:33:53 nginx: one\r", b"<187>two",
                b"2026/11/25 17:33:53 [error] x"]
    assert feed_bytewise(StreamFramer(), data) == expected
    assert StreamFramer().feed(data).records == expected


def test_framing_is_decided_per_frame() -> None:
    framer = StreamFramer()
    out = framer.feed(b"5 hello<187>lf\n3 abc")
    assert out.records == [b"hello", b"<187>lf", b"abc"]


def test_a_last_line_without_lf_is_a_record_at_close() -> None:
    framer = StreamFramer()
    assert framer.feed(b"<187>end").records == []
    assert framer.close().records == [b"<187>end"]


def test_a_cut_counted_frame_is_an_error_at_close() -> None:
    framer = StreamFramer()
    assert framer.feed(b"10 abc").records == []
    closed = framer.close()
    assert (closed.records, closed.errors) == ([], 1)


def test_too_long_frames_are_skipped() -> None:
    framer = StreamFramer(max_record=8)
    data = b"9 123456789" + b"4 okay" + b"<1>long line\n" + b"<1>ok\n"
    records: list[bytes] = []
    too_long = 0
    for i in range(0, len(data), 3):
        out = framer.feed(data[i:i + 3])
        records += out.records
        too_long += out.too_long
    assert (records, too_long) == ([b"okay", b"<1>ok"], 2)


def test_tcp_several_clients(tcp: SyslogListener) -> None:
    clients = [socket.create_connection(("127.0.0.1", tcp.port), timeout=WAIT)
               for _ in range(3)]
    try:
        # Interleaved, and each message split across sends.
        for n in range(4):
            for i, c in enumerate(clients):
                msg = b"<187>client %d msg %d" % (i, n)
                frame = b"%d %s" % (len(msg), msg) if i % 2 else msg + b"\n"
                c.sendall(frame[:7])
                c.sendall(frame[7:])
        records = collect(tcp, 12)
        peers = {c.getsockname(): i for i, c in enumerate(clients)}
        by_client: dict[int, list[bytes]] = {}
        for r in records:
            by_client.setdefault(peers[r.peer], []).append(r.data)
        assert by_client == {i: [b"<187>client %d msg %d" % (i, n) for n in range(4)]
                             for i in range(3)}
    finally:
        for c in clients:
            c.close()
    assert tcp.stats.connections == 3
    assert tcp.stats.datagrams == 12
    assert tcp.drops() == 0


def test_tcp_last_line_flushed_when_the_client_closes(tcp: SyslogListener) -> None:
    with socket.create_connection(("127.0.0.1", tcp.port), timeout=WAIT) as c:
        c.sendall(b"<187>no newline at the end")
    assert [r.data for r in collect(tcp, 1)] == [b"<187>no newline at the end"]


def test_stop_is_prompt_and_final() -> None:
    listener = SyslogListener("tcp://127.0.0.1:0")
    listener.start()
    client = socket.create_connection(("127.0.0.1", listener.port), timeout=WAIT)
    started = time.monotonic()
    listener.stop()
    assert time.monotonic() - started < 2
    assert not listener.running
    assert listener.poll(None) == []  # never blocks once stopped
    client.close()


# -- stdin ----------------------------------------------------------------------------------
def test_stdin_chunks_then_eof() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb") as reader:
        source = StdinSource(reader)
        source.start()
        assert source.name == "stdin"
        assert source.poll(0) == []  # a quiet pipe does not block
        os.write(w, b"2026/11/25 17:33:53 [error] 1#1: *1 first\n")
        first = source.poll(WAIT)
        assert b"".join(first) == b"2026/11/25 17:33:53 [error] 1#1: *1 first\n"
        assert source.poll(0) == []  # nothing more yet, and no end
        os.write(w, b"partial")
        os.close(w)
        rest: list[bytes] = []
        deadline = time.monotonic() + WAIT
        while not source.eof and time.monotonic() < deadline:
            rest += source.poll(deadline - time.monotonic())
        assert source.eof
        assert b"".join(rest) == b"partial"
        assert source.stats.bytes == len(b"".join(first + rest))
        assert source.poll(None) == []  # at the end, never blocks
        source.stop()


# -- a real nginx -------------------------------------------------------------------------------
STREAM_CONF = """
worker_processes 2;
error_log {prefix}/logs/error.log error;
error_log syslog:server=127.0.0.1:%(syslog)d,%(options)s error;
events { worker_connections 256; }
stream {
    server {
        listen 127.0.0.1:%(listen)d;
        proxy_pass 127.0.0.1:%(dead)d;
        proxy_connect_timeout 5s;
    }
}
"""
CONNECTIONS = 20
HEADER = re.compile(r"<187>[A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d (?:(\S+) )?nginx: ")
FAILED = re.compile(r"\*(\d+) connect\(\) failed ")


def connect_and_wait_close(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as c:
        c.recv(1)  # nginx closes the session when its upstream refuses


@pytest.mark.parametrize("options", ["tag=nginx", "nohostname,tag=nginx"])
def test_real_nginx_sends_every_failure(tmp_path: Path, udp: SyslogListener,
                                        options: str) -> None:
    listen = free_port()
    with closed_port() as dead:
        conf = STREAM_CONF % {"syslog": udp.port, "options": options, "listen": listen,
                              "dead": dead}
        with running_nginx(tmp_path / "nginx", conf, ports=[listen],
                           modules=["stream"]) as ngx:
            for _ in range(CONNECTIONS):
                connect_and_wait_close(listen)
            workers = set(ngx.workers())  # all forked by now
            deadline = time.monotonic() + WAIT
            records: list[Record] = []
            while time.monotonic() < deadline:
                records += udp.poll(0.05)
                lines = ngx.error_log.read_text().splitlines()
                file_failed = [line for line in lines if FAILED.search(line)]
                if len(file_failed) >= CONNECTIONS and len(records) >= len(file_failed):
                    break
        records += udp.poll(0.2)  # anything sent while nginx stopped
    lines = ngx.error_log.read_text().splitlines()
    file_failed = [line for line in lines if FAILED.search(line)]
    assert len(file_failed) == CONNECTIONS

    payloads = [r.data.decode() for r in records]
    failed = [p for p in payloads if FAILED.search(p)]
    assert len(failed) == len(file_failed)
    assert {r.peer[0] for r in records} == {"127.0.0.1"}
    for payload in payloads:
        header = HEADER.match(payload)
        assert header is not None, payload
        host = header.group(1)
        if "nohostname" in options:
            assert host is None
        else:
            assert host == socket.gethostname().lower()
        assert "\n" not in payload
    # The message is nginx's own line, exactly as in its file log.
    assert sorted(HEADER.sub("", p) for p in failed) == sorted(file_failed)
    assert udp.drops() == 0

    reader = RecordReader(tzlocal.get_localzone(), "syslog")
    events = reader.feed_records([r.data for r in records]) + reader.flush()
    connect_failed = [(ev, 1) for ev in events
                      if isinstance(ev, Event) and ev.kind == "connect_failed"]
    assert sum(n for _, n in connect_failed) == CONNECTIONS
    file_cids = sorted(int(m.group(1)) for m in map(FAILED.search, file_failed) if m)
    cids = [head.cid for head, n in connect_failed for _ in range(n)]
    assert sorted(cid for cid in cids if cid is not None) == file_cids
    assert {head.pid for head, _ in connect_failed} <= workers
    for event, _ in connect_failed:
        assert isinstance(event, Event)
        assert event.connect_failure
        assert event.upstream == f"127.0.0.1:{dead}"
        assert event.subsystem == "stream"
    assert not reader.stats()["unparsed"]


LUA_STORM_CONF = """
worker_processes 1;
error_log {prefix}/logs/error.log error;
error_log syslog:server=127.0.0.1:%(syslog)d,nohostname,tag=nginx error;
events { worker_connections 256; }
http {
    %(temp)s
    access_log off;
    lua_package_path "/usr/share/lua/5.1/?.lua;;";
    upstream storm {
        server 127.0.0.1:%(dead)d;  # a placeholder: closed, ours
        balancer_by_lua_block {
            local b = require "ngx.balancer"
            b.set_more_tries(1)
            local ok, err = b.set_current_peer("127.0.0.1", %(dead)d)
            if not ok then return ngx.exit(ngx.ERROR) end
        }
    }
    server {
        listen 127.0.0.1:%(listen)d;
        location / {
            proxy_pass http://storm;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 0;
        }
    }
}
"""
STORM_SECONDS = 1.0


def test_real_nginx_storm_is_received_or_counted(tmp_path: Path, udp: SyslogListener) -> None:
    """The retry storm of the incident (a Lua balancer, ``proxy_next_upstream_tries 0``),
    sent over syslog for one second: every line of nginx's file log is received or
    counted in drops(), and the storm is one connection id."""
    listen = free_port()
    prefix = tmp_path / "nginx"
    with closed_port() as dead:
        conf = LUA_STORM_CONF % {"syslog": udp.port, "listen": listen, "dead": dead,
                                 "temp": http_temp_paths(prefix)}
        records: list[Record] = []
        with running_nginx(prefix, conf, ports=[listen],
                           modules=["ndk_http", "http_lua"]) as ngx:
            with socket.create_connection(("127.0.0.1", listen), timeout=WAIT) as c:
                c.sendall(b"GET /storm HTTP/1.0\r\nHost: storm.test\r\n\r\n")
                deadline = time.monotonic() + STORM_SECONDS
                while time.monotonic() < deadline:  # the client waits, nginx retries
                    records += udp.poll(0.05)
            # The client is gone: nginx stops at its next event.
            deadline = time.monotonic() + WAIT
            previous = -1
            while time.monotonic() < deadline:
                records += udp.poll(0.1)
                size = ngx.error_log.stat().st_size
                if size == previous:
                    break
                previous = size
    file_failed = [line for line in ngx.error_log.read_text().splitlines()
                   if FAILED.search(line)]
    assert len(file_failed) > 1000, "no storm: is the Lua balancer loaded?"
    # On a busy machine datagrams may still sit in the socket or the listener's queue:
    # collect until every line is received or counted as dropped (bounded).
    deadline = time.monotonic() + WAIT
    while True:
        records += udp.poll(0.1)
        failed = [r for r in records if FAILED.search(r.data.decode())]
        if len(failed) + udp.drops() >= len(file_failed) or time.monotonic() > deadline:
            break
    assert len(failed) + udp.drops() == len(file_failed)

    reader = RecordReader(tzlocal.get_localzone(), "syslog")
    counts: dict[int | None, int] = {}
    for ev in reader.feed_records([r.data for r in records]) + reader.flush():
        if isinstance(ev, Event) and ev.kind == "connect_failed":
            counts[ev.cid] = counts.get(ev.cid, 0) + 1
    [(cid, n)] = counts.items()
    assert f"*{cid} connect() failed" in file_failed[0]
    assert n == len(failed)
