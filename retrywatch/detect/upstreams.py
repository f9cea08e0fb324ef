"""Is an upstream peer failing for many connections? Per peer, connect failures and the
distinct connections failing against it in the last minute, against a baseline learnt
from the stream, and an alert when a peer fails far above it.

The compiled core counts every connect failure by the peer it names (core/src/upstreams.rs:
at most ``upstream_peers`` peers named, the heavy hitters kept, each with its failures per
second, a sketch of its failing connections and an exponentially weighted mean and spread
of its failures per second). The service reads those figures about once a second, with
the engine's event time, and this module decides.

A peer is anomalous when, in the window (60 s of log time):

- it failed for at least ``min_connections`` distinct connections (one connection looping
  on a dead peer is the runaway alert's business, not this one's);
- it failed in at least ``min_seconds`` of the 60 seconds (a pod restarting, refused for a
  few seconds while its neighbours take the load, is not an outage);
- its failures per second are far above its baseline: at least ``SIGMAS`` spreads and
  ``RATIO`` times its mean (a peer that always refuses a little pages only when it
  refuses much more).

The alert fires as soon as a peer is anomalous, and resolves once its last 10 seconds are
back within its baseline (``mean + 2 sd``, or ``RATIO`` means) or it is no longer counted
(``peer_gone``), either held for ``hold`` seconds of log time. It names the runaway
connections' alerts firing against the same peer (one dead peer, and the connections
looping on it), and says what to look at.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from retrywatch.detect.diagnosis import Diagnosis
from retrywatch.detect.schema import (
    UPSTREAM_ALERTNAME,
    RunawayLinkData,
    UpstreamAlertData,
    UpstreamData,
)

__all__ = ["DEFAULT_MIN_CONNECTIONS", "DEFAULT_MIN_SECONDS", "UpstreamAlert",
           "UpstreamChange", "UpstreamWatch"]

#: Distinct failing connections in the window below which a peer never alerts.
DEFAULT_MIN_CONNECTIONS = 20
#: Seconds of the window (60) a peer must have failed in.
DEFAULT_MIN_SECONDS = 15
#: Log seconds the resolve condition must hold.
DEFAULT_HOLD = 10
#: "Far above the baseline": at least this many spreads above its mean...
SIGMAS = 4.0
#: ... and this many times its mean.
RATIO = 3.0
#: Spreads above the mean within which the last 10 s are "back to baseline".
RESOLVE_SIGMAS = 2.0
#: Resolved upstream alerts kept for the API.
RESOLVED_KEPT = 100
#: The failure mode's code (its page: docs/lint/upstream_failing.md).
CODE = "upstream_failing"

#: A runaway connection's alert firing: its id, connection id and the peers it fails on.
Runaway = tuple[str, int, Iterable[str]]


@dataclass(slots=True)
class Peer:
    """One peer's figures as the core gives them (``Core.upstreams``), at log second
    ``now``."""

    peer: str
    failures: int
    failing_seconds: int
    recent: int
    connections: int
    baseline_mean: float
    baseline_sd: float
    seconds_learnt: int
    warm: bool
    total: int
    first: int
    last: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> Peer:
        return cls(str(row["peer"]), int(row["failures"]), int(row["failing_seconds"]),
                   int(row["recent"]), int(row["connections"]), float(row["baseline_mean"]),
                   float(row["baseline_sd"]), int(row["seconds_learnt"]), bool(row["warm"]),
                   int(row["total"]), int(row["first"]), int(row["last"]))

    def rate(self, window: int) -> float:
        return self.failures / window

    def far_above(self, rate: float, sigmas: float) -> bool:
        """``rate`` is far above the baseline: ``sigmas`` spreads and RATIO means."""
        return (rate > self.baseline_mean + sigmas * self.baseline_sd
                and rate >= RATIO * self.baseline_mean)

    def to_dict(self, window: int, recent_seconds: int, anomalous: bool) -> UpstreamData:
        return {
            "peer": self.peer, "failures": self.failures,
            "failures_per_second": round(self.rate(window), 2),
            "recent_per_second": round(self.recent / recent_seconds, 2),
            "failing_seconds": self.failing_seconds, "connections": self.connections,
            "baseline_per_second": round(self.baseline_mean, 3),
            "baseline_sd": round(self.baseline_sd, 3),
            "seconds_learnt": self.seconds_learnt, "warm": self.warm, "total": self.total,
            "first_seen": _iso(self.first), "last_seen": _iso(self.last),
            "anomalous": anomalous,
        }


@dataclass(slots=True)
class UpstreamAlert:
    """A peer failing far above its baseline for many connections."""

    id: str
    peer: str
    fired_at: int  # log second
    figures: UpstreamData
    state: Literal["firing", "resolved"] = "firing"
    resolved_at: int | None = None
    resolved_reason: str | None = None
    peak_failures: int = 0
    peak_connections: int = 0
    runaway_alerts: list[RunawayLinkData] = field(default_factory=list)

    @classmethod
    def from_data(cls, d: UpstreamAlertData) -> UpstreamAlert:
        """A firing alert saved in a checkpoint: it fires on until the peer's figures,
        counted again after the restart, resolve it."""
        fired = int(datetime.fromisoformat(d["fired_at"]).timestamp())
        return cls(d["id"], d["peer"], fired, d["figures"], peak_failures=d["peak_failures"],
                   peak_connections=d["peak_connections"],
                   runaway_alerts=[{"id": r["id"], "cid": r["cid"]}
                                   for r in d["runaway_alerts"]])

    def diagnosis(self) -> Diagnosis:
        f = self.figures
        cause = (f"{self.peer} failed {f['failures']:,} connects from "
                 f"{f['connections']:,} connections in the last minute "
                 f"({f['failures_per_second']:,.1f}/s in {f['failing_seconds']} of 60 s; its "
                 f"baseline is {f['baseline_per_second']:,.2f}/s).")
        if self.runaway_alerts:
            n = len(self.runaway_alerts)
            cids = ", ".join(f"*{r['cid']}" for r in self.runaway_alerts[:3])
            cause += (f" {n} runaway connection{'s' if n > 1 else ''} ({cids}) loop"
                      f"{'' if n > 1 else 's'} on it: their alerts say how to bound the "
                      "retries.")
        fix = ("The peer refuses or does not answer while nginx still sends it connections: "
               "check what listens there (`kubectl get endpoints` for the Service behind it; "
               "a pod that died or is not ready, a wrong targetPort, a NetworkPolicy). Take "
               "it out of the upstream until it answers: in plain nginx `max_fails` and "
               "`fail_timeout` on the server (passive checks), in ingress-nginx a readiness "
               "probe so the endpoint leaves the list. Bound the retries that reach it "
               "(`proxy_next_upstream_tries`), so one dead peer cannot start a loop.")
        return Diagnosis(CODE, cause, fix)

    def to_dict(self) -> UpstreamAlertData:
        return {
            "alertname": UPSTREAM_ALERTNAME, "id": self.id, "state": self.state,
            "peer": self.peer, "figures": self.figures,
            "peak_failures": self.peak_failures, "peak_connections": self.peak_connections,
            "runaway_alerts": [{"id": r["id"], "cid": r["cid"]} for r in self.runaway_alerts],
            "fired_at": _iso(self.fired_at),
            "resolved_at": None if self.resolved_at is None else _iso(self.resolved_at),
            "resolved_reason": self.resolved_reason,
            "diagnosis": self.diagnosis().to_dict(),
        }


@dataclass(slots=True, frozen=True)
class UpstreamChange:
    #: The event stream's name of its kind: ``upstream_fired``, ``upstream_resolved``.
    EVENT: ClassVar[str] = "upstream"
    kind: Literal["fired", "resolved"]
    alert: UpstreamAlert
    #: The alert as it was at the change (made under the watch's lock).
    data: UpstreamAlertData


def upstream_alert_id(peer: str, fired_at: int) -> str:
    """Stable for one peer and the log second it fired: live and replayed give the same."""
    raw = f"upstream\x1f{peer}\x1f{fired_at}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


class UpstreamWatch:
    """The peers' figures and the upstream alerts.

    The service calls :meth:`evaluate` with the core's figures (``Core.upstreams``) and
    the runaway alerts firing; the API and the metrics read :meth:`peers` and
    :meth:`alerts` from other threads (a lock keeps each read whole)."""

    def __init__(self, *, min_connections: int = DEFAULT_MIN_CONNECTIONS,
                 min_seconds: int = DEFAULT_MIN_SECONDS, hold: int = DEFAULT_HOLD) -> None:
        self.min_connections = min_connections
        self.min_seconds = min_seconds
        self.hold = hold
        self._lock = threading.Lock()
        self._peers: list[UpstreamData] = []
        self.summary: dict[str, Any] = {}
        #: per peer: the log second since which its firing alert's resolve condition holds
        self._since: dict[str, int] = {}
        self.firing: dict[str, UpstreamAlert] = {}  # by peer
        self.resolved: list[UpstreamAlert] = []
        self.fired_total = 0
        self.resolved_total = 0

    def anomalous(self, p: Peer, window: int) -> bool:
        """The alert's condition (the module's docstring)."""
        return (p.warm and p.connections >= self.min_connections
                and p.failing_seconds >= self.min_seconds
                and p.far_above(p.rate(window), SIGMAS))

    def restore(self, alerts: Iterable[UpstreamAlert]) -> None:
        with self._lock:
            for alert in alerts:
                if alert.state == "firing":
                    self.firing[alert.peer] = alert

    def resolve_all(self, reason: str, now: int) -> list[UpstreamChange]:
        """Every firing alert resolved at log second ``now`` (the feature turned off)."""
        with self._lock:
            return [self._resolve(a, now, reason) for a in list(self.firing.values())]

    def firing_dicts(self) -> list[UpstreamAlertData]:
        with self._lock:
            return [a.to_dict() for a in self.firing.values()]

    def evaluate(self, figures: dict[str, Any] | None,
                 runaway: Callable[[], Iterable[Runaway]] = tuple) -> list[UpstreamChange]:
        """The core's figures now (``None``: the feature is off): alerts fired and
        resolved. ``runaway``: the runaway connections' alerts firing, to link (asked for
        only while an upstream alert fires)."""
        if figures is None:
            return []
        summary = {k: figures[k] for k in (
            "now", "window", "capacity", "named", "failures_total", "without_peer_total",
            "evicted_total", "window_failures", "warm_from")}
        if figures["now"] is None:  # no event yet
            with self._lock:
                self.summary = summary
            return []
        now, window = int(figures["now"]), int(figures["window"])
        recent_seconds = int(figures["recent_seconds"])
        peers = [Peer.of(row) for row in figures["peers"]]
        changes: list[UpstreamChange] = []
        with self._lock:
            seen: set[str] = set()
            rows: list[UpstreamData] = []
            for p in peers:
                seen.add(p.peer)
                bad = self.anomalous(p, window)
                rows.append(p.to_dict(window, recent_seconds, bad))
                alert = self.firing.get(p.peer)
                if alert is None:
                    if bad:
                        alert = UpstreamAlert(upstream_alert_id(p.peer, now), p.peer, now,
                                              rows[-1])
                        self.firing[p.peer] = alert
                        self.fired_total += 1
                        self._update(alert, p, rows[-1])
                        changes.append(UpstreamChange("fired", alert, alert.to_dict()))
                    continue
                self._update(alert, p, rows[-1])
                # (a restored alert's peer without its saved baseline judges nothing
                # until it has learnt one)
                back = p.warm and not p.far_above(p.recent / recent_seconds, RESOLVE_SIGMAS)
                if self._held(p.peer, back, now):
                    changes.append(self._resolve(alert, now, "back_to_baseline"))
            for peer in [peer for peer in self.firing if peer not in seen]:
                if self._held(peer, True, now):
                    changes.append(self._resolve(self.firing[peer], now, "peer_gone"))
            self._link(runaway)
            self._peers = rows
            self.summary = summary
        return changes

    def _update(self, alert: UpstreamAlert, p: Peer, row: UpstreamData) -> None:
        alert.figures = row
        alert.peak_failures = max(alert.peak_failures, p.failures)
        alert.peak_connections = max(alert.peak_connections, p.connections)

    def _held(self, peer: str, condition: bool, now: int) -> bool:
        if not condition:
            self._since.pop(peer, None)
            return False
        return now - self._since.setdefault(peer, now) >= self.hold

    def _link(self, runaway: Callable[[], Iterable[Runaway]]) -> None:
        if not self.firing:
            return
        by_peer: dict[str, list[RunawayLinkData]] = {}
        for aid, cid, peers in runaway():
            for peer in peers:
                by_peer.setdefault(peer, []).append({"id": aid, "cid": cid})
        for peer, alert in self.firing.items():
            alert.runaway_alerts = by_peer.get(peer, [])

    def _resolve(self, alert: UpstreamAlert, now: int, reason: str) -> UpstreamChange:
        del self.firing[alert.peer]
        self._since.pop(alert.peer, None)
        alert.state, alert.resolved_at, alert.resolved_reason = "resolved", now, reason
        self.resolved.append(alert)
        del self.resolved[:-RESOLVED_KEPT]
        self.resolved_total += 1
        return UpstreamChange("resolved", alert, alert.to_dict())

    # -- what the API and the metrics read -----------------------------------------
    def peers(self) -> list[UpstreamData]:
        """The peers counted at the last evaluation, most failures in the window first."""
        with self._lock:
            return list(self._peers)

    def alerts(self) -> list[UpstreamAlertData]:
        """Firing first, then the resolved ones kept, newest first."""
        with self._lock:
            return [a.to_dict() for a in [*self.firing.values(), *reversed(self.resolved)]]


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
