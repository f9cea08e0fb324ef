"""A sliding window over event time, one bucket per second.

nginx timestamps have one-second resolution, so a window of ``width`` seconds is at
most ``width`` buckets however many events fall in it: adding is O(1) amortized
(O(width) only for an event older than the newest bucket, which is rare), memory is
bounded, and the count is exact.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SecondWindow"]


class SecondWindow:
    """Counts of events in the seconds ``(now - width, now]``."""

    __slots__ = ("_buckets", "_total", "width")

    def __init__(self, width: int) -> None:
        if width < 1:
            raise ValueError("window width must be at least 1 second")
        self.width = width
        self._buckets: deque[list[int]] = deque()  # [second, count], seconds ascending
        self._total = 0

    def add(self, second: int, n: int = 1) -> int:
        """Count ``n`` events at ``second``; returns that second's count so far.

        An event older than the window (relative to the newest second seen) still
        returns its own count but is not kept.
        """
        buckets = self._buckets
        if not buckets or second > buckets[-1][0]:
            buckets.append([second, n])
            self._total += n
            self._expire(second)
            return n
        newest = buckets[-1][0]
        if second <= newest - self.width:
            return n
        for i in range(len(buckets) - 1, -1, -1):
            bucket = buckets[i]
            if bucket[0] == second:
                bucket[1] += n
                self._total += n
                return bucket[1]
            if bucket[0] < second:
                buckets.insert(i + 1, [second, n])
                self._total += n
                return n
        buckets.appendleft([second, n])
        self._total += n
        return n

    def _expire(self, now: int) -> None:
        buckets = self._buckets
        edge = now - self.width
        while buckets and buckets[0][0] <= edge:
            self._total -= buckets.popleft()[1]

    def count(self, now: int | None = None) -> int:
        """Events in ``(now - width, now]``; ``now`` defaults to the newest second seen.

        A query: asking about another second changes nothing.
        """
        if now is None:
            return self._total
        edge = now - self.width
        return sum(c for s, c in self._buckets if edge < s <= now)

    @property
    def newest(self) -> int | None:
        return self._buckets[-1][0] if self._buckets else None

    def span(self) -> int:
        """Seconds covered by the kept buckets (at least 1)."""
        if not self._buckets:
            return 1
        return self._buckets[-1][0] - self._buckets[0][0] + 1

    def __len__(self) -> int:
        return len(self._buckets)
