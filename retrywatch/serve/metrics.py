"""Prometheus metrics: the only module that imports prometheus_client.

Everything is read from the engine at scrape time by one collector (the counters live in
the core's own stats objects), so there is no second set of books to drift apart, and
the per-alert series exist only while their alert fires: the one place a connection id
is a label. Label values are bounded everywhere else: source, reason, kind, subsystem.
The process's own figures (``process_*``, ``python_info``, ``python_gc_*``) come from
prometheus_client's standard collectors, registered in the same registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from retrywatch import __version__
from retrywatch.delivery import Notifier
from retrywatch.detect.engine import Engine

__all__ = ["CONTENT_TYPE", "DELIVERY_METRIC_NAMES", "METRIC_NAMES", "RUNTIME_METRIC_NAMES",
           "DeliveryCollector", "EngineCollector", "StreamCollector", "StreamFigures",
           "new_registry", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Every metric family this module exports (a test checks each appears on /metrics).
METRIC_NAMES = (
    "retrywatch_build_info",
    "retrywatch_source_lines_read_total",
    "retrywatch_source_bytes_read_total",
    "retrywatch_source_lines_unparsed_total",
    "retrywatch_source_lag_bytes",
    "retrywatch_source_lag_seconds",
    "retrywatch_source_rotations_total",
    "retrywatch_syslog_receive_drops_total",
    "retrywatch_syslog_clients",
    "retrywatch_syslog_clients_refused_total",
    "retrywatch_syslog_clients_timed_out_total",
    "retrywatch_syslog_frames_too_long_total",
    "retrywatch_syslog_accept_errors_total",
    "retrywatch_tracked_connections",
    "retrywatch_evictions_total",
    "retrywatch_upstream_connect_failures_total",
    "retrywatch_runaway_connections",
    "retrywatch_suspected_runaway_connections",
    "retrywatch_ruled_out_connections",
    "retrywatch_alerts_fired_total",
    "retrywatch_alerts_resolved_total",
    "retrywatch_runaway_connection_failures",
    "retrywatch_stream_clients",
    "retrywatch_stream_clients_dropped_total",
    "retrywatch_stream_clients_refused_total",
    "retrywatch_checkpoint_failures_total",
    "retrywatch_checkpoint_last_success_timestamp_seconds",
    "retrywatch_state_moved_aside_total",
    "retrywatch_http_connections_closed_total",
    "retrywatch_source_growth_bytes_per_second",
    "retrywatch_source_growth_lines_per_second",
    "retrywatch_filesystem_free_bytes",
    "retrywatch_filesystem_size_bytes",
    "retrywatch_filesystem_full_in_seconds",
    "retrywatch_disk_alerts_firing",
    "retrywatch_disk_alerts_fired_total",
    "retrywatch_upstream_failures_per_second",
    "retrywatch_upstream_failing_connections",
    "retrywatch_upstream_baseline_failures_per_second",
    "retrywatch_upstream_anomalous",
    "retrywatch_upstream_peer_failures_total",
    "retrywatch_upstream_peers",
    "retrywatch_upstream_peers_evicted_total",
    "retrywatch_upstream_alerts_firing",
    "retrywatch_upstream_alerts_fired_total",
)

#: The delivery metrics, exported when receivers are configured (series per receiver).
DELIVERY_METRIC_NAMES = (
    "retrywatch_notifications_total",
    "retrywatch_notification_attempts_failed_total",
    "retrywatch_notification_retries_total",
    "retrywatch_notification_drops_total",
    "retrywatch_notification_alerts_dropped_total",
    "retrywatch_notification_queue_depth",
)


#: The process and runtime families of prometheus_client's standard collectors
#: (ProcessCollector: Linux, read from /proc; PlatformCollector; GCCollector: CPython).
RUNTIME_METRIC_NAMES = (
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "python_info",
    "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total",
    "python_gc_collections_total",
)


class EngineCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        engine = self.engine
        yield InfoMetricFamily("retrywatch_build", "retrywatch version",
                               value={"version": __version__})
        lines = CounterMetricFamily("retrywatch_source_lines_read",
                                    "Lines read from each source.", labels=["source"])
        bytes_ = CounterMetricFamily("retrywatch_source_bytes_read",
                                     "Bytes read from each source.", labels=["source"])
        unparsed = CounterMetricFamily(
            "retrywatch_source_lines_unparsed",
            "Lines that are no nginx error event, by reason.", labels=["source", "reason"])
        lag_bytes = GaugeMetricFamily("retrywatch_source_lag_bytes",
                                      "Bytes written to a source but not read yet.",
                                      labels=["source"])
        lag_seconds = GaugeMetricFamily("retrywatch_source_lag_seconds",
                                        "Seconds since a source was last caught up "
                                        "(0 when it is).",
                                        labels=["source"])
        rotations = CounterMetricFamily("retrywatch_source_rotations",
                                        "Rotations and truncations followed.",
                                        labels=["source"])
        for info, stats in engine.source_stats():
            lines.add_metric([info.name], stats.lines_read)
            bytes_.add_metric([info.name], stats.bytes_read)
            for reason, n in sorted(stats.unparsed.items()):
                unparsed.add_metric([info.name, reason], n)
            lag_bytes.add_metric([info.name], info.lag_bytes or 0)
            lag_seconds.add_metric([info.name], info.lag_seconds or 0.0)
            rotations.add_metric([info.name], info.rotations)
        drops = CounterMetricFamily(
            "retrywatch_syslog_receive_drops",
            "Datagrams the kernel dropped for a syslog listener's full receive buffer.",
            labels=["source"])
        for info, _ in engine.source_stats():
            if info.kind == "syslog":
                drops.add_metric([info.name], int(info.extra.get("drops", 0)))
        yield from (lines, bytes_, unparsed, lag_bytes, lag_seconds, rotations, drops)
        yield from _syslog_families(engine)
        yield from _health_families(engine)
        yield from _disk_families(engine)
        yield from _upstream_families(engine)

        with engine.lock:
            d = engine.detector_stats()
            yield GaugeMetricFamily("retrywatch_tracked_connections",
                                    "Connection keys the detector holds now.",
                                    value=engine.tracked_keys)
            yield CounterMetricFamily("retrywatch_evictions",
                                      "Tracked keys pushed out by --max-tracked.",
                                      value=d.evictions)
            failures = CounterMetricFamily(
                "retrywatch_upstream_connect_failures",
                "nginx upstream connect failures read from the logs.",
                labels=["source", "kind", "subsystem"])
            for (source, kind, subsystem), n in sorted(d.by_source_kind.items()):
                failures.add_metric([source, kind, subsystem], n)
            yield failures
            confirmed = sum(a.confirmed for a in engine.firing.values())
            yield GaugeMetricFamily(
                "retrywatch_runaway_connections",
                "Connections in a confirmed retry loop now (confirmed alerts firing).",
                value=confirmed)
            yield GaugeMetricFamily(
                "retrywatch_suspected_runaway_connections",
                "Connections past the threshold that may be one looping request or many "
                "bounded ones (suspected alerts firing).",
                value=len(engine.firing) - confirmed)
            yield GaugeMetricFamily(
                "retrywatch_ruled_out_connections",
                "Connections past the threshold whose route the nginx configuration given "
                "bounds (no alert).", value=len(engine.ruled_out.now))
            yield CounterMetricFamily("retrywatch_alerts_fired", "Alerts fired.",
                                      value=engine.published.get("fired", 0))
            yield CounterMetricFamily("retrywatch_alerts_resolved", "Alerts resolved.",
                                      value=engine.published.get("resolved", 0))
            per_alert = GaugeMetricFamily(
                "retrywatch_runaway_connection_failures",
                "Failures of each connection in a retry loop, while its alert fires.",
                labels=["source", "pid", "cid", "upstream", "diagnosis", "confidence"])
            for alert in engine.firing.values():
                snap = alert.snapshot
                upstream = next(iter(snap.get("upstreams") or {"?": 0}))
                per_alert.add_metric(
                    [alert.source, str(alert.pid), str(alert.cid), upstream,
                     alert.diagnosis.code if alert.diagnosis else "", alert.confidence],
                    snap.get("failures", 0))
            yield per_alert


class StreamFigures(Protocol):
    """The event stream's own counts (api.py's hub)."""

    @property
    def connected(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def refused(self) -> int: ...


class StreamCollector(Collector):
    """Event-stream clients: connected now, dropped for falling behind, refused (cap)."""

    def __init__(self, figures: StreamFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        f = self.figures
        yield GaugeMetricFamily("retrywatch_stream_clients",
                                "Clients of /api/v1/alerts/stream connected now.",
                                value=f.connected)
        yield CounterMetricFamily(
            "retrywatch_stream_clients_dropped",
            "Event-stream clients disconnected for falling too far behind (slow readers).",
            value=f.dropped)
        yield CounterMetricFamily(
            "retrywatch_stream_clients_refused",
            "Event-stream clients refused (503) at the maximum (max_stream_clients).",
            value=f.refused)


def _health_families(engine: Engine) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """The service's own health (serve/health.py): checkpoints, the state database at
    start, the HTTP connections its bounds closed."""
    health = engine.health
    yield CounterMetricFamily(
        "retrywatch_checkpoint_failures",
        "Checkpoints (positions, alerts, deliveries) that could not be written.",
        value=health.checkpoint_failures)
    yield GaugeMetricFamily(
        "retrywatch_checkpoint_last_success_timestamp_seconds",
        "When the last checkpoint was written (POSIX seconds; 0: none, or no --state-dir).",
        value=health.checkpoint_last_success or 0.0)
    yield CounterMetricFamily(
        "retrywatch_state_moved_aside",
        "State databases that could not be read at start, moved aside (.corrupt-TIMESTAMP).",
        value=health.state_moved_aside)
    closed = CounterMetricFamily(
        "retrywatch_http_connections_closed",
        "HTTP connections the server closed itself, by reason: evicted (over "
        "http_max_connections, the oldest without a request), header_timeout, "
        "out_of_descriptors.", labels=["reason"])
    figures = health.http_closed() if health.http_closed is not None else {}
    for reason in ("evicted", "header_timeout", "out_of_descriptors"):
        closed.add_metric([reason], figures.get(reason, 0))
    yield closed


def _disk_families(engine: Engine) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """The followed files' growth and their filesystems' forecast (detect/disk.py). The
    labels are bounded: a file source (forgotten with the others' series), a mount point."""
    growth_bytes = GaugeMetricFamily(
        "retrywatch_source_growth_bytes_per_second",
        "Bytes a followed file grew by per second over the last minute (through rotations).",
        labels=["source"])
    growth_lines = GaugeMetricFamily(
        "retrywatch_source_growth_lines_per_second",
        "Lines read from a followed file per second over the last minute.", labels=["source"])
    free = GaugeMetricFamily(
        "retrywatch_filesystem_free_bytes",
        "Free bytes (for writers without root's reserve) of a filesystem holding followed "
        "logs.", labels=["mount"])
    size = GaugeMetricFamily("retrywatch_filesystem_size_bytes",
                             "Size of a filesystem holding followed logs.", labels=["mount"])
    full_in = GaugeMetricFamily(
        "retrywatch_filesystem_full_in_seconds",
        "Seconds until the followed logs fill their filesystem at their growth of the last "
        "minute (0: full now; no series while they do not grow).", labels=["mount"])
    watch = engine.disk
    firing = fired = 0
    if watch is not None:
        for source in watch.sources():
            g = watch.growth(source)
            if g is not None and g["bytes_per_second"] is not None:
                growth_bytes.add_metric([source], g["bytes_per_second"])
            if g is not None and g["lines_per_second"] is not None:
                growth_lines.add_metric([source], g["lines_per_second"])
        for f in watch.forecasts():
            free.add_metric([f["mount"]], f["free_bytes"])
            size.add_metric([f["mount"]], f["size_bytes"])
            if f["seconds_to_full"] is not None:
                full_in.add_metric([f["mount"]], f["seconds_to_full"])
        firing, fired = len(watch.firing), watch.fired_total
    yield from (growth_bytes, growth_lines, free, size, full_in)
    yield GaugeMetricFamily("retrywatch_disk_alerts_firing",
                            "Filesystems the followed logs will fill within disk_horizon "
                            "(disk alerts firing).", value=firing)
    yield CounterMetricFamily("retrywatch_disk_alerts_fired", "Disk alerts fired.",
                              value=fired)


#: Peers named in the metrics at most (most failures in the window first, and any with an
#: alert firing); the others are summed as ``peer="other"``.
METRIC_PEERS = 10


def _upstream_families(engine: Engine) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """Connect failures per upstream peer (detect/upstreams.py). The ``peer`` label is
    bounded: the METRIC_PEERS peers failing most and those alerting, the rest as
    ``other`` (a flood of peers adds no series)."""
    rate = GaugeMetricFamily(
        "retrywatch_upstream_failures_per_second",
        "Connect failures per second against an upstream peer over the last minute (the "
        "peers failing most by name, the rest as peer=\"other\").", labels=["peer"])
    conns = GaugeMetricFamily(
        "retrywatch_upstream_failing_connections",
        "Distinct connections that failed against a peer in about the last minute.",
        labels=["peer"])
    baseline = GaugeMetricFamily(
        "retrywatch_upstream_baseline_failures_per_second",
        "A peer's usual connect failures per second, learnt from the stream.",
        labels=["peer"])
    anomalous = GaugeMetricFamily(
        "retrywatch_upstream_anomalous",
        "1 while a peer fails far above its baseline for many connections.", labels=["peer"])
    watch = engine.upstreams
    s = watch.summary if watch is not None else {}
    firing = fired = 0
    if watch is not None and s:
        peers = watch.peers()
        alerting = set(watch.firing)
        named = [p for i, p in enumerate(peers) if i < METRIC_PEERS or p["peer"] in alerting]
        window = s.get("window") or 60
        for p in named:
            rate.add_metric([p["peer"]], p["failures_per_second"])
            conns.add_metric([p["peer"]], p["connections"])
            baseline.add_metric([p["peer"]], p["baseline_per_second"])
            anomalous.add_metric([p["peer"]], int(p["anomalous"]))
        rest = s.get("window_failures", 0) - sum(p["failures"] for p in named)
        rate.add_metric(["other"], round(max(rest, 0) / window, 2))
        firing, fired = len(watch.firing), watch.fired_total
    yield from (rate, conns, baseline, anomalous)
    yield CounterMetricFamily(
        "retrywatch_upstream_peer_failures",
        "Connect failures naming an upstream peer (those the peers' figures count).",
        value=s.get("failures_total", 0))
    yield GaugeMetricFamily("retrywatch_upstream_peers",
                            "Upstream peers named now (at most upstream_peers).",
                            value=s.get("named", 0))
    yield CounterMetricFamily("retrywatch_upstream_peers_evicted",
                              "Peers that left the table to make room for a new one.",
                              value=s.get("evicted_total", 0))
    yield GaugeMetricFamily("retrywatch_upstream_alerts_firing",
                            "Upstream peers failing far above their baseline for many "
                            "connections (upstream alerts firing).", value=firing)
    yield CounterMetricFamily("retrywatch_upstream_alerts_fired", "Upstream alerts fired.",
                              value=fired)


def _syslog_families(engine: Engine) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """The syslog listeners' own figures (SourceInfo.extra["syslog"], set by the service):
    TCP clients now, refused at max_clients, closed when idle, over-long records skipped
    (UDP and TCP), accept() failures (out of descriptors)."""
    clients = GaugeMetricFamily("retrywatch_syslog_clients",
                                "TCP syslog clients connected now.", labels=["source"])
    refused = CounterMetricFamily(
        "retrywatch_syslog_clients_refused",
        "TCP syslog clients closed at once because max_clients were connected.",
        labels=["source"])
    timed_out = CounterMetricFamily(
        "retrywatch_syslog_clients_timed_out",
        "TCP syslog clients closed after syslog_idle_timeout seconds without a byte.",
        labels=["source"])
    too_long = CounterMetricFamily(
        "retrywatch_syslog_frames_too_long",
        "Syslog records (UDP datagrams, TCP frames) over syslog_max_frame bytes, skipped.",
        labels=["source"])
    accept_errors = CounterMetricFamily(
        "retrywatch_syslog_accept_errors",
        "TCP accept() failures (out of descriptors or memory): accepting paused a while.",
        labels=["source"])
    for info, _ in engine.source_stats():
        figures = info.extra.get("syslog") if info.kind == "syslog" else None
        if not figures:
            continue
        too_long.add_metric([info.name], figures.get("frames_too_long", 0))
        if figures.get("transport") == "tcp":
            clients.add_metric([info.name], figures.get("clients", 0))
            refused.add_metric([info.name], figures.get("refused", 0))
            timed_out.add_metric([info.name], figures.get("timed_out", 0))
            accept_errors.add_metric([info.name], figures.get("accept_errors", 0))
    yield from (clients, refused, timed_out, too_long, accept_errors)


class DeliveryCollector(Collector):
    """Each receiver's delivery figures, read from the notifier at scrape time."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        sent = CounterMetricFamily("retrywatch_notifications",
                                   "Messages to receivers, by outcome (success, dropped).",
                                   labels=["receiver", "outcome"])
        failed = CounterMetricFamily("retrywatch_notification_attempts_failed",
                                     "Delivery attempts that failed (error, timeout, 5xx).",
                                     labels=["receiver"])
        retries = CounterMetricFamily("retrywatch_notification_retries",
                                      "Delivery attempts retried after a backoff.",
                                      labels=["receiver"])
        drops = CounterMetricFamily(
            "retrywatch_notification_drops",
            "Messages or changes given up, by reason (queue_full, max_attempts, max_age, "
            "rejected).", labels=["receiver", "reason"])
        alerts = CounterMetricFamily("retrywatch_notification_alerts_dropped",
                                     "Alert changes never delivered.", labels=["receiver"])
        depth = GaugeMetricFamily("retrywatch_notification_queue_depth",
                                  "Alert changes waiting for a receiver.", labels=["receiver"])
        for name, s in self.notifier.stats().items():
            for outcome in ("success", "dropped"):
                sent.add_metric([name, outcome], s.deliveries[outcome])
            failed.add_metric([name], s.attempts_failed)
            retries.add_metric([name], s.retries)
            for reason in ("queue_full", "max_attempts", "max_age", "rejected"):
                drops.add_metric([name, reason], s.drops[reason])
            alerts.add_metric([name], s.alerts_dropped)
            depth.add_metric([name], s.queue_depth)
        yield from (sent, failed, retries, drops, alerts, depth)


def new_registry(engine: Engine, notifier: Notifier | None = None) -> CollectorRegistry:
    """A registry of our own (never the global one) with the engine's collector, the
    notifier's when there is one, and the process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    if notifier is not None and notifier.channels:
        registry.register(DeliveryCollector(notifier))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
