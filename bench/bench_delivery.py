"""Ingest with and without a receiver that never answers (alert delivery must not slow it).

    python3 bench/bench_delivery.py

Feeds the real storm sample (four times over) through the engine twice per round: with
no receiver, and with a json receiver whose server accepts connections and never
answers. Prints the lines/s of each; it asserts nothing.
"""

from __future__ import annotations

import gzip
import socket
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from retrywatch.delivery.notifier import Notifier
from retrywatch.delivery.receivers import Receiver
from retrywatch.detect.core import DetectorConfig
from retrywatch.detect.engine import Engine

SAMPLE = Path(__file__).resolve().parent.parent / "sample_logs" / (
    "scenario-http-lua-storm.error.log.gz")


def run(data: bytes, url: str | None) -> float:
    engine = Engine(DetectorConfig(), ZoneInfo("UTC"))
    notifier = None
    if url is not None:
        notifier = Notifier([Receiver(name="hung", url=url, timeout=30, group_wait=0)])
        engine.subscribe(notifier.offer)
        notifier.start()
    started = time.perf_counter()
    for i in range(0, len(data), 1 << 20):
        engine.feed("storm", data[i:i + (1 << 20)])
    engine.end("storm")
    elapsed = time.perf_counter() - started
    if notifier is not None:
        notifier.stop()
    return elapsed


def main() -> None:
    with gzip.open(SAMPLE) as f:
        data = f.read() * 4
    lines = data.count(b"\n")
    with socket.socket() as hung:  # accepts (backlog), never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(100)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/"
        for _ in range(3):
            plain, with_receiver = run(data, None), run(data, url)
            print(f"{lines:,} lines: no receiver {lines / plain:,.0f} lines/s, "
                  f"a receiver that never answers {lines / with_receiver:,.0f} lines/s")


if __name__ == "__main__":
    main()
