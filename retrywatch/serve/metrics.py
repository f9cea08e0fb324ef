"""Prometheus metrics: the only module that imports prometheus_client.

Everything is read from the engine at scrape time by one collector (the counters live in
the core's own stats objects), so there is no second set of books to drift apart, and
the per-alert series exist only while their alert fires: the one place a connection id
is a label. Label values are bounded everywhere else: source, reason, kind, subsystem.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from retrywatch import __version__
from retrywatch.delivery import Notifier
from retrywatch.detect.engine import Engine

__all__ = ["CONTENT_TYPE", "DELIVERY_METRIC_NAMES", "METRIC_NAMES", "DeliveryCollector",
           "EngineCollector", "new_registry", "render"]

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
    "retrywatch_tracked_connections",
    "retrywatch_evictions_total",
    "retrywatch_upstream_connect_failures_total",
    "retrywatch_runaway_connections",
    "retrywatch_suspected_runaway_connections",
    "retrywatch_ruled_out_connections",
    "retrywatch_alerts_fired_total",
    "retrywatch_alerts_resolved_total",
    "retrywatch_runaway_connection_failures",
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
    """A registry of our own (never the global one) with the engine's collector, and the
    notifier's when there is one."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    if notifier is not None and notifier.channels:
        registry.register(DeliveryCollector(notifier))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
