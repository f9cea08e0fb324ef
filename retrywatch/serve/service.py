"""``retrywatch run``: sources feeding the engine in one thread, the HTTP service in another.

The ingest loop polls every source, feeds the engine, and every ``checkpoint_every``
seconds writes, in one SQLite transaction (:mod:`retrywatch.serve.state`), the files'
positions together with a snapshot of the engine (pipelines, detector, alerts) those
positions produced, and the deliveries' state. The first checkpoint is written as soon as
the sources are opened. A restart, even after ``kill -9``, loads them and goes on from
there: no line lost, none counted twice. The snapshot is re-read under today's settings;
one taken in another time zone keeps its alerts but not the detector's state.

:func:`serve` owns SIGTERM and SIGINT: either stops the service in order (sources closed,
last checkpoint, deliveries drained for ``shutdown_timeout`` seconds) and exits 0.
"""

from __future__ import annotations

import glob
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import httpx

from retrywatch.delivery import DeliveryState, Notifier
from retrywatch.detect.core import new_core
from retrywatch.detect.disk import DiskChange, DiskWatch, human_bytes, human_seconds
from retrywatch.detect.engine import Engine
from retrywatch.detect.knowledge import Knowledge
from retrywatch.detect.upstreams import UpstreamChange, UpstreamWatch
from retrywatch.errors import ListenError
from retrywatch.serve.health import ServiceHealth
from retrywatch.serve.http import GRACEFUL_SHUTDOWN, bounded_server
from retrywatch.serve.logs import UVICORN_CONFIG
from retrywatch.serve.settings import Settings, mask_url
from retrywatch.serve.state import (
    SavedEngine,
    StateStore,
    changed_fields,
    same_instants,
    settings_record,
)
from retrywatch.sources.checkpoint import Position
from retrywatch.sources.follow import PollingWaker, Waker, WatchdogWaker
from retrywatch.sources.source import (
    FileInput,
    Report,
    Source,
    StdinInput,
    SyslogInput,
    open_sources,
)
from retrywatch.timezones import resolve_zone

__all__ = ["Service"]

log = logging.getLogger("retrywatch")
# watchdog reports its own shutdown races as warnings; they are not ours to show.
logging.getLogger("watchdog").setLevel(logging.ERROR)

#: The exit status when an address cannot be listened on (uvicorn's, when HTTP cannot).
STARTUP_FAILURE = 3
#: Seconds between two log lines about checkpoints that keep failing.
CHECKPOINT_LOG_EVERY = 60.0
#: The resolve reason of alerts whose detector state was discarded (another time zone).
TIMEZONE_CHANGED = "timezone_changed"
#: Seconds between two samples of the files' growth and two disk forecasts.
DISK_EVERY = 1.0
#: Hottest connections a disk alert looks through for the ones writing its lines.
DISK_HOTTEST = 200
#: Seconds between two readings of the upstream peers' figures.
UPSTREAMS_EVERY = 1.0


