"""What ``retrywatch top`` shows, read from a running retrywatch: its REST API for the
whole picture, its event stream for each alert change as it happens.

:class:`Feed` keeps one :class:`View` up to date. :meth:`Feed.follow` opens
``/api/v1/alerts/stream``, then reads the alerts firing (runaway, disk and upstream), then
applies each event of the stream to them (resuming with ``Last-Event-ID`` after a break,
reading the alerts again on a ``reset``); :meth:`Feed.load_others` reads the hottest
connections, the upstream peers and the sources (and the alerts too while no stream is
open). A service that cannot
be reached, or that wants a token it was not given, is said in ``View.error`` in words an
operator can act on; nothing raises to the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

__all__ = ["Feed", "View", "sse_events"]

#: Alerts firing read at once (the API's most).
ALERTS_LIMIT = 1000
#: Hottest connections read.
CONNECTIONS_LIMIT = 50
#: Upstream peers read (most failing first).
UPSTREAMS_LIMIT = 100
#: The events of alert changes, and the alerts each kind lands in.
ALERT_EVENTS = {"fired": "alerts", "updated": "alerts", "confirmed": "alerts",
                "resolved": "alerts", "disk_fired": "disk", "disk_resolved": "disk",
                "upstream_fired": "peers", "upstream_resolved": "peers"}


@dataclass
class View:
    """A running retrywatch as ``top`` sees it now."""

    url: str
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # firing, by id
    disk: dict[str, dict[str, Any]] = field(default_factory=dict)  # disk alerts firing
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)  # upstream alerts firing
    connections: list[dict[str, Any]] = field(default_factory=list)
    #: the upstream peers counted (GET /api/v1/upstreams), most failing first
    upstreams: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    #: Why the service is not being read (None: it is).
    error: str | None = None
    #: The event stream is open.
    live: bool = False
    #: Alert changes applied from the stream since the start.
    events: int = 0


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str, str | None]]:
    """Server-Sent Events from a stream's lines: (event, data, the last event id) each,
    comments skipped; a block with an id but no data (the greeting) is yielded as
    ("", "", id): the id to resume from is known before the first event. (By hand: a dozen
    lines of the standard's parsing, no library needed for the one stream we read.)"""
    event, last_id, seen_id = "", None, False
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event or "message", "\n".join(data), last_id
            elif seen_id:
                yield "", "", last_id
            event, data, seen_id = "", [], False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id, seen_id = value, True


class Feed:
    def __init__(self, url: str, token: str | None = None, *,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = client or httpx.AsyncClient(
            base_url=self.url, headers=headers,
            timeout=httpx.Timeout(10.0, connect=3.0))
        self.view = View(self.url)
        self._last_id: str | None = None

    async def close(self) -> None:
        await self.client.aclose()

    async def _get(self, path: str) -> Any:
        r = await self.client.get(path)
        if r.status_code == 401:
            raise _Unauthorized
        r.raise_for_status()
        return orjson.loads(r.content)

    async def load_alerts(self) -> bool:
        """The alerts firing (runaway, disk and upstream) read again; whether they could be (else
        ``view.error`` says why). While the stream is followed, only :meth:`follow` calls
        this, between opening the stream and reading its events: a change in between is
        in the stream, applied after, never lost under an older list."""
        try:
            alerts = await self._get(f"/api/v1/alerts?state=firing&limit={ALERTS_LIMIT}")
            disk = await self._get("/api/v1/disk")
            upstreams = await self._get("/api/v1/upstreams?limit=1")
        except Exception as exc:  # every failure is the view's to say, none the caller's
            self.view.error = self._why(exc)
            return False
        self.view.alerts = {a["id"]: a for a in alerts["alerts"]}
        self.view.disk = {a["id"]: a for a in disk["alerts"] if a["state"] == "firing"}
        self.view.peers = {a["id"]: a for a in upstreams["alerts"] if a["state"] == "firing"}
        self.view.error = None
        return True

    async def load_others(self) -> bool:
        """The hottest connections, the upstream peers and the sources read again (whether
        they could be)."""
        try:
            connections = await self._get(f"/api/v1/connections?limit={CONNECTIONS_LIMIT}")
            upstreams = await self._get(f"/api/v1/upstreams?limit={UPSTREAMS_LIMIT}")
            sources = await self._get("/api/v1/sources")
        except Exception as exc:
            self.view.error = self._why(exc)
            return False
        self.view.connections = connections["connections"]
        self.view.upstreams = upstreams["peers"]
        self.view.sources = sources["sources"]
        if not self.view.live:
            return await self.load_alerts()  # nothing else keeps the alerts current
        self.view.error = None
        return True

    async def follow(self, changed: Callable[[], None]) -> None:
        """Read the event stream until it ends or breaks (then return: the caller waits
        and calls again, which resumes after the last event had); ``changed`` after each
        change applied."""
        headers = {"Accept": "text/event-stream"}
        if self._last_id is not None:
            headers["Last-Event-ID"] = self._last_id
        try:
            async with self.client.stream("GET", "/api/v1/alerts/stream", headers=headers,
                                          timeout=httpx.Timeout(10.0, read=None)) as r:
                if r.status_code == 401:
                    raise _Unauthorized
                r.raise_for_status()
                # subscribed: the list now, the events after it (see load_alerts)
                if not await self.load_alerts():
                    return
                self.view.live = True
                changed()
                async for event, data, last_id in sse_events(r.aiter_lines()):
                    self._last_id = last_id or self._last_id
                    if await self.apply(event, data):
                        changed()
        except Exception as exc:
            self.view.error = self._why(exc)
        finally:
            self.view.live = False
            changed()

    async def apply(self, event: str, data: str) -> bool:
        """One event of the stream applied to the view; whether it changed anything."""
        view = self.view
        if event == "reset":  # events were missed: read the alerts again, then go on
            return await self.load_alerts()
        kind = ALERT_EVENTS.get(event)
        if kind is None:
            return False
        alert = orjson.loads(data)
        view.events += 1
        firing: dict[str, dict[str, Any]] = getattr(view, kind)
        if event.endswith("resolved"):
            firing.pop(alert["id"], None)
        else:
            firing[alert["id"]] = alert
        return True

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, _Unauthorized):
            return (f"{self.url} wants its API token: set RETRYWATCH_API_TOKEN, or give "
                    "--token-file")
        if isinstance(exc, httpx.ConnectError):
            reason = str(exc) or "connection refused"
            return (f"cannot reach {self.url} ({reason}): is `retrywatch run` listening "
                    "there? (--url)")
        if isinstance(exc, httpx.HTTPStatusError):
            return f"{self.url} answered HTTP {exc.response.status_code} to {exc.request.url.path}"
        if isinstance(exc, httpx.TimeoutException):
            return f"{self.url} did not answer in time"
        if isinstance(exc, httpx.TransportError):
            return f"the connection to {self.url} broke ({exc or type(exc).__name__})"
        return f"{self.url}: {type(exc).__name__}: {exc}"


class _Unauthorized(Exception):
    """The API answered 401."""
