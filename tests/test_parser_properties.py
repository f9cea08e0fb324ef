"""Properties of the parser and of one source's pipeline (bytes → events).

* Nothing raises, whatever the bytes, and every line read is accounted for: parsed
  (part of an event) or unparsed (with a reason).
* On generated nginx lines, :meth:`Parser.head` and :meth:`Parser.parse` agree, and
  ``parse`` gives back the fields the line was built from.
* CRLF is LF and NUL bytes are dropped (framing), so they give the events of the clean
  line; invalid UTF-8 is kept visible as ``\\xNN`` and never crashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference.formats import load_format
from reference.parser import EventHead, Parser, peer_of
from reference.pipeline import SourcePipeline, parse_text

from retrywatch.detect.events import Event, Unparsed

# Reporting a falsifying example makes hypothesis import libcst, which warns about
# mypy_extensions; with filterwarnings=error that would hide the report behind an
# INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

UTC = ZoneInfo("UTC")
LEVELS: list[str] = load_format("nginx_error")["levels"]

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
FEW = settings(SETTINGS, max_examples=50)


def records(data: bytes) -> list[Event | Unparsed]:
    return parse_text(data, UTC)


def events(data: bytes) -> list[Event]:
    return [r for r in records(data) if isinstance(r, Event)]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def run_pipeline(chunks: list[bytes], *, ordered: bool = False,
                 max_line: int = 64 * 1024) -> tuple[SourcePipeline, list[tuple[EventHead, int]],
                                                     list[Event | Unparsed]]:
    pipe = SourcePipeline("s", Parser(UTC), ordered=ordered, max_line=max_line)
    heads: list[tuple[EventHead, int]] = []
    recs: list[Event | Unparsed] = []
    for chunk in chunks:
        batch = pipe.feed(chunk)
        heads += batch.events
        recs += batch.records
    batch = pipe.flush()
    heads += batch.events
    recs += batch.records
    return pipe, heads, recs


def assert_accounted(pipe: SourcePipeline) -> None:
    s = pipe.stats
    assert s.lines_read == s.lines_parsed + s.lines_unparsed, s
    assert s.events <= s.lines_parsed
    assert all(n > 0 for n in s.unparsed.values()), s.unparsed


def assert_failure_agrees(head: EventHead, event: Event) -> None:
    """``head.failure``: the kind of a connect failure on a connection (one with an id,
    the detector's key), else ``None``."""
    if event.connect_failure and event.cid is not None:
        assert head.failure is not None
        assert head.failure == event.kind
    else:
        assert head.failure is None


# -- generated nginx lines ---------------------------------------------------------------

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_:[]*", min_size=1, max_size=12)
ip = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
addr = st.tuples(ip, st.integers(1, 65535)).map(lambda t: f"{t[0]}:{t[1]}")
errno_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,'-", min_size=1, max_size=30).map(
    lambda s: s.strip() or "x")
quoted_safe = st.text(alphabet=st.characters(codec="utf-8", exclude_characters='"\n\r\x00'),
                      max_size=30)