class Service:
    def __init__(self, settings: Settings, *, waker: Waker | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.tz = resolve_zone(settings.timezone)
        self.knowledge = (Knowledge.load(list(settings.nginx_config))
                          if settings.nginx_config else None)
        self.health = ServiceHealth(checkpoints=settings.state_dir is not None,
                                    stall_timeout=settings.stall_timeout, clock=clock)
        # StateDirError when the directory cannot be used: said at start, in one line.
        self.store = StateStore(settings.state_dir) if settings.state_dir else None
        saved = self.store.load_state() if self.store is not None else None
        if self.store is not None and self.store.moved_aside is not None:
            self.health.state_moved_aside += 1
        restored, resolve_reason = self._restore(saved.engine if saved is not None else None)
        self.engine = restored or Engine(settings.detector_config(), self.tz, clock=clock,
                                         knowledge=self.knowledge)
        self.engine.health = self.health
        # query values redacted unless kept (restored alerts too): API, metrics, deliveries
        self.engine.keep_query_strings = settings.keep_query_strings
        self.notifier = Notifier(settings.receivers, state=self._restore_delivery(
            saved.delivery if saved is not None else None), transport=transport)
        self.engine.subscribe(self.notifier.offer)
        #: the followed files' growth and the disk forecast (detect/disk.py)
        self.disk = DiskWatch(settings.disk_horizon, clock=clock)
        self.disk.restore(self.engine.restored_disk)
        self.engine.disk = self.disk
        if not settings.disk_forecast or settings.disk_horizon == 0:
            # nothing would resolve what fired before: the receivers hear it ends
            self.engine.publish_disk(self.disk.resolve_all("disabled"))
        self._file_reports: dict[str, Report] = {}
        self._disk_at = float("-inf")
        #: connect failures per upstream peer and their alerts (detect/upstreams.py)
        self.upstreams = UpstreamWatch(min_connections=settings.upstream_min_connections)
        self.upstreams.restore(self.engine.restored_upstreams)
        self.engine.upstreams = self.upstreams
        self.engine.count_upstreams(settings.upstream_peers if settings.upstream_anomalies
                                    else 0, settings.upstream_warmup)
        if not settings.upstream_anomalies:
            self.engine.publish_disk(self.upstreams.resolve_all(
                "disabled", self.engine.event_now() or int(time.time())))
        self._upstreams_at = float("-inf")
        if resolve_reason is not None:  # the detector state was discarded: receivers hear
            self.engine.resolve_all(resolve_reason)
        checkpoints = saved.positions if saved is not None else {}
        # Every input behind one interface, made by one factory (sources/source.py); the
        # lists by kind are views of it (the syslog listeners' options are set there).
        self.sources: list[Source] = open_sources(settings, checkpoints, clock=clock)
        self.followers = [s for s in self.sources if isinstance(s, FileInput)]
        self.stdin = next((s.reader for s in self.sources if isinstance(s, StdinInput)), None)
        self.listeners = [s.listener for s in self.sources if isinstance(s, SyslogInput)]
        #: failures of each source (by its name: path or glob, -, URL) since the start
        self.source_failures: dict[str, int] = {}
        self._log_failure_at: dict[str, float] = {}
        self._gone: dict[str, float] = {}  # file sources no longer reported: since when
        self.waker = waker or _default_waker(settings.poll_interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_checkpoint = clock()
        self.checkpoint_every = 2.0
        self._checkpoint_logged_at = float("-inf")
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self.notifier.start()
        for listener in self.listeners:
            listener.start()
            self.engine.add_source(listener.name, "syslog")
        if self.stdin is not None:
            self.stdin.start()
            self.engine.add_source("stdin", "stdin")
        dirs: set[str] = set()
        for follower in self.followers:
            dirs |= follower.watch_dirs()
        self.waker.watch(dirs)
        # The sources opened (a file's start decided: its checkpoint, or --from) and
        # checkpointed at once: a kill -9 in the first seconds resumes from here.
        self.run_once()
        self.checkpoint()
        self.health.advanced()
        self._thread = threading.Thread(target=self._loop, name="ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop in order: the ingest loop, the sources closed, the last checkpoint, the
        deliveries drained for ``shutdown_timeout`` seconds (what is left stays pending),
        the deliveries' state saved. Once; later calls do nothing."""
        if self._stopped:
            return
        self._stopped = True
        self.health.stopping = True
        self._stop.set()
        self.waker.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                log.warning("the ingest loop did not stop within 10 s")
        positions = self._positions()  # of what the engine got, before the sources close
        for source in self.sources:
            try:
                source.close()
            except Exception as exc:  # one source must not keep the others open
                log.warning("closing %s: %s", source.name, exc)
        self.checkpoint(positions)
        timeout = self.settings.shutdown_timeout
        left = self.notifier.drain(timeout)
        if left:
            log.warning("%d alert change(s) not delivered within --shutdown-timeout %gs: "
                        "kept pending, sent after the restart", left, timeout)
        self.notifier.stop(timeout=1.0)
        if self.notifier.channels:
            self.checkpoint(positions)  # what the drain delivered is not sent again
        self.waker.close()
        if self.store is not None:
            self.store.close()

    # -- the ingest loop -------------------------------------------------------------
    def _loop(self) -> None:
        quick = bool(self.listeners or self.stdin)
        while not self._stop.is_set():
            self.health.advanced()  # /healthz fails when this stops (stall_timeout)
            try:
                busy = self.run_once()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # a bug must not stop ingest silently: log, go on
                # (BaseException: a panic in the compiled core arrives as PyO3's
                # PanicException, which is not an Exception.)
                log.exception("ingest loop")
                busy = False
            if not busy:
                self.waker.wait(0.05 if quick else self.settings.poll_interval)

    def run_once(self) -> bool:
        """Poll every source once and feed the engine; True when anything was read.

        Each source is isolated: one that fails (an exception from its poll, or from
        the engine on its bytes) is logged (at most once a minute), counted and shown
        in its ``last_error``, and the others go on; one that is stuck is not waited
        for (retrywatch/sources/source.py)."""
        busy = False
        live: set[str] = set()
        files: dict[str, Report] = {}
        for source in self.sources:
            try:
                busy |= self._ingest(source, live, files)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # (a panic in the core is a BaseException)
                live.update(self._failed(source, exc))
                files.update({n: r for n, r in self._file_reports.items() if n in live})
        self._file_reports = files
        self._forget_gone(live)
        self.engine.tick()
        self._watch_disk()
        self._watch_upstreams()
        if self.clock() - self._last_checkpoint >= self.checkpoint_every:
            self.checkpoint()
        return busy

    def _ingest(self, source: Source, live: set[str], files: dict[str, Report]) -> bool:
        engine = self.engine
        busy = False
        for piece in source.poll():
            engine.add_source(piece.source, source.kind)
            if piece.boundary:
                engine.end(piece.source)
            if piece.data:
                busy = True
                engine.feed(piece.source, piece.data)
            if piece.records:
                busy = True
                engine.feed_records(piece.source, list(piece.records))
            if piece.end:
                engine.end(piece.source)
        for report in source.reports():
            live.add(report.name)
            info = engine.add_source(report.name, report.kind)
            if report.kind == "file":
                files[report.name] = report
                info.position = report.position
                info.lag_bytes = report.lag_bytes
                info.lag_seconds = report.lag_seconds
                info.rotations = report.rotations
                info.caught_up = report.caught_up
            info.last_error = report.last_error
            info.open = report.open
            if report.skipped is not None:
                info.extra["skipped"] = report.skipped
            else:
                info.extra.pop("skipped", None)
            info.extra.update(report.extra)
        return busy

    def _watch_disk(self) -> list[DiskChange]:
        """About once a second: each followed file's size, lines and filesystem sampled,
        the forecasts made, disk alerts fired or resolved (said in the log)."""
        now = self.clock()
        if not self.settings.disk_forecast or now - self._disk_at < DISK_EVERY:
            return []
        self._disk_at = now
        disk, engine = self.disk, self.engine
        lines = {info.name: stats.lines_read for info, stats in engine.source_stats()}
        for name, report in self._file_reports.items():
            if report.size is not None and report.skipped is None:
                disk.observe(name, report.size, lines.get(name, 0), report.filesystem)
        disk.forget([n for n in list(disk.sources()) if n not in self._file_reports])
        changes = disk.evaluate(lambda: engine.connections(DISK_HOTTEST))
        engine.publish_disk(changes)  # the receivers and the event stream
        for change in changes:
            f = change.alert.forecast
            if change.kind == "fired":
                log.warning("%s will be full in about %s (%s free, the followed logs grow by "
                            "%s/s): disk alert %s", f.mount,
                            human_seconds(f.seconds_to_full or 0), human_bytes(f.free_bytes),
                            human_bytes(f.bytes_per_second or 0), change.alert.id)
            else:
                log.info("disk alert %s on %s resolved (%s)", change.alert.id, f.mount,
                         change.alert.resolved_reason)
        return changes

    def _watch_upstreams(self) -> list[UpstreamChange]:
        """About once a second: the upstream peers' figures read from the core, upstream
        alerts fired or resolved (said in the log)."""
        now = self.clock()
        if not self.settings.upstream_anomalies or now - self._upstreams_at < UPSTREAMS_EVERY:
            return []
        self._upstreams_at = now
        engine = self.engine
        changes = self.upstreams.evaluate(engine.upstream_figures(int(time.time())),
                                          engine.runaway_upstreams)
        engine.publish_disk(changes)  # the receivers and the event stream
        for change in changes:
            a = change.alert
            if change.kind == "fired":
                log.warning("upstream %s fails for many connections (%s failures from %s "
                            "connections in the last minute): upstream alert %s", a.peer,
                            a.figures["failures"], a.figures["connections"], a.id)
            else:
                log.info("upstream alert %s on %s resolved (%s)", a.id, a.peer,
                         a.resolved_reason)
        return changes

    def _failed(self, source: Source, exc: BaseException) -> list[str]:
        """One source failed: logged (the traceback at most once a minute), counted in
        ``source_failures``, its error shown on its sources (returned: still there); the
        others go on."""
        self.source_failures[source.name] = self.source_failures.get(source.name, 0) + 1
        error = f"{type(exc).__name__}: {exc}"
        names = self._names_of(source)
        for name in names:
            if name in self.engine.info:
                self.engine.info[name].last_error = error
        now = self.clock()
        if now >= self._log_failure_at.get(source.name, float("-inf")):
            self._log_failure_at[source.name] = now + 60.0
            log.error("source %s failed (%d times so far; the others go on)", source.name,
                      self.source_failures[source.name], exc_info=exc)
        return names

    def _names_of(self, source: Source) -> list[str]:
        try:
            return [r.name for r in source.reports()]
        except Exception:
            return []

    def _forget_gone(self, live: set[str]) -> None:
        """File sources no input reports any more (a deleted pod's log) are marked gone,
        and forgotten with their series after ``source_retention`` seconds."""
        now = self.clock()
        for name in [n for n in self._gone if n in live]:
            del self._gone[name]
            if name in self.engine.info:
                self.engine.info[name].extra.pop("gone_since", None)
        for name, info in list(self.engine.info.items()):
            if info.kind != "file" or name in live:
                continue
            since = self._gone.setdefault(name, now)
            if since == now:
                info.open, info.caught_up, info.lag_bytes, info.lag_seconds = False, True, 0, 0.0
                info.extra["gone_since"] = time.time()
            elif now - since >= self.settings.source_retention:
                del self._gone[name]
                self.engine.remove_source(name)
                log.info("source %s gone for %.0f s: forgotten", name, now - since)

    # -- checkpoints -------------------------------------------------------------------
    def _positions(self) -> list[Position]:
        return [p for source in self.sources for p in source.positions()]

    def checkpoint(self, positions: list[Position] | None = None) -> bool:
        """Positions (now's, or ``positions``), the engine state they produced and the
        deliveries', in one transaction. A failure (disk full, read-only, I/O error) is
        counted, shown in /readyz and /api/v1/sources, and logged once a minute at most;
        the next checkpoint tries again. Whether it was written."""
        self._last_checkpoint = self.clock()
        if self.store is None:
            return False
        health = self.health
        try:
            if positions is None:
                positions = self._positions()
            with self.engine.lock:  # the alerts and what was told of them, at one moment
                core, alerts = self.engine.snapshot()
                delivery = self.notifier.state().dumps()
            self.store.save_state(positions, core, alerts,
                                  settings_record(self.settings.detector_config(), self.tz),
                                  delivery)
        except (sqlite3.Error, OSError) as exc:
            health.checkpoint_failures += 1
            first = health.checkpoint_error is None
            health.checkpoint_error = f"{type(exc).__name__}: {exc}"
            now = self.clock()
            if first or now - self._checkpoint_logged_at >= CHECKPOINT_LOG_EVERY:
                self._checkpoint_logged_at = now
                log.error("checkpoint failed (%s; %d so far): positions and alerts are not "
                          "saved, retrying every %gs", exc, health.checkpoint_failures,
                          self.checkpoint_every)
            return False
        if health.checkpoint_error is not None:
            log.warning("checkpoints written again (after %d failures)",
                        health.checkpoint_failures)
            health.checkpoint_error = None
        health.checkpoint_last_success = time.time()
        return True

    def _restore(self, saved: SavedEngine | None) -> tuple[Engine | None, str | None]:
        """The saved engine under today's settings: the detector's (window, threshold,
        ...) apply to what was saved; a snapshot taken in another time zone holds event
        seconds that mean other instants, so its detector state is discarded (its firing
        alerts are resolved at start, ``timezone_changed``; positions, alert history and
        deliveries are kept). Either is said in one log line. The engine, and the reason
        to resolve its firing alerts with (once the receivers listen)."""
        if saved is None:
            return None, None
        config = self.settings.detector_config()
        core = saved.core
        record = saved.settings
        changed = changed_fields(record, config) if record is not None else []
        zone = str(record.get("timezone")) if record is not None else None
        other_zone = zone is not None and not same_instants(zone, self.tz, saved.taken)
        if other_zone:
            core = new_core(config, self.tz).snapshot()
        try:
            engine = Engine.restore(core, saved.alerts, config, self.tz, clock=self.clock,
                                    knowledge=self.knowledge)
        except ValueError as exc:
            log.error("the saved engine state cannot be read (%s): starting afresh", exc)
            return None, None
        today = settings_record(config, self.tz)["timezone"]
        settings = f"; detector settings {', '.join(changed)}" if changed else ""
        if other_zone:
            log.warning("the saved state was taken in time zone %s, today's is %s: the event "
                        "seconds it holds would mean other instants, so the detector's state "
                        "is discarded and its %d firing alert(s) resolved (%s); positions, "
                        "alert history and deliveries are kept%s", zone, today,
                        len(engine.firing), TIMEZONE_CHANGED, settings)
        elif changed:
            log.warning("the saved state was taken under other detector settings (%s): it "
                        "is re-read under today's", ", ".join(changed))
        elif record is None:
            log.info("the saved state does not record its settings (an older retrywatch): "
                     "it is read under today's (time zone %s)", today)
        log.info("resumed: %d alerts firing", len(engine.firing))
        return engine, TIMEZONE_CHANGED if other_zone else None

    def _restore_delivery(self, saved: bytes | None) -> DeliveryState | None:
        if saved is None:
            return None
        try:
            return DeliveryState.loads(saved)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            log.error("the saved delivery state cannot be read (%s): starting afresh", exc)
            return None


def announce(service: Service, url: str) -> None:
    """The start in a few INFO lines: what is followed (a file or glob matching no file now
    is a WARNING: it is watched all the same, and read when a file appears), where the API
    listens (``url``), where the state is kept, and who hears of alerts (URLs masked)."""
    settings = service.settings
    for source in service.sources:
        if isinstance(source, FileInput):
            _announce_file(source.follower.pattern, source.follower.is_glob)
        elif isinstance(source, SyslogInput):
            log.info("following syslog: listening on %s", source.listener.name.removeprefix(
                "syslog:"))
        else:
            log.info("following stdin")
    log.info("API, metrics and health checks on %s (%s)", url,
             "API token required" if settings.api_token else "no API token")
    if settings.state_dir is None:
        log.info("no state: positions and alerts are not kept across restarts (--state-dir)")
    else:
        log.info("state in %s: positions, alerts and deliveries are kept across restarts",
                 settings.state_dir)
    for r in settings.receivers:
        log.info("receiver %s (%s): %s", r.name, r.format,
                 mask_url(r.url, path=r.format != "alertmanager"))
    if not settings.receivers:
        log.info("no receivers: alerts are served by the API and /metrics only")


def _announce_file(pattern: str, is_glob: bool) -> None:
    found = len(glob.glob(pattern))  # a plain path: itself when it exists
    if not found:
        log.warning("following %s: no file matches it now; it is watched, and read when a "
                    "file appears", pattern)
    elif is_glob:
        log.info("following %s: %d file%s match%s now", pattern, found,
                 "" if found == 1 else "s", "es" if found == 1 else "")
    else:
        log.info("following %s", pattern)


def _default_waker(poll_interval: float) -> Waker:
    try:
        return WatchdogWaker()
    except Exception:  # no inotify (network filesystems, limits): poll
        return PollingWaker(poll_interval)


def serve(service: Service, host: str, port: int, app: Any) -> None:
    """Run the HTTP service and the ingest loop until SIGTERM or SIGINT, then stop in
    order (:meth:`Service.stop`: sources, last checkpoint, deliveries drained for
    ``shutdown_timeout``) while HTTP still answers (``/readyz``: stopping), then HTTP;
    return (exit 0); exit 1 when HTTP stops by itself. :class:`ListenError` when HTTP or a
    syslog listener cannot listen (everything stopped; the command line says it in one
    line, exit :data:`STARTUP_FAILURE`).

    uvicorn runs in a thread of its own, bounded (serve/http.py): the signals are this
    thread's, so nothing skips the ordered stop."""
    settings = service.settings
    try:
        server = bounded_server(app, host, port,
                                max_connections=settings.http_max_connections,
                                header_timeout=settings.http_header_timeout,
                                # TLS (settings ssl_certfile, ssl_keyfile), when given
                                ssl_certfile=settings.ssl_certfile,
                                ssl_keyfile=settings.ssl_keyfile,
                                **UVICORN_CONFIG)  # its records: serve/logs.py's format
    except ListenError:
        service.stop()
        raise
    service.health.http_closed = server.closed  # /metrics
    received: list[int] = []
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received:
            log.warning("%s: already stopping (at most --shutdown-timeout %gs for "
                        "deliveries)", signal.Signals(signum).name, settings.shutdown_timeout)
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        service.start()
        scheme = "https" if settings.ssl_certfile else "http"
        host_name = f"[{host}]" if ":" in host else host
        announce(service, f"{scheme}://{host_name}:{server.port}")
        http = threading.Thread(target=server.run, name="http", daemon=True)
        http.start()
        while not stop.is_set() and http.is_alive():
            stop.wait(0.5)
        failed = not received
        if received:
            log.info("%s: stopping", signal.Signals(received[0]).name)
        else:
            log.error("the HTTP server stopped by itself: stopping")
        service.stop()
        server.should_exit = True
        http.join(GRACEFUL_SHUTDOWN + 2)
    except ListenError:  # a syslog listener (service.start)
        service.stop()
        raise
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise SystemExit(1)
