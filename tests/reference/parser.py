"""The nginx error-log parser: one event's text in, an event or :class:`Unparsed` out.

The line shapes live in ``parsers/nginx_error.toml``; this module applies them. It
never raises on input: whatever it cannot read comes back as :class:`Unparsed` with a
reason, so the caller can count it.

Two depths: :meth:`Parser.head` reads the prefix (time, level, pid, cid) and whether the
line is an upstream connect failure, which is all the detector needs for most lines;
:meth:`Parser.parse` reads every field. An :class:`EventHead` parses the rest on demand.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from typing import Any

from reference.formats import compile_pattern, load_format
from reference.framing import decode
from retrywatch.detect.events import CONNECT_FAILURE_KINDS, Event, Kind, Subsystem, Unparsed

__all__ = ["EventHead", "Parser", "peer_of", "subsystem_of"]

_HTTP_SCHEMES = ("http://", "https://", "grpc://", "grpcs://", "fastcgi://", "uwsgi://",
                 "scgi://", "memcached://")
_TAIL_KEY = ", client: "
_CONNECTING = " while connecting to upstream"
_CONNECTING_TAIL = _CONNECTING + _TAIL_KEY


def _while_connecting(text: str) -> bool:
    """A timeout is a connect failure only when nginx's action (the context right before
    the tail, or at the end) is connecting: not a Host header that says so."""
    return _CONNECTING_TAIL in text or text.endswith(_CONNECTING)
_FAILURE_STARTS = ("connect() ", "no live upstreams", "upstream timed out (")


def subsystem_of(text: str) -> str:
    """The nginx module of a failure line, from its tail alone: ``stream`` (byte counters),
    ``http`` (a request or an upstream URL), or ``unknown``."""
    if ", bytes from/to client:" in text:
        return "stream"
    if ', request: "' in text or '://' in text:
        return "http"
    return "unknown"


def peer_of(upstream: str) -> str:
    """The peer address in an ``upstream:`` value: no scheme, no URI.

    ``http://127.0.0.1:8080/x`` → ``127.0.0.1:8080``; ``http://unix:/run/a.sock:/x`` →
    ``unix:/run/a.sock``; a stream ``10.0.0.1:5555`` or a group name stays as it is.
    """
    scheme_end = upstream.find("://")
    if scheme_end < 0:
        return upstream
    rest = upstream[scheme_end + 3 :]
    if rest.startswith("unix:"):
        return "unix:" + rest[5:].split(":", 1)[0]
    slash = rest.find("/")
    return rest if slash < 0 else rest[:slash]


class EventHead:
    """An event's prefix, read cheaply; :meth:`event` parses the rest once, on demand."""

    __slots__ = ("_event", "_parser", "cid", "ended_hint", "failure", "lines", "pid",
                 "source", "text", "time", "ts")

    def __init__(self, parser: Parser, text: str, source: str, time: datetime, ts: int,
                 pid: int, cid: int | None, failure: Kind | None, ended_hint: bool) -> None:
        self._parser = parser
        self._event: Event | None = None
        self.text = text
        self.source = source
        self.time = time
        self.ts = ts
        self.pid = pid
        self.cid = cid
        self.failure = failure  # the kind, when an upstream connect failure (connect_failure)
        self.ended_hint = ended_hint  # may end its connection (Event.ended decides)
        self.lines = text.count("\n") + 1

    def event(self) -> Event:
        if self._event is None:
            parsed = self._parser.parse(self.text, self.source)
            assert isinstance(parsed, Event), "a line whose head parsed always parses"
            self._event = parsed
        return self._event