@dataclass
class Generated:
    line: str
    stamp: datetime
    level: str
    pid: int
    tid: int
    cid: int | None
    message: str
    failure: bool
    kind: str | None
    errno: int | None
    peer_in_message: str | None
    tail: dict[str, Any]


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bool, str | None, int | None, str | None]:
    """A message and whether it is a connect failure, its kind, errno and message peer."""
    errno = draw(st.integers(1, 20000))
    text = draw(errno_text)
    shape = draw(st.sampled_from([
        "connect_failed", "connect_to_failed", "timeout_connecting", "timeout_reading",
        "no_live", "no_live_bare", "open", "keepalive", "premature", "lua", "free",
    ]))
    if shape == "connect_failed":
        return (f"connect() failed ({errno}: {text}) while connecting to upstream", True,
                "connect_failed", errno, None)
    if shape == "connect_to_failed":
        peer = draw(st.one_of(addr, token.map(lambda t: f"unix:/tmp/{t}.sock")))
        return (f"connect() to {peer} failed ({errno}: {text}) while connecting to upstream",
                True, "connect_to_failed", errno, peer)
    if shape == "timeout_connecting":
        return (f"upstream timed out ({errno}: {text}) while connecting to upstream", True,
                "upstream_timed_out", errno, None)
    if shape == "timeout_reading":
        return (f"upstream timed out ({errno}: {text}) while reading response header from "
                "upstream", False, "upstream_timed_out", errno, None)
    if shape == "no_live":
        return "no live upstreams while connecting to upstream", True, "no_live_upstreams", \
            None, None
    if shape == "no_live_bare":
        return "no live upstreams", True, "no_live_upstreams", None, None
    if shape == "open":
        return f'open() "/{text}" failed ({errno}: {text})', False, None, errno, None
    if shape == "keepalive":
        return f"client {draw(ip)} closed keepalive connection", False, None, None, None
    if shape == "premature":
        return ("epoll_wait() reported that client prematurely closed connection, so "
                "upstream connection is closed too while connecting to upstream", False, None,
                None, None)
    if shape == "lua":
        return f"[lua] balancer.lua:{errno}: {text}", False, None, None, None
    free = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz ()", min_size=1, max_size=40))
    assume(not free.startswith(("connect() ", "no live upstreams", "upstream timed out (")))
    assume(free.strip() == free and "(" not in free)
    return free, False, None, None, None


@st.composite
def tails(draw: st.DrawFn, with_host: bool = False) -> dict[str, Any]:
    """The key/value tail nginx appends, as fields (empty: no tail)."""
    shape = "http" if with_host else draw(st.sampled_from(["none", "http", "stream"]))
    if shape == "none":
        return {}
    fields: dict[str, Any] = {"client": draw(st.one_of(ip, st.just("::1"))),
                              "server": draw(st.one_of(addr, token, st.just("")))}
    if shape == "stream":
        if draw(st.booleans()):
            fields["upstream"] = draw(addr)
        for key in ("bytes_from_client", "bytes_to_client", "bytes_from_upstream",
                    "bytes_to_upstream"):
            fields[key] = draw(st.integers(0, 10**9))
        return fields
    if draw(st.booleans()):
        fields["request"] = draw(quoted_safe)
    if draw(st.booleans()):
        fields["upstream"] = "http://" + draw(addr) + "/" + draw(token)
    if with_host or draw(st.booleans()):
        fields["host"] = draw(quoted_safe)
    return fields


def render_tail(fields: dict[str, Any]) -> str:
    if not fields:
        return ""
    out = f", client: {fields['client']}, server: {fields['server']}"
    if "request" in fields:
        out += f', request: "{fields["request"]}"'
    if "upstream" in fields:
        out += f', upstream: "{fields["upstream"]}"'
    if "host" in fields:
        out += f', host: "{fields["host"]}"'
    if "bytes_from_client" in fields:
        out += (f", bytes from/to client:{fields['bytes_from_client']}/"
                f"{fields['bytes_to_client']}, bytes from/to upstream:"
                f"{fields['bytes_from_upstream']}/{fields['bytes_to_upstream']}")
    return out


@st.composite
def nginx_lines(draw: st.DrawFn, with_host: bool = False) -> Generated:
    stamp = draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31)))
    stamp = stamp.replace(microsecond=0)
    level = draw(st.sampled_from(LEVELS))
    pid = draw(st.integers(0, 2**22))
    tid = draw(st.one_of(st.just(0), st.just(pid), st.integers(0, 2**31)))
    cid = draw(st.one_of(st.none(), st.integers(0, 10**12)))
    message, failure, kind, errno, peer = draw(messages())
    tail = draw(tails(with_host))
    prefix = f"{stamp:%Y/%m/%d %H:%M:%S} [{level}] {pid}#{tid}: "
    if cid is not None:
        prefix += f"*{cid} "
    line = prefix + message + render_tail(tail)
    return Generated(line, stamp, level, pid, tid, cid, message, failure, kind, errno, peer,
                     tail)


