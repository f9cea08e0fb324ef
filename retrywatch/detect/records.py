"""Every event of a log with all its fields, and every unparsed line with its reason, in
order: ``retrywatch parse`` and :func:`parse_text`. The core reads the lines
(:class:`~retrywatch._core.EventReader`); this module gives them their time zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, tzinfo
from typing import Any

from retrywatch.detect.core import EventReader
from retrywatch.detect.events import Event, Unparsed

__all__ = ["RecordReader", "parse_text"]


class RecordReader:
    """One source's records, chunk by chunk."""

    def __init__(self, tz: tzinfo, source: str = "") -> None:
        self.tz = tz
        self.source = source
        self._reader = EventReader(source)
        self._times: dict[str, tuple[datetime, int]] = {}

    def feed(self, data: bytes) -> list[Event | Unparsed]:
        return list(self._records(self._reader.feed(data)))

    def feed_records(self, records: list[bytes]) -> list[Event | Unparsed]:
        return list(self._records(self._reader.feed_records(records)))

    def flush(self) -> list[Event | Unparsed]:
        return list(self._records(self._reader.flush()))

    def stats(self) -> dict[str, Any]:
        return self._reader.stats()

    def _time(self, stamp: str) -> tuple[datetime, int]:
        hit = self._times.get(stamp)
        if hit is None:
            if len(self._times) > 4096:
                self._times.clear()
            when = datetime(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]),
                            int(stamp[11:13]), int(stamp[14:16]), int(stamp[17:19]),
                            tzinfo=self.tz)
            hit = self._times[stamp] = (when, int(when.timestamp()))
        return hit

    def _records(self, items: list[Any]) -> Iterator[Event | Unparsed]:
        for item in items:
            if isinstance(item, tuple):
                yield Unparsed(item[0], item[1], self.source)
                continue
            when, ts = self._time(item.pop("stamp"))
            yield Event(time=when, ts=ts, **item)


def parse_text(text: str | bytes, tz: tzinfo, source: str = "") -> list[Event | Unparsed]:
    """Every event and unparsed line of a text, in order."""
    reader = RecordReader(tz, source)
    data = text.encode() if isinstance(text, str) else text
    return reader.feed(data) + reader.flush()