class Parser:
    """Parses nginx error events whose naive timestamps are in zone ``tz``."""

    def __init__(self, tz: tzinfo) -> None:
        spec = load_format("nginx_error")
        self.tz = tz
        head = spec["head"].strip()
        self._head = compile_pattern(head, "re")
        self._fast_tail = compile_pattern(spec["fast_tail"], "re")
        self._tail = compile_pattern(spec["tail"])
        self._levels = frozenset(spec["levels"])
        self._kinds: list[tuple[Kind, Any]] = [
            (name, compile_pattern(src, "re")) for name, src in spec["kinds"].items()
        ]
        pats = spec["patterns"]
        self._errno = compile_pattern(pats["errno"], "re")
        self._context = compile_pattern(pats["context"], "re")
        self._lua_context = compile_pattern(pats["lua_context"], "re")
        self._ended = compile_pattern(pats["ended"], "re")
        self._times: dict[str, tuple[datetime, int] | None] = {}
        self._block = _block_pattern(head, spec["kinds"])
        self._btimes: dict[bytes, tuple[datetime, int]] = {}
        self._blevels = frozenset(level.encode() for level in spec["levels"])

    # -- time -------------------------------------------------------------
    def _time(self, stamp: str) -> tuple[datetime, int] | None:
        """``YYYY/MM/DD HH:MM:SS`` in the configured zone (cached: storms share seconds)."""
        hit = self._times.get(stamp, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        if len(self._times) > 4096:
            self._times.clear()
        try:
            when = datetime(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]),
                            int(stamp[11:13]), int(stamp[14:16]), int(stamp[17:19]),
                            tzinfo=self.tz)
            value: tuple[datetime, int] | None = (when, int(when.timestamp()))
        except ValueError:
            value = None
        self._times[stamp] = value
        return value

    def _reject(self, m: Any, text: str, source: str) -> tuple[datetime, int] | Unparsed:
        if m is None:
            return Unparsed(_prefix_problem(text), text, source)
        stamp, level = m.group("stamp", "level")
        if level not in self._levels:
            return Unparsed("unknown_level", text, source)
        when = self._time(stamp)
        if when is None:
            return Unparsed("bad_timestamp", text, source)
        return when

    # -- the head ------------------------------------------------------------
    def head(self, text: str, source: str = "") -> EventHead | Unparsed:
        """The prefix fields and whether the event is a connect failure."""
        m = self._head.match(text)
        when = self._reject(m, text, source)
        if isinstance(when, Unparsed):
            return when
        pid, cid = m.group("pid", "cid")
        pos = m.end()
        failure = self._failure_kind(text, pos) if text.startswith(_FAILURE_STARTS, pos) else None
        return EventHead(
            self, text, source, when[0], when[1], int(pid), int(cid) if cid else None,
            failure if cid else None,
            "closed" in text or "client disconnected" in text or "client timed out" in text,
        )

    def scan(self, raws: list[bytes], source: str = "") -> list[EventHead | Unparsed | None]:
        """:meth:`head` for many distinct single lines at once (one regex pass in C).

        Aligned with ``raws``: an :class:`EventHead` where the detector needs the line (a
        connect failure, a line that may end a connection, or a line whose time is newer
        than all before it), ``None`` for a valid event it does not need, and
        :class:`Unparsed` for a line that is no event.
        """
        found = self._block.findall(b"\n".join(raws))
        if len(found) != len(raws):  # cannot happen (one match per line); stay exact anyway
            return [self.head(decode(raw), source) for raw in raws]
        out: list[EventHead | Unparsed | None] = []
        times = self._btimes
        levels = self._blevels
        newest = -1
        for raw, (stamp, level, pid, cid, fail, timeout) in zip(raws, found, strict=True):
            when = times.get(stamp) if level in levels else None
            if when is None:
                result = self.head(decode(raw), source)
                if type(result) is EventHead:
                    if len(times) > 4096:
                        times.clear()
                    times[stamp] = (result.time, result.ts)
                out.append(result)
                continue
            ended = cid != b"" and (b"closed" in raw or b"client disconnected" in raw
                                    or b"client timed out" in raw)
            failure: Kind | None = None
            if cid:
                if fail:
                    failure = _KIND_OF_START[fail[:11]]
                elif timeout and (_BCONNECTING_TAIL in raw or raw.endswith(_BCONNECTING)):
                    failure = "upstream_timed_out"
            if failure or ended or when[1] > newest:
                newest = max(newest, when[1])
                out.append(EventHead(self, decode(raw), source, when[0], when[1], int(pid),
                                     int(cid) if cid else None, failure, ended))
            else:
                out.append(None)
        return out

    def failure_fields(self, head: EventHead) -> tuple[str | None, str | None, int | None]:
        """``(peer, server, errno)`` of a connect-failure line, cheaper than :meth:`parse`
        when the line has the common tail (the fields are the same)."""
        text = head.text
        start = text.find(": ", 20) + 2
        if head.failure == "connect_to_failed" or "\n" in text:
            ev = head.event()
            return ev.peer, ev.server, ev.errno
        pos = text.rfind(_TAIL_KEY, start)
        tail = self._fast_tail.match(text, pos) if pos >= 0 else None
        if tail is None:
            ev = head.event()
            return ev.peer, ev.server, ev.errno
        upstream = tail.group("upstream") or tail.group("upstream_bare")
        em = self._errno.search(text, start, pos)
        return (peer_of(upstream) if upstream is not None else None, tail.group("server"),
                int(em.group("errno")) if em is not None else None)

    def _failure_kind(self, text: str, pos: int) -> Kind | None:
        """The kind if the message at ``pos`` is an upstream connect failure."""
        for name, pattern in self._kinds:
            if pattern.match(text, pos) is not None:
                if name in CONNECT_FAILURE_KINDS or _while_connecting(text):
                    return name
                return None
        return None

    # -- the whole event -------------------------------------------------------
    def parse(self, text: str, source: str = "") -> Event | Unparsed:
        """Parse one event (a line, or a line with its continuation lines joined by ``\n``)."""
        m = self._head.match(text)
        when = self._reject(m, text, source)
        if isinstance(when, Unparsed):
            return when
        start = m.end()
        cid = m.group("cid")
        ev = Event(when[0], when[1], m.group("level"), int(m.group("pid")),
                   int(m.group("tid")), int(cid) if cid else None, text[start:], text, source,
                   lines=text.count("\n") + 1)
        tail = self._find_tail(text, start)
        if tail is not None:
            ev.message = text[start : tail.start()]
            self._read_tail(ev, tail)
        self._read_message(ev, ev.message, with_tail=tail is not None)
        return ev

    def _find_tail(self, text: str, start: int) -> Any:
        """The key/value tail: the right-most ", client: " from which a tail grammar
        matches to the end (the fast one first, then the full one)."""
        for grammar in (self._fast_tail, self._tail):
            pos = text.rfind(_TAIL_KEY, start)
            while pos >= 0:
                tail = grammar.match(text, pos)
                if tail is not None:
                    return tail
                pos = text.rfind(_TAIL_KEY, start, pos)
        return None

    def _read_tail(self, ev: Event, tail: Any) -> None:
        (ev.client, ev.server, ev.login, ev.request, ev.subrequest, ev.host,
         ev.referrer) = tail.group("client", "server", "login", "request", "subrequest",
                                   "host", "referrer")
        upstream, bare = tail.group("upstream", "upstream_bare")
        if upstream is None:
            upstream = bare
        if upstream is not None:
            ev.upstream = upstream
            ev.peer = peer_of(upstream)
        counters = tail.group("bytes_from_client", "bytes_to_client", "bytes_from_upstream",
                              "bytes_to_upstream")
        if counters[0] is not None:
            (ev.bytes_from_client, ev.bytes_to_client, ev.bytes_from_upstream,
             ev.bytes_to_upstream) = map(int, counters)
            ev.subsystem = "stream"
        elif tail.group("starttls") is not None or ev.login is not None or bare is not None:
            ev.subsystem = "mail"

    def _read_message(self, ev: Event, message: str, *, with_tail: bool) -> None:
        if " while " in message:
            ctx = self._context.search(message)
            if ctx is not None:
                ev.context = ctx.group("context")
        if not with_tail and ", context: " in message:
            lua = self._lua_context.search(message)
            if lua is not None:
                ev.lua_context = lua.group("lua_context")
        self._classify(ev, message)
        if ev.subsystem is None:
            ev.subsystem = _subsystem(ev, message)
        if "client " in message and self._ended.search(message) is not None:
            ev.ended = True

    def _classify(self, ev: Event, message: str) -> None:
        if message.startswith(_FAILURE_STARTS):
            for name, pattern in self._kinds:
                km = pattern.match(message)
                if km is None:
                    continue
                ev.kind = name
                found = km.groupdict()
                if found.get("errno") is not None:
                    ev.errno = int(found["errno"])
                    ev.errno_text = found["errno_text"]
                if found.get("peer") is not None:
                    ev.peer = found["peer"]
                ev.connect_failure = name in CONNECT_FAILURE_KINDS or _while_connecting(ev.line)
                return
        if ": " in message:
            em = self._errno.search(message)
            if em is not None:
                ev.errno = int(em.group("errno"))
                ev.errno_text = em.group("errno_text")
        if ev.level in ("error", "crit", "alert", "emerg") and (
            ev.upstream is not None or (ev.context is not None and "upstream" in ev.context)
        ):
            ev.kind = "other"