@SETTINGS
@given(nginx_lines())
def test_head_and_parse_agree_on_generated_lines(gen: Generated) -> None:
    parser = Parser(UTC)
    head = parser.head(gen.line, "src")
    event = parser.parse(gen.line, "src")
    assert isinstance(head, EventHead), head
    assert isinstance(event, Event), event
    assert event.connect_failure == gen.failure
    assert_failure_agrees(head, event)
    assert (head.pid, head.cid, head.ts, head.time) == (event.pid, event.cid, event.ts,
                                                         event.time)
    assert head.time == gen.stamp.replace(tzinfo=UTC)
    assert head.ts == int(gen.stamp.replace(tzinfo=UTC).timestamp())
    if event.ended:
        assert head.ended_hint


@SETTINGS
@given(nginx_lines())
def test_parse_recovers_the_generated_fields(gen: Generated) -> None:
    event = Parser(UTC).parse(gen.line)
    assert isinstance(event, Event), event
    assert (event.level, event.pid, event.tid, event.cid) == (gen.level, gen.pid, gen.tid,
                                                              gen.cid)
    assert event.message == gen.message
    if gen.kind is not None:
        assert event.kind == gen.kind
    else:
        assert event.kind in (None, "other")
    if gen.errno is not None:
        assert event.errno == gen.errno
    for key in ("client", "server", "request", "upstream", "host", "bytes_from_client",
                "bytes_to_client", "bytes_from_upstream", "bytes_to_upstream"):
        assert getattr(event, key) == gen.tail.get(key), key
    if gen.peer_in_message is not None:
        assert event.peer == gen.peer_in_message
    elif "upstream" in gen.tail:
        assert event.peer == peer_of(gen.tail["upstream"])
    if "bytes_from_client" in gen.tail:
        assert event.subsystem == "stream"
    elif "request" in gen.tail or "host" in gen.tail:
        assert event.subsystem == "http"


@FEW
@given(nginx_lines(with_host=True), st.sampled_from(['"', '", x', 'a"b', '""']))
def test_a_quote_in_the_last_quoted_value(gen: Generated, extra: str) -> None:
    """The full tail grammar: a quote inside the host value (the last key)."""
    host = gen.tail["host"] + extra
    line = gen.line.removesuffix(f'"{gen.tail["host"]}"') + f'"{host}"'
    event = Parser(UTC).parse(line)
    assert isinstance(event, Event)
    assert event.host == host
    assert event.message == gen.message
    assert event.client == gen.tail["client"]


@SETTINGS
@given(nginx_lines())
def test_generated_line_through_the_pipeline(gen: Generated) -> None:
    data = gen.line.encode() + b"\n"
    pipe, heads, _ = run_pipeline([data])
    assert_accounted(pipe)
    assert pipe.stats.events == 1
    assert pipe.stats.lines_parsed == 1
    if gen.failure and gen.cid is not None:
        assert [(h.failure, h.cid, h.pid, h.ts, n) for h, n in heads] == [
            (gen.kind, gen.cid, gen.pid, int(gen.stamp.replace(tzinfo=UTC).timestamp()), 1)]
    [rec] = records(data)
    assert isinstance(rec, Event)
    assert rec.line == gen.line


# -- line ends, NUL bytes, invalid UTF-8 ------------------------------------------------------


def event_dicts(data: bytes) -> list[dict[str, Any]]:
    return [r.to_dict() for r in records(data)]


@FEW
@given(st.lists(nginx_lines(), min_size=1, max_size=4), st.booleans())
def test_crlf_is_lf(gens: list[Generated], final_end: bool) -> None:
    lf = "\n".join(g.line for g in gens).encode() + (b"\n" if final_end else b"")
    crlf = lf.replace(b"\n", b"\r\n")
    assert event_dicts(crlf) == event_dicts(lf)
    assert len(events(crlf)) == len(gens)


@FEW
@given(st.lists(nginx_lines(), min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 5)), min_size=1, max_size=6))
def test_nul_bytes_are_dropped(gens: list[Generated], nuls: list[tuple[int, int]]) -> None:
    clean = "\n".join(g.line for g in gens).encode() + b"\n"
    dirty = bytearray(clean)
    for pos, n in sorted(nuls, reverse=True):
        at = pos % (len(dirty) + 1)
        dirty[at:at] = b"\x00" * n
    assert event_dicts(bytes(dirty)) == event_dicts(clean)
    pipe, _, _ = run_pipeline([bytes(dirty)])
    assert_accounted(pipe)
    assert pipe.stats.events == len(gens)


