"""Removing wrappers around nginx error lines (retrywatch/wrappers.py): CRI, docker
json-file, journal, RFC 3164 and RFC 5424 syslog, docker compose."""

from __future__ import annotations

from itertools import pairwise

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.wrappers import Unwrapped, Unwrapper

# Reporting a falsifying example makes hypothesis import libcst, which warns about
# mypy_extensions; with filterwarnings=error that would hide the report behind an
# INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

LINE = ('2024/01/01 00:00:00 [error] 37#37: *5 connect() failed (111: Connection refused) '
        'while connecting to upstream, client: 10.0.0.1, server: 0.0.0.0:9009, '
        'upstream: "10.0.0.2:9009", bytes from/to client:0/0, bytes from/to upstream:0/0')
HTTP_LINE = ('2024/01/02 03:04:05 [error] 7#7: *1 no live upstreams while connecting to '
             'upstream, client: 10.0.0.1, server: a, request: "GET / HTTP/1.1", '
             'upstream: "http://b/", host: "a"')
CRI_TS = "2024-01-01T00:00:00.123456789Z"


def cri(payload: str, tag: str = "F", stream: str = "stderr") -> str:
    return f"{CRI_TS} {stream} {tag} {payload}"


def docker(log: str, stream: str = "stderr") -> str:
    record = {"log": log, "stream": stream, "time": "2024-01-01T00:00:00.1Z"}
    return orjson.dumps(record).decode()


def unwrap(*lines: str) -> Unwrapped:
    return Unwrapper().unwrap_lines(list(lines))


# -- plain nginx lines -----------------------------------------------------------------


def test_an_nginx_line_passes_unchanged() -> None:
    unwrapper = Unwrapper()
    assert unwrapper.unwrap_lines([LINE, HTTP_LINE]) == Unwrapped([LINE, HTTP_LINE], [], 0)
    assert unwrapper.last is None


def test_an_nginx_line_after_a_wrapped_one_passes_unchanged() -> None:
    unwrapper = Unwrapper()
    assert unwrapper.unwrap_lines([cri(LINE), LINE]).lines == [LINE, LINE]
    assert unwrapper.last == "cri"


def test_is_event_start() -> None:
    unwrapper = Unwrapper()
    assert unwrapper.is_event_start(LINE)
    assert not unwrapper.is_event_start(cri(LINE))
    assert not unwrapper.is_event_start("PHP message: x")


# -- CRI --------------------------------------------------------------------------------


def test_cri_full_line() -> None:
    unwrapper = Unwrapper()
    assert unwrapper.unwrap_lines([cri(LINE)]) == Unwrapped([LINE], [], 0)
    assert unwrapper.last == "cri"


@pytest.mark.parametrize("ts", ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5+02:00",
                                "2024-01-01T00:00:00-07:00"])
def test_cri_timestamps(ts: str) -> None:
    assert unwrap(f"{ts} stdout F {LINE}").lines == [LINE]


def test_cri_partial_pieces_joined_within_one_call() -> None:
    out = unwrap(cri(LINE[:20], "P"), cri(LINE[20:70], "P"), cri(LINE[70:], "F"))
    assert out == Unwrapped([LINE], [], 2)


def test_cri_partial_pieces_joined_across_calls() -> None:
    unwrapper = Unwrapper()
    first = unwrapper.unwrap_lines([cri(LINE[:50], "P")])
    second = unwrapper.unwrap_lines([cri(LINE[50:100], "P")])
    third = unwrapper.unwrap_lines([cri(LINE[100:], "F"), cri(HTTP_LINE)])
    assert first.lines == second.lines == []
    assert first.broken == second.broken == third.broken == []
    assert third.lines == [LINE, HTTP_LINE]
    assert first.partial + second.partial + third.partial == 2


def test_cri_piece_may_end_in_a_space() -> None:
    head, rest = LINE[:28], LINE[28:]
    assert head.endswith(" ")
    assert unwrap(cri(head, "P"), cri(rest)).lines == [LINE]


def test_cri_empty_full_line() -> None:
    assert unwrap(f"{CRI_TS} stderr F").lines == [""]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(LINE)), max_size=6),
       st.lists(st.integers(min_value=0, max_value=20), max_size=4))
def test_cri_any_split_joins_to_the_line(cuts: list[int], call_cuts: list[int]) -> None:
    points = [0, *sorted(set(cuts)), len(LINE)]
    pieces = [LINE[a:b] for a, b in pairwise(points)]
    raw = [cri(p, "P") for p in pieces[:-1]] + [cri(pieces[-1], "F")]
    bounds = [0, *sorted({c % (len(raw) + 1) for c in call_cuts}), len(raw)]
    unwrapper = Unwrapper()
    lines: list[str] = []
    partial = 0
    for a, b in pairwise(bounds):
        out = unwrapper.unwrap_lines(raw[a:b])
        assert out.broken == []
        lines += out.lines
        partial += out.partial
    assert lines == [LINE]
    assert partial == len(raw) - 1


# -- docker json-file ----------------------------------------------------------------------


