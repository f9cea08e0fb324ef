"""Line framing: CRLF, partial lines across chunks, over-long lines, the final line,
and datagrams (retrywatch/framing.py)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.framing import DEFAULT_MAX_LINE, Framed, LineFramer, decode, frame_datagram

# Reporting a falsifying example makes hypothesis import libcst, which warns about
# mypy_extensions; with filterwarnings=error that would hide the report behind an
# INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")


def frame(chunks: list[bytes], max_line: int = DEFAULT_MAX_LINE) -> tuple[list[bytes], int]:
    """All lines and the too-long count of feeding ``chunks`` then flushing."""
    framer = LineFramer(max_line)
    lines: list[bytes] = []
    too_long = 0
    for chunk in chunks:
        out = framer.feed(chunk)
        lines += out.lines
        too_long += out.too_long
    out = framer.flush()
    lines += out.lines
    too_long += out.too_long
    assert framer.pending_bytes == 0
    return lines, too_long


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


# -- line ends ----------------------------------------------------------------------


def test_lf_lines() -> None:
    out = LineFramer().feed(b"one\ntwo\n")
    assert out == Framed([b"one", b"two"], 0)


def test_crlf_is_lf() -> None:
    assert frame([b"one\r\ntwo\r\n"]) == ([b"one", b"two"], 0)


def test_mixed_line_ends() -> None:
    assert frame([b"a\nb\r\nc\n"]) == ([b"a", b"b", b"c"], 0)


def test_crlf_split_between_chunks() -> None:
    framer = LineFramer()
    first = framer.feed(b"one\r")
    assert first.lines == []
    assert framer.pending_bytes == 4
    assert framer.feed(b"\ntwo\r\n").lines == [b"one", b"two"]


def test_lone_cr_inside_a_line_is_kept() -> None:
    assert frame([b"a\rb\n"]) == ([b"a\rb"], 0)


def test_only_one_cr_is_part_of_the_line_end() -> None:
    assert frame([b"a\r\r\nb\n"]) == ([b"a\r", b"b"], 0)


def test_blank_lines_are_lines() -> None:
    assert frame([b"a\n\n\r\nb\n"]) == ([b"a", b"", b"", b"b"], 0)


def test_nul_bytes_are_dropped() -> None:
    assert frame([b"\x00\x00ab\x00c\n\x00\x00\x00d\n"]) == ([b"abc", b"d"], 0)


# -- partial lines --------------------------------------------------------------------


def test_partial_line_is_carried_to_the_next_chunk() -> None:
    framer = LineFramer()
    assert framer.feed(b"2024/01/01 00:00:00 [err").lines == []
    assert framer.pending_bytes == len(b"2024/01/01 00:00:00 [err")
    out = framer.feed(b"or] 1#1: x\nnext")
    assert out.lines == [b"2024/01/01 00:00:00 [error] 1#1: x"]
    assert framer.pending_bytes == 4


def test_byte_by_byte_equals_one_feed() -> None:
    data = b"first line\r\nsecond\n\nthird\rx\nlast without end"
    assert frame(bytewise(data)) == frame([data])
    assert frame([data])[0] == [b"first line", b"second", b"", b"third\rx", b"last without end"]


def test_empty_chunks_change_nothing() -> None:
    assert frame([b"", b"a", b"", b"\n", b""]) == ([b"a"], 0)


# -- the final line --------------------------------------------------------------------


def test_flush_gives_the_final_unterminated_line() -> None:
    framer = LineFramer()
    assert framer.feed(b"a\nb").lines == [b"a"]
    assert framer.flush() == Framed([b"b"], 0)
    assert framer.flush() == Framed([], 0)


def test_flush_drops_the_cr_of_a_final_line() -> None:
    framer = LineFramer()
    framer.feed(b"a\r")
    assert framer.flush().lines == [b"a"]


def test_flush_after_a_terminated_line_gives_nothing() -> None:
    framer = LineFramer()
    assert framer.feed(b"a\n").lines == [b"a"]
    assert framer.flush() == Framed([], 0)


def test_framer_is_reusable_after_flush() -> None:
    framer = LineFramer()
    framer.feed(b"a")
    framer.flush()
    assert framer.feed(b"b\n").lines == [b"b"]


# -- over-long lines -------------------------------------------------------------------


def test_over_long_line_in_one_chunk_is_counted_and_skipped() -> None:
    out = LineFramer(10).feed(b"short\n" + b"x" * 11 + b"\nnext\n")
    assert out == Framed([b"short", b"next"], 1)


def test_line_of_exactly_max_line_is_kept() -> None:
    assert frame([b"x" * 10 + b"\nnext\n"], 10) == ([b"x" * 10, b"next"], 0)
    assert frame(bytewise(b"x" * 10 + b"\nnext\n"), 10) == ([b"x" * 10, b"next"], 0)


def test_over_long_line_across_chunks_is_counted_once_and_the_next_line_kept() -> None:
    framer = LineFramer(10)
    outs = [framer.feed(b"x" * 8), framer.feed(b"x" * 8), framer.feed(b"x" * 30),
            framer.feed(b"xx\nnext\n")]
    assert sum(o.too_long for o in outs) == 1
    assert [line for o in outs for line in o.lines] == [b"next"]
    assert framer.flush() == Framed([], 0)


def test_over_long_line_byte_by_byte() -> None:
    data = b"a\n" + b"y" * 25 + b"\nb\n" + b"z" * 11 + b"\nc"
    assert frame(bytewise(data), 10) == ([b"a", b"b", b"c"], 2)
    assert frame([data], 10) == ([b"a", b"b", b"c"], 2)


def test_over_long_line_ending_exactly_at_a_chunk_end() -> None:
    framer = LineFramer(10)
    out1 = framer.feed(b"y" * 20)
    out2 = framer.feed(b"\n")
    out3 = framer.feed(b"next\n")
    assert out1.too_long + out2.too_long + out3.too_long == 1
    assert out2.lines == []
    assert out3.lines == [b"next"]


def test_over_long_final_line_without_end_is_counted() -> None:
    assert frame([b"a\n" + b"x" * 11], 10) == ([b"a"], 1)
    assert frame(bytewise(b"a\n" + b"x" * 11), 10) == ([b"a"], 1)


def test_flush_in_the_middle_of_an_over_long_line_ends_it() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"x" * 20).too_long == 1
    assert framer.flush() == Framed([], 0)
    assert framer.feed(b"next\n").lines == [b"next"]


def test_many_over_long_lines_in_one_chunk() -> None:
    data = b"".join(b"x" * 50 + b"\nok%d\n" % i for i in range(5))
    assert frame([data], 10) == ([b"ok0", b"ok1", b"ok2", b"ok3", b"ok4"], 5)


# -- properties -----------------------------------------------------------------------

MAX = 16

short_line = st.binary(max_size=MAX - 2).filter(lambda b: b"\n" not in b and b"\r" not in b
                                                 and b"\x00" not in b)
long_line = st.binary(min_size=MAX + 2, max_size=4 * MAX).map(
    lambda b: b.replace(b"\n", b"-").replace(b"\r", b"-").replace(b"\x00", b"-"))
line_end = st.sampled_from([b"\n", b"\r\n"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes], int]:
    """A byte stream of short and over-long lines (away from the max-line boundary),
    with the lines and the too-long count it must give."""
    parts = draw(st.lists(st.tuples(st.one_of(short_line, long_line), line_end), max_size=12))
    final = draw(st.one_of(st.just(b""), short_line, long_line))
    data = b"".join(line + end for line, end in parts) + final
    expected = [line for line, _ in parts if len(line) <= MAX]
    too_long = sum(len(line) > MAX for line, _ in parts)
    if final:
        if len(final) <= MAX:
            expected.append(final)
        else:
            too_long += 1
    return data, expected, too_long


@settings(max_examples=200, deadline=None)
@given(streams(), st.lists(st.integers(min_value=0, max_value=1000), max_size=8))
def test_any_chunking_gives_the_model_lines(
    stream: tuple[bytes, list[bytes], int], cuts: list[int]
) -> None:
    data, expected, too_long = stream
    assert frame(split_at(data, cuts), MAX) == (expected, too_long)


@settings(max_examples=60, deadline=None)
@given(streams())
def test_byte_by_byte_gives_the_model_lines(stream: tuple[bytes, list[bytes], int]) -> None:
    data, expected, too_long = stream
    assert frame(bytewise(data), MAX) == (expected, too_long)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_arbitrary_bytes_any_chunking_same_lines_with_a_large_max(
    data: bytes, cuts: list[int]
) -> None:
    """Far from the max-line size, chunking never changes the lines (NUL, CR, anything)."""
    whole = frame([data])
    assert frame(split_at(data, cuts)) == whole
    lines, too_long = whole
    assert too_long == 0
    for line in lines:
        assert b"\n" not in line
        assert b"\x00" not in line


# -- chunking at the max-line boundary ----------------------------------------------------


def test_line_completed_across_short_chunks_is_still_over_long() -> None:
    """Neither the carried part nor the chunk that ends the line is over max_line, the
    line is."""
    assert frame([b"x" * 8, b"x" * 8 + b"\nnext\n"], 10) == ([b"next"], 1)
    assert frame([b"x" * 3, b"x" * 15 + b"\n"], 16) == ([], 1)


def test_nul_padding_longer_than_max_line_does_not_eat_the_next_line() -> None:
    data = b"\x00" * 30 + b"abc\nnext\n"
    assert frame([data], 10) == ([b"abc", b"next"], 0)
    assert frame([b"\x00" * 30, b"abc\nnext\n"], 10) == ([b"abc", b"next"], 0)


def test_crlf_line_of_max_line_bytes_split_before_lf() -> None:
    assert frame([b"0123456789\r", b"\nnext\n"], 10) == ([b"0123456789", b"next"], 0)


# -- datagrams -------------------------------------------------------------------------


def test_datagram_is_one_line_with_the_line_end_dropped() -> None:
    assert frame_datagram(b"a b c\n") == Framed([b"a b c"], 0)
    assert frame_datagram(b"a b c\r\n") == Framed([b"a b c"], 0)
    assert frame_datagram(b"a b c") == Framed([b"a b c"], 0)


def test_datagram_is_never_joined_or_split() -> None:
    assert frame_datagram(b"first part, no end") == Framed([b"first part, no end"], 0)
    assert frame_datagram(b"second") == Framed([b"second"], 0)
    # A stray line break inside a record stays visible as \n: one record, one line.
    assert frame_datagram(b"x\ny\n").lines == [b"x\\ny"]


def test_datagram_nul_dropped() -> None:
    assert frame_datagram(b"a\x00b\x00\n") == Framed([b"ab"], 0)


def test_datagram_over_long_is_counted() -> None:
    assert frame_datagram(b"x" * 11, 10) == Framed([], 1)
    assert frame_datagram(b"x" * 10, 10) == Framed([b"x" * 10], 0)


def test_empty_datagram_is_one_blank_line() -> None:
    assert frame_datagram(b"") == Framed([b""], 0)


def test_datagram_line_end_before_trailing_nul_is_dropped() -> None:
    assert frame_datagram(b"abc\n\x00") == Framed([b"abc"], 0)


@given(st.binary(max_size=200))
@settings(max_examples=100, deadline=None)
def test_datagram_never_raises_and_is_at_most_one_line(payload: bytes) -> None:
    out = frame_datagram(payload, 100)
    assert len(out.lines) + out.too_long == 1
    for line in out.lines:
        assert b"\x00" not in line


# -- decode ----------------------------------------------------------------------------


def test_decode_keeps_invalid_utf8_visible() -> None:
    assert decode(b"caf\xc3\xa9") == "café"
    assert decode(b"a\xffb") == "a\\xffb"
    assert decode(b"\xc3") == "\\xc3"