@FEW
@given(nginx_lines(), st.binary(min_size=1, max_size=4).filter(
    lambda b: b"\n" not in b and b"\r" not in b and b"\x00" not in b))
def test_invalid_utf8_in_the_message_is_kept_visible(gen: Generated, junk: bytes) -> None:
    try:
        junk.decode()
    except UnicodeDecodeError:
        pass
    else:
        assume(False)
    raw = gen.line.encode()
    prefix_end = raw.index(b": ") + 2 + (len(f"*{gen.cid} ") if gen.cid is not None else 0)
    data = raw[:prefix_end] + junk + raw[prefix_end:] + b"\n"
    [rec] = records(data)
    assert isinstance(rec, Event)
    assert (rec.pid, rec.tid, rec.cid, rec.level) == (gen.pid, gen.tid, gen.cid, gen.level)
    assert "\\x" in rec.message
    assert rec.line == data[:-1].decode("utf-8", "backslashreplace")


def test_invalid_utf8_in_a_quoted_value() -> None:
    line = (b'2024/01/01 00:00:00 [error] 7#7: *1 connect() failed (111: refused) while '
            b'connecting to upstream, client: 1.2.3.4, server: s, request: "GET /\xff\xfe '
            b'HTTP/1.1", upstream: "http://1.2.3.4:80/", host: "h"\n')
    [rec] = records(line)
    assert isinstance(rec, Event)
    assert rec.request == "GET /\\xff\\xfe HTTP/1.1"
    assert rec.connect_failure
    assert rec.host == "h"


# -- arbitrary bytes -----------------------------------------------------------------------

SHAPES = [
    b"2024/01/01 00:00:00 [error] 37#37: *5 connect() failed (111: Connection refused) "
    b'while connecting to upstream, client: 10.0.0.1, server: a, upstream: "10.0.0.2:9009"',
    b"2024/01/01 00:00:01 [info] 37#37: *5 client 10.0.0.1 closed keepalive connection",
    b"2024/01/01 00:00:00 [notice] 1#1: start worker processes",
    b"2024/01/01 00:00:00 [error] 1#1: no live upstreams while connecting to upstream",
    b"2024/13/45 00:00:00 [error] 1#1: *1 bad date",
    b"2024/01/01 00:00:00 [loud] 1#1: *1 bad level",
    b"2024-01-01T00:00:00Z stderr P 2024/01/01 00:00:02 [error] 2#2: *9 connect() ",
    b"2024-01-01T00:00:00Z stderr F failed (111: x) while connecting to upstream",
    b'{"log":"2024/01/01 00:00:03 [error] 3#3: *4 no live upstreams\\n"}',
    b'{"log":"piece "}',
    b'{"log":broken',
    b"<187>Nov  5 17:33:53 vm nginx: 2024/01/01 00:00:04 [error] 4#4: *1 x",
    b"PHP message: PHP Warning: x",
    b"",
    b"   ",
    b"\xff\xfe\x00",
]

byte_lines = st.lists(st.one_of(st.sampled_from(SHAPES), st.binary(max_size=40)), max_size=10)
line_ends = st.sampled_from([b"\n", b"\r\n", b"\r", b""])


@st.composite
def byte_streams(draw: st.DrawFn) -> bytes:
    lines = draw(byte_lines)
    return b"".join(line + draw(line_ends) for line in lines)


@SETTINGS
@given(st.binary(max_size=400))
def test_parse_text_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    for rec in records(data):
        assert isinstance(rec, (Event, Unparsed))
        if isinstance(rec, Unparsed):
            assert rec.reason
            assert rec.to_dict()["unparsed"] is True
        else:
            rec.to_dict()


@SETTINGS
@given(byte_streams(), st.lists(st.integers(0, 10**4), max_size=6), st.booleans(),
       st.sampled_from([64, 64 * 1024]))