def test_docker_json_line() -> None:
    unwrapper = Unwrapper()
    assert unwrapper.unwrap_lines([docker(LINE + "\n")]) == Unwrapped([LINE], [], 0)
    assert unwrapper.last == "docker_json"


def test_docker_json_crlf() -> None:
    assert unwrap(docker(LINE + "\r\n")).lines == [LINE]


def test_docker_json_key_order_and_spacing() -> None:
    raw = '{"stream": "stderr", "log" : ' + orjson.dumps(LINE + "\n").decode() + "}"
    assert unwrap(raw).lines == [LINE]


def test_docker_json_pieces_without_newline_are_joined() -> None:
    out = unwrap(docker(LINE[:40]), docker(LINE[40:90]), docker(LINE[90:] + "\n"))
    assert out == Unwrapped([LINE], [], 2)


def test_docker_json_pieces_joined_across_calls() -> None:
    unwrapper = Unwrapper()
    first = unwrapper.unwrap_lines([docker(LINE[:60])])
    assert (first.lines, first.broken) == ([], [])
    out = unwrapper.unwrap_lines([docker(LINE[60:] + "\n"), docker(HTTP_LINE + "\n")])
    assert (out.lines, out.broken) == ([LINE, HTTP_LINE], [])
    assert first.partial + out.partial == 1


def test_docker_json_escapes_are_decoded() -> None:
    raw = docker(HTTP_LINE + "\n")
    assert '\\"GET / HTTP/1.1\\"' in raw
    assert unwrap(raw).lines == [HTTP_LINE]


def test_broken_docker_json_is_reported() -> None:
    bad = '{"log":"2024/01/01 00:00:00 [error] 1#1: x\\n", "stream": broken'
    out = unwrap(bad, docker(LINE + "\n"))
    assert out.broken == [("bad_docker_json", bad)]
    assert out.lines == [LINE]


@pytest.mark.parametrize("bad", ['{"log": 5}', '{"log": null, "stream": "stderr"}',
                                 '{"log": ["a"]}', '{"log":"unterminated'])
def test_docker_json_without_a_string_log_is_reported(bad: str) -> None:
    out = unwrap(bad)
    assert out.broken == [("bad_docker_json", bad)]
    assert out.lines == []


def test_docker_json_nested_wrapper() -> None:
    inner = f"<187>Nov 25 17:33:53 nginx: {LINE}"
    assert unwrap(docker(inner + "\n")).lines == [LINE]


# -- syslog: RFC 3164 ----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [
    "<187>Nov 25 17:33:53 nginx: ",  # nginx's error_log syslog:...,nohostname
    "<187>Nov 25 17:33:53 vm nginx: ",  # with the hostname
    "<187>Nov  5 17:33:53 vm nginx: ",  # days 1-9 are space-padded
    "<187>Nov  5 17:33:53 nginx: ",
    "<11>Jan 31 00:00:00 host.example.com nginx[123]: ",  # with a pid
    "<0>Dec  1 23:59:59 nginx_errors: ",
])
def test_rfc3164(prefix: str) -> None:
    unwrapper = Unwrapper()
    assert unwrapper.unwrap_lines([prefix + LINE]) == Unwrapped([LINE], [], 0)
    assert unwrapper.last == "rfc3164"


def test_rfc3164_non_nginx_message_is_still_unwrapped() -> None:
    """RFC 3164 is an unmistakable shape: its payload is taken whatever it is."""
    assert unwrap("<13>Nov  5 17:33:53 vm cron[1]: job done").lines == ["job done"]


# -- syslog: RFC 5424 ----------------------------------------------------------------------


@pytest.mark.parametrize("sd", [
    "-",
    '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]',
    '[a@1 k="v"][b@2 x="y"]',
    r'[a@1 k="quote \" and bracket \] inside"]',
    "[timeQuality tzKnown=\"1\" isSynced=\"1\"]",
])
def test_rfc5424_structured_data(sd: str) -> None:
    raw = f"<171>1 2025-11-05T20:47:03.000000+00:00 firewall.lan nginx 4242 ID47 {sd} {LINE}"
    unwrapper = Unwrapper()
    assert unwrapper.unwrap_lines([raw]) == Unwrapped([LINE], [], 0)
    assert unwrapper.last == "rfc5424"


def test_rfc5424_with_bom() -> None:
    raw = f'<171>1 2025-11-05T20:47:03Z h nginx - - [a@1 k="v"] \ufeff{LINE}'
    assert unwrap(raw).lines == [LINE]


def test_rfc5424_nil_values() -> None:
    assert unwrap(f"<171>1 - - - - - - {LINE}").lines == [LINE]


# -- journal / syslog-file prefix ------------------------------------------------------------


def test_journal_double_prefix() -> None:
    raw = f"host nginx[23141]: host nginx: {LINE}"
    unwrapper = Unwrapper()
    assert unwrapper.unwrap_lines([raw]) == Unwrapped([LINE], [], 0)
    assert unwrapper.last == "journal"


