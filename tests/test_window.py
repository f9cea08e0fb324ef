"""SecondWindow against a brute-force count of every event ever added."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.window import SecondWindow

# (second, n): seconds in a small range so that out-of-order, duplicate and
# older-than-the-window seconds are all common.
adds = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 5)), min_size=1, max_size=60)
widths = st.integers(1, 12)


def brute(events: list[tuple[int, int]], lo: int, hi: int) -> int:
    """Events with second in (lo, hi]."""
    return sum(n for s, n in events if lo < s <= hi)


@settings(max_examples=300, deadline=None)
@given(width=widths, seq=adds)
def test_count_matches_brute_force_after_every_add(width: int, seq: list[tuple[int, int]]) -> None:
    w = SecondWindow(width)
    seen: list[tuple[int, int]] = []
    for second, n in seq:
        returned = w.add(second, n)
        seen.append((second, n))
        newest = max(s for s, _ in seen)
        assert w.newest == newest
        assert w.count() == brute(seen, newest - width, newest)
        if second > newest - width:
            # In the window: the per-second count so far (every earlier add of this
            # second was in the window too, since the newest second only grows).
            assert returned == sum(c for s, c in seen if s == second)
        else:
            assert returned == n
        in_window = {s for s, _ in seen if s > newest - width}
        assert len(w) == len(in_window) <= width
        assert 1 <= w.span() <= width


@settings(max_examples=200, deadline=None)
@given(width=widths, seq=adds, later=st.lists(st.integers(0, 30), min_size=1, max_size=5))
def test_count_at_a_later_now(width: int, seq: list[tuple[int, int]],
                              later: list[int]) -> None:
    w = SecondWindow(width)
    for second, n in seq:
        w.add(second, n)
    newest = max(s for s, _ in seq)
    assert w.count(newest) == w.count() == brute(seq, newest - width, newest)
    now = newest
    for step in sorted(later):
        now = newest + step
        assert w.count(now) == brute(seq, now - width, now)
        assert len(w) <= width
    # Nothing left once the whole window has passed.
    assert w.count(now + width) == 0


@settings(max_examples=200, deadline=None)
@given(width=widths, seq=adds, back=st.integers(0, 30))
def test_count_at_an_earlier_now(width: int, seq: list[tuple[int, int]], back: int) -> None:
    """``now`` before the newest second: events in (now - width, now] that are still kept."""
    w = SecondWindow(width)
    for second, n in seq:
        w.add(second, n)
    newest = max(s for s, _ in seq)
    now = newest - back
    kept = [(s, n) for s, n in seq if s > newest - width]
    assert w.count(now) == brute(kept, now - width, now)
    assert w.count() == brute(seq, newest - width, newest)


def test_examples() -> None:
    w = SecondWindow(3)
    assert w.count() == 0
    assert len(w) == 0
    assert w.newest is None
    assert w.span() == 1
    assert w.add(10) == 1
    assert w.add(10, 4) == 5
    assert w.add(12) == 1
    assert w.add(11, 2) == 2  # out of order, inside the window
    assert w.count() == 8
    assert w.add(13) == 1  # second 10 leaves: (10, 13]
    assert w.count() == 4
    assert w.add(9, 7) == 7  # older than the window: returned, not kept
    assert w.count() == 4
    assert len(w) == 3
    assert w.span() == 3
    assert w.count(15) == 1
    assert w.count(16) == 0


def test_width_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SecondWindow(0)


def test_count_at_a_later_now_is_a_pure_query() -> None:
    w = SecondWindow(10)
    w.add(100)
    assert w.count(115) == 0
    w.add(101)  # newest is now 101: (91, 101] holds seconds 100 and 101
    assert w.count() == 2