def test_pipeline_never_raises_and_accounts_for_every_line(
    data: bytes, cuts: list[int], ordered: bool, max_line: int
) -> None:
    pipe, heads, recs = run_pipeline(split_at(data, cuts), ordered=ordered, max_line=max_line)
    assert_accounted(pipe)
    assert pipe.stats.bytes_read == len(data)
    for head, n in heads:
        assert n >= 1
        assert_failure_agrees(head, head.event())
    if ordered:
        assert heads == []
        assert sum(isinstance(r, Event) for r in recs) == pipe.stats.events


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(0, 10**4), max_size=6))
def test_pipeline_never_raises_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    pipe, _, _ = run_pipeline(split_at(data, cuts))
    assert_accounted(pipe)


@SETTINGS
@given(byte_streams(), st.lists(st.integers(0, 10**4), max_size=6))
def test_fast_and_ordered_modes_count_the_same(data: bytes, cuts: list[int]) -> None:
    """The storm path (identical lines counted) and ``retrywatch parse``'s ordered path
    see the same events and the same unparsed lines, and the storm path hands the
    detector every connect failure that has a connection id."""
    chunks = split_at(data, cuts)
    fast, heads, _ = run_pipeline(chunks)
    ordered, _, recs = run_pipeline(chunks, ordered=True)
    assert fast.stats == ordered.stats
    failures = sum(n for h, n in heads if h.failure is not None)
    expected = sum(1 for r in recs if isinstance(r, Event) and r.connect_failure
                   and r.cid is not None)
    assert failures == expected


@SETTINGS
@given(byte_streams())
def test_feed_record_never_raises(data: bytes) -> None:
    pipe = SourcePipeline("s", Parser(UTC))
    for record in data.split(b"\n"):
        pipe.feed_record(record)
    pipe.flush()
    assert_accounted(pipe)


# -- accounting: split lines ------------------------------------------------------------------

CRI_PIECE = b"2024-01-01T00:00:00Z stderr P yyyyyyyy\n"


def test_over_long_cri_line_is_counted_once_per_raw_line() -> None:
    """The pieces of a CRI line longer than max_line are unparsed (too_long), not parsed."""
    data = CRI_PIECE * 6 + b"2024-01-01T00:00:00Z stderr F z\n"
    pipe, heads, _ = run_pipeline([data], max_line=40)
    assert_accounted(pipe)
    assert pipe.stats.lines_read == 7
    assert pipe.stats.lines_parsed == 0
    assert heads == []


def test_cri_piece_at_end_of_input_is_not_lost() -> None:
    data = (b"2024-01-01T00:00:00Z stderr P 2024/01/01 00:00:00 [error] 1#1: *1 connect() "
            b"failed (111: Connection refused) while connecting to upstream\n")
    pipe, _, recs = run_pipeline([data], ordered=True)
    assert_accounted(pipe)
    assert pipe.stats.events == 1
    [event] = recs
    assert isinstance(event, Event)
    assert event.connect_failure


def test_cri_pieces_joined_across_chunks_are_one_event() -> None:
    line = (b"2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (111: Connection refused) "
            b"while connecting to upstream")
    data = (b"2024-01-01T00:00:00Z stderr P " + line[:30] + b"\n"
            b"2024-01-01T00:00:00Z stdout F 10.0.0.1 - - GET / 200\n"
            b"2024-01-01T00:00:00Z stderr F " + line[30:] + b"\n")
    for cut in range(len(data) + 1):
        pipe, _, recs = run_pipeline([data[:cut], data[cut:]], ordered=True)
        assert_accounted(pipe)
        assert pipe.stats.lines_read == 3
        assert [r.line for r in recs] == ["10.0.0.1 - - GET / 200", line.decode()]


def test_read_timeout_with_the_words_in_a_value_is_no_connect_failure() -> None:
    line = ('2026/11/25 17:33:50 [error] 1#1: *300 upstream timed out (110: Connection timed '
            'out) while reading response header from upstream, client: 127.0.0.1, server: s, '
            'request: "GET /x HTTP/1.1", upstream: "http://127.0.0.1:1/x", '
            'host: "a while connecting to upstream"')
    parser = Parser(UTC)
    event = parser.parse(line)
    assert isinstance(event, Event)
    assert event.context == "reading response header from upstream"
    assert not event.connect_failure
    head = parser.head(line)
    assert isinstance(head, EventHead)
    assert head.failure is None
