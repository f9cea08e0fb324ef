"""The examples in ``parsers/*.toml`` are tests: each line yields exactly its fields.

Also: :meth:`Parser.head` (the cheap prefix read the pipeline and detector use) agrees
with :meth:`Parser.parse` on every example line, every peer fixture line and every
distinct line of the real nginx logs in ``sample_logs/``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from reference.formats import load_format
from reference.parser import EventHead, Parser
from reference.wrappers import Unwrapper

from retrywatch.detect.events import Event, Unparsed

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "tests" / "fixtures" / "peer"
SAMPLE_LOGS = ROOT / "sample_logs"
UTC = ZoneInfo("UTC")

NGINX_EXAMPLES: list[dict[str, Any]] = load_format("nginx_error")["example"]
WRAPPER_EXAMPLES: list[dict[str, Any]] = load_format("wrappers")["example"]


@pytest.fixture(scope="module")
def parser() -> Parser:
    return Parser(UTC)


def _expected(value: Any) -> Any:
    """The TOML cannot hold a null: the string ``"null"`` stands for ``None``."""
    return None if value == "null" else value


def _example_id(example: dict[str, Any]) -> str:
    return str(example["about"])[:60]


# -- parsers/nginx_error.toml --------------------------------------------------------


def test_there_are_examples() -> None:
    assert len(NGINX_EXAMPLES) >= 10
    assert len(WRAPPER_EXAMPLES) >= 5
    for example in NGINX_EXAMPLES:
        assert set(example) == {"about", "line", "expect"}, example
    for example in WRAPPER_EXAMPLES:
        assert set(example) == {"about", "line", "wrapper", "inner"}, example


@pytest.mark.parametrize("example", NGINX_EXAMPLES, ids=_example_id)
def test_nginx_example_parses_to_expected_fields(parser: Parser, example: dict[str, Any]) -> None:
    event = parser.parse(example["line"])
    assert isinstance(event, Event), event
    assert event.line == example["line"]
    assert event.lines == 1
    for name, value in example["expect"].items():
        assert hasattr(event, name), f"expect names an unknown field {name!r}"
        assert getattr(event, name) == _expected(value), name


@pytest.mark.parametrize("example", NGINX_EXAMPLES, ids=_example_id)
def test_nginx_example_time_is_the_line_stamp_in_the_zone(
    parser: Parser, example: dict[str, Any]
) -> None:
    event = parser.parse(example["line"])
    assert isinstance(event, Event)
    assert event.time.tzinfo is UTC
    assert event.time.strftime("%Y/%m/%d %H:%M:%S") == example["line"][:19]
    assert event.ts == int(event.time.timestamp())


@pytest.mark.parametrize("example", NGINX_EXAMPLES, ids=_example_id)
def test_nginx_example_source_is_kept(parser: Parser, example: dict[str, Any]) -> None:
    event = parser.parse(example["line"], "src")
    assert isinstance(event, Event)
    assert event.source == "src"


# -- parsers/wrappers.toml -------------------------------------------------------------


@pytest.mark.parametrize("example", WRAPPER_EXAMPLES, ids=_example_id)
def test_wrapper_example_unwraps_to_inner(example: dict[str, Any]) -> None:
    unwrapper = Unwrapper()
    out = unwrapper.unwrap_lines([example["line"]])
    assert out.lines == [example["inner"]]
    assert out.broken == []
    assert out.partial == 0
    assert unwrapper.last == example["wrapper"]


@pytest.mark.parametrize("example", WRAPPER_EXAMPLES, ids=_example_id)
def test_wrapper_example_inner_is_an_nginx_event(parser: Parser, example: dict[str, Any]) -> None:
    assert isinstance(parser.parse(example["inner"]), Event)


def test_every_wrapper_has_an_example() -> None:
    declared = set(load_format("wrappers")["wrapper"])
    shown = {example["wrapper"] for example in WRAPPER_EXAMPLES}
    assert shown == declared


# -- head() agrees with parse() ----------------------------------------------------------


def _peer_lines() -> Iterator[str]:
    for path in sorted(PEER.glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            for raw in f:
                if raw.strip():
                    yield json.loads(raw)["line"]


def _sample_lines() -> list[str]:
    """Distinct lines of the real logs (a storm repeats its lines: 272 of 57,522)."""
    lines: set[str] = set()
    for path in sorted(SAMPLE_LOGS.glob("*.error.log.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines.update(f.read().splitlines())
    return sorted(lines)


def assert_failure_agrees(head: EventHead, event: Event) -> None:
    """``head.failure`` is the failure kind of a connect failure on a connection (the
    detector keys failures by connection id, so a line without one is no failure for
    it), else ``None``; ``event.connect_failure`` says it for every line."""
    if event.connect_failure and event.cid is not None:
        assert head.failure == event.kind
        assert head.failure is not None
    else:
        assert head.failure is None


def assert_head_agrees(parser: Parser, text: str) -> EventHead | Unparsed:
    head = parser.head(text, "s")
    event = parser.parse(text, "s")
    if isinstance(head, Unparsed) or isinstance(event, Unparsed):
        assert isinstance(head, Unparsed), (head, event)
        assert isinstance(event, Unparsed), (head, event)
        assert head.reason == event.reason
        return head
    assert isinstance(head, EventHead)
    assert (head.ts, head.time, head.pid, head.cid) == (event.ts, event.time, event.pid, event.cid)
    assert_failure_agrees(head, event)
    assert head.source == event.source == "s"
    assert head.lines == event.lines
    if event.ended:
        assert head.ended_hint, "ended_hint must never miss an ending line"
    assert head.event() == event
    return head


@pytest.mark.parametrize("example", NGINX_EXAMPLES, ids=_example_id)
def test_head_agrees_with_parse_on_examples(parser: Parser, example: dict[str, Any]) -> None:
    assert isinstance(assert_head_agrees(parser, example["line"]), EventHead)


@pytest.mark.parametrize("example", WRAPPER_EXAMPLES, ids=_example_id)
def test_head_agrees_with_parse_on_wrapper_examples(
    parser: Parser, example: dict[str, Any]
) -> None:
    assert_head_agrees(parser, example["line"])
    assert isinstance(assert_head_agrees(parser, example["inner"]), EventHead)


def test_head_agrees_with_parse_on_peer_fixtures(parser: Parser) -> None:
    lines = list(_peer_lines())
    assert len(lines) == 637
    heads = [assert_head_agrees(parser, line) for line in lines]
    assert sum(isinstance(h, EventHead) for h in heads) > 500


def test_head_agrees_with_parse_on_sample_logs(parser: Parser) -> None:
    lines = _sample_lines()
    assert len(lines) > 2500
    heads = [assert_head_agrees(parser, line) for line in lines]
    assert all(isinstance(h, EventHead) for h in heads)
    assert sum(h.failure is not None for h in heads if isinstance(h, EventHead)) > 1000