@pytest.mark.parametrize("prefix", [
    "Jan  5 01:02:03 myhost nginx[5]: ",
    "Jan 15 01:02:03 myhost nginx: ",
    "2024-01-05T01:02:03.123456+00:00 myhost nginx[5]: ",
    "myhost nginx[5]: ",
    "Jan  5 01:02:03 myhost nginx[5]: myhost nginx: ",
])
def test_journal_prefixes(prefix: str) -> None:
    assert unwrap(prefix + LINE).lines == [LINE]


def test_cri_around_syslog() -> None:
    assert unwrap(cri(f"<13>Nov  5 17:33:53 myhost nginx: {LINE}")).lines == [LINE]


# -- docker compose --------------------------------------------------------------------------


def test_compose_prefix() -> None:
    unwrapper = Unwrapper()
    assert unwrapper.unwrap_lines([f"kong_1         | {LINE}"]).lines == [LINE]
    assert unwrapper.last == "compose"


# -- continuation lines stay as they are ------------------------------------------------------


@pytest.mark.parametrize("line", [
    "PHP message: PHP Warning: x",
    "PHP message: PHP Warning:  Undefined variable $a in /var/www/index.php on line 3",
    "kong_1   | PHP message: x",
    "host php: hello",
    "stack traceback:",
    "\tcoroutine 0:",
    "",
])
def test_a_continuation_line_is_not_unwrapped(line: str) -> None:
    unwrapper = Unwrapper()
    assert unwrapper.unwrap_lines([line]) == Unwrapped([line], [], 0)
    assert unwrapper.last is None


def test_a_continuation_line_after_a_journal_line_is_not_unwrapped() -> None:
    unwrapper = Unwrapper()
    out = unwrapper.unwrap_lines([f"host nginx[1]: {LINE}", "PHP message: PHP Warning: x"])
    assert out.lines == [LINE, "PHP message: PHP Warning: x"]


# -- bounds -------------------------------------------------------------------------------------


def test_over_long_pieces_are_reported() -> None:
    unwrapper = Unwrapper(max_line=50)
    out = unwrapper.unwrap_lines([cri("x" * 30, "P"), cri("x" * 30, "P")])
    assert {reason for reason, _ in out.broken} == {"too_long"}
    assert out.lines == []


def test_rest_of_an_over_long_cri_line_is_dropped() -> None:
    unwrapper = Unwrapper(max_line=50)
    out = unwrapper.unwrap_lines([cri("x" * 30, "P"), cri("x" * 30, "P"), cri("y" * 30, "P"),
                                  cri("z" * 5, "F"), cri(LINE)])
    assert [reason for reason, _ in out.broken] == ["too_long"] * 4  # one per raw line
    assert out.lines == [LINE]
    assert out.partial == 0


def test_rest_of_an_over_long_docker_line_is_dropped() -> None:
    unwrapper = Unwrapper(max_line=50)
    out = unwrapper.unwrap_lines([docker("x" * 30), docker("x" * 30), docker("y\n"),
                                  docker(LINE + "\n")])
    assert [reason for reason, _ in out.broken] == ["too_long"] * 3
    assert out.lines == [LINE]


def test_cri_pieces_of_other_streams_are_not_joined() -> None:
    out = unwrap(cri('10.0.0.1 - - "GET /long', "P", "stdout"), cri(LINE, "F", "stderr"),
                 cri('rest"', "F", "stdout"))
    assert out.lines == [LINE, '10.0.0.1 - - "GET /longrest"']


def test_docker_pieces_of_other_streams_are_not_joined() -> None:
    out = unwrap(docker("access part", "stdout"), docker(LINE + "\n", "stderr"),
                 docker(" end\n", "stdout"))
    assert out.lines == [LINE, "access part end"]


def test_flush_gives_the_pieces_whose_last_piece_never_came() -> None:
    unwrapper = Unwrapper()
    out = unwrapper.unwrap_lines([cri(LINE[:30], "P"), cri(LINE[30:60], "P"),
                                  docker(HTTP_LINE[:10], "stderr")])
    assert out.lines == []
    held, extra = unwrapper.flush()
    assert sorted(held) == sorted([LINE[:60], HTTP_LINE[:10]])
    assert extra == 1  # raw lines beyond one per held line
    assert unwrapper.flush() == ([], 0)
    assert unwrapper.unwrap_lines([cri(LINE)]).lines == [LINE]


WRAPPER_SHAPES = st.sampled_from([
    "", f"{CRI_TS} stderr P ", f"{CRI_TS} stdout F ", '{"log":"', '{"log":', "<13>Nov  5 17:33:53 ",
    "<13>1 - - - - - - ", "host nginx[1]: ", "svc | ", LINE[:20], "2024/01/01 ",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(WRAPPER_SHAPES, st.text(max_size=60)), max_size=6))
def test_unwrapping_never_raises_and_accounts_for_every_line(
    parts: list[tuple[str, str]]
) -> None:
    """Each raw line gives exactly one of: a line, a leading piece of a joined line, a
    broken record, or a piece still held (given back by flush)."""
    raws = [prefix + text for prefix, text in parts]
    unwrapper = Unwrapper(max_line=100)
    out = unwrapper.unwrap_lines(raws)
    held, extra = unwrapper.flush()
    assert len(out.lines) + out.partial + len(out.broken) + len(held) + extra == len(raws)
