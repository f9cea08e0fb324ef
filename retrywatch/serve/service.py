"""``retrywatch run``: sources feeding the engine in one thread, the HTTP service in another.

The ingest loop polls every source, feeds the engine, and every ``checkpoint_every``
seconds writes, in one SQLite transaction, the files' positions together with a snapshot
of the engine (pipelines, detector, alerts) those positions produced. A restart, even
after ``kill -9``, loads both and goes on from there: no line lost, none counted twice.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn

from retrywatch.delivery import DeliveryState, Notifier
from retrywatch.detect.engine import Engine
from retrywatch.detect.knowledge import Knowledge
from retrywatch.serve.settings import Settings
from retrywatch.sources.checkpoint import CheckpointStore, Position
from retrywatch.sources.files import source_name
from retrywatch.sources.follow import FileFollower, PollingWaker, Waker, WatchdogWaker
from retrywatch.sources.stdin import StdinSource
from retrywatch.sources.syslog import SyslogListener
from retrywatch.timezones import resolve_zone

__all__ = ["Service"]

log = logging.getLogger("retrywatch")
# watchdog reports its own shutdown races as warnings; they are not ours to show.
logging.getLogger("watchdog").setLevel(logging.ERROR)

# The core's versioned state bytes and the alerts as JSON: data, never code.
_SNAPSHOT_TABLE = """CREATE TABLE IF NOT EXISTS engine_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), taken REAL NOT NULL, core BLOB NOT NULL,
    alerts BLOB NOT NULL)"""
_DELIVERY_TABLE = """CREATE TABLE IF NOT EXISTS delivery_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), state BLOB NOT NULL)"""


class Service:
    def __init__(self, settings: Settings, *, waker: Waker | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.tz = resolve_zone(settings.timezone)
        self.store = CheckpointStore(settings.state_dir) if settings.state_dir else None
        self.knowledge = (Knowledge.load(list(settings.nginx_config))
                          if settings.nginx_config else None)
        self.engine = self._restore() or Engine(settings.detector_config(), self.tz,
                                                clock=clock, knowledge=self.knowledge)
        self.notifier = Notifier(settings.receivers, state=self._restore_delivery(),
                                 transport=transport)
        self.engine.subscribe(self.notifier.offer)
        checkpoints = self.store.load() if self.store else {}
        from_end = settings.start_from == "end"
        self.followers = [FileFollower(p, from_end=from_end, checkpoints=checkpoints)
                          for p in settings.log if p != "-"]
        self.stdin = StdinSource() if "-" in settings.log else None
        self.listeners = [SyslogListener(url) for url in settings.syslog]
        self.waker = waker or _default_waker(settings.poll_interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_checkpoint = clock()
        self.checkpoint_every = 2.0

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
        self._thread = threading.Thread(target=self._loop, name="ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.waker.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for listener in self.listeners:
            listener.stop()
        if self.stdin is not None:
            self.stdin.stop()
        self.notifier.stop()  # before the last checkpoint: what is unsent stays pending
        self.checkpoint()
        for follower in self.followers:
            follower.close()
        self.waker.close()
        if self.store is not None:
            self.store.close()

    # -- the ingest loop -------------------------------------------------------------
    def _loop(self) -> None:
        quick = bool(self.listeners or self.stdin)
        while not self._stop.is_set():
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
        """Poll every source once and feed the engine; True when anything was read."""
        engine = self.engine
        busy = False
        for follower in self.followers:
            for piece in follower.poll():
                engine.add_source(piece.source, "file")
                if piece.boundary:
                    engine.end(piece.source)
                if piece.data:
                    busy = True
                    engine.feed(piece.source, piece.data)
            self._update_file_info(follower)
        for listener in self.listeners:
            records = listener.poll(0)
            if records:
                busy = True
                engine.feed_records(listener.name, [r.data for r in records])
            info = engine.info[listener.name]
            info.last_error = listener.stats.last_error
            if self.clock() - info.extra.get("drops_read_at", -1.0) >= 1.0:
                # /proc/net/udp is read at most once a second: it lists every socket.
                info.extra["drops"] = listener.drops()
                info.extra["drops_read_at"] = self.clock()
        if self.stdin is not None:
            for data in self.stdin.poll(0):
                busy = True
                engine.feed("stdin", data)
            if self.stdin.eof and engine.info["stdin"].open:
                engine.end("stdin")
                engine.info["stdin"].open = False
        engine.tick()
        if self.clock() - self._last_checkpoint >= self.checkpoint_every:
            self.checkpoint()
        return busy

    def _update_file_info(self, follower: FileFollower) -> None:
        for status in follower.status():
            info = self.engine.add_source(source_name(status.path), "file")
            info.position = status.offset
            info.lag_bytes = status.lag_bytes
            info.lag_seconds = status.lag_seconds
            info.rotations = status.rotations + status.truncations
            info.last_error = status.last_error
            info.open = status.open
            info.caught_up = status.lag_bytes == 0

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Positions and the engine state they produced, in one transaction."""
        self._last_checkpoint = self.clock()
        if self.store is None:
            return
        positions: list[Position] = []
        for follower in self.followers:
            positions += follower.positions()
        with self.engine.lock:  # the alerts and what was told of them, at one moment
            core, alerts = self.engine.snapshot()
            delivery = self.notifier.state().dumps()
        with self.store.transaction() as tx:
            tx.save_positions(positions)
            tx.connection.execute(_SNAPSHOT_TABLE)
            tx.connection.execute(
                "INSERT OR REPLACE INTO engine_state (id, taken, core, alerts) "
                "VALUES (1, ?, ?, ?)", (time.time(), zlib.compress(core, 1), alerts))
            tx.connection.execute(_DELIVERY_TABLE)
            tx.connection.execute(
                "INSERT OR REPLACE INTO delivery_state (id, state) VALUES (1, ?)", (delivery,))

    def _restore(self) -> Engine | None:
        if self.store is None:
            return None
        conn = self.store.connection
        conn.execute(_SNAPSHOT_TABLE)
        row = conn.execute("SELECT core, alerts FROM engine_state WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            engine = Engine.restore(zlib.decompress(row[0]), row[1],
                                    self.settings.detector_config(), self.tz, clock=self.clock,
                                    knowledge=self.knowledge)
        except (ValueError, zlib.error) as exc:
            log.error("the saved engine state cannot be read (%s): starting afresh", exc)
            return None
        log.info("resumed: %d alerts firing", len(engine.firing))
        return engine

    def _restore_delivery(self) -> DeliveryState | None:
        if self.store is None:
            return None
        conn = self.store.connection
        conn.execute(_DELIVERY_TABLE)
        row = conn.execute("SELECT state FROM delivery_state WHERE id = 1").fetchone()
        return DeliveryState.loads(row[0]) if row is not None else None


def _default_waker(poll_interval: float) -> Waker:
    try:
        return WatchdogWaker()
    except Exception:  # no inotify (network filesystems, limits): poll
        return PollingWaker(poll_interval)


def serve(service: Service, host: str, port: int, app: Any) -> None:
    """Run the HTTP service until interrupted, with the ingest loop beside it."""
    service.start()
    try:
        # Open event streams must not hold a shutdown up for long.
        uvicorn.run(app, host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=3)
    finally:
        service.stop()