def _subsystem(ev: Event, message: str) -> Subsystem | None:
    if message.startswith("stream ") or "bytes from/to client:" in message:
        return "stream"
    if ev.request is not None or ev.host is not None:
        return "http"
    if ev.upstream is not None:
        return "http" if ev.upstream.startswith(_HTTP_SCHEMES) else "stream"
    return None


_BCONNECTING = _CONNECTING.encode()
_BCONNECTING_TAIL = _CONNECTING_TAIL.encode()
_KIND_OF_START: dict[bytes, Kind] = {
    b"connect() f": "connect_failed", b"connect() t": "connect_to_failed",
    b"no live ups": "no_live_upstreams"}


def _block_pattern(head: str, kinds: dict[str, str]) -> Any:
    """One pattern that matches every line of a block of single lines (so ``findall``
    stays aligned with them), capturing the head fields and the failure kind."""
    prefix = head.strip().removeprefix("^").removesuffix(r"(?:\x20|\Z)")
    failing = "|".join(kinds[k] for k in ("connect_failed", "connect_to_failed",
                                          "no_live_upstreams"))
    source = (
        rf"^(?:{prefix}(?=\x20|$)"
        rf"(?:\x20(?:(?P<fail>{failing})|(?P<timeout>{kinds['upstream_timed_out']})))?)?.*$"
    )
    # Only the outer groups are kept: findall returns (stamp, level, pid, cid, fail, timeout).
    source = _keep_groups(source, ("stamp", "level", "pid", "cid", "fail", "timeout"))
    return re.compile(source.encode(), re.VERBOSE | re.MULTILINE)


def _keep_groups(source: str, keep: tuple[str, ...]) -> str:
    """Turn every named group not in ``keep`` into a non-capturing one."""
    return re.sub(r"\(\?P<(\w+)>", lambda m: m.group(0) if m.group(1) in keep else "(?:",
                  source)


def _prefix_problem(text: str) -> str:
    if not text.strip():
        return "blank"
    if text[:4].isdigit() and text[4:5] == "/":
        return "bad_prefix"
    return "no_timestamp"
