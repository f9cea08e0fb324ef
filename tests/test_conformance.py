"""Conformance with other projects' nginx error-log parsers.

The data is in ``tests/fixtures/peer/`` (provenance, licenses and the per-source
comparison rules are in its README.md):

* ``nginx-error.jsonl``: 617 lines from 10 peer projects' tests, 122 of them with
  the fields the peer's own tests expect (9 of those are lines the peer rejects).
  ``expected`` uses normalized names; some peers mean something else by some of
  them, see ``MESSAGE_RULE`` and ``PEER_MEANING`` below.
* ``issue-lines.jsonl``: real lines from GitHub issues (ingress-nginx, Kong, APISIX).

A record is one event: multi-line events are stored joined with ``\\n`` and must
come out as exactly one :class:`Event` with nothing left over.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from retrywatch.detect.events import Event, Unparsed
from retrywatch.detect.records import parse_text

FIXTURES = Path(__file__).parent / "fixtures" / "peer"
UTC = ZoneInfo("UTC")

SHORT = {
    "elastic/beats": "beats",
    "vectordotdev/vrl": "vrl",
    "crowdsecurity/hub": "crowdsec",
    "fail2ban/fail2ban": "fail2ban",
    "DataDog/integrations-core": "datadog",
    "gbenson/hive": "hive",
    "aasaam/nginx-error-log-parser": "aasaam",
    "codeactual/mainevent": "mainevent",
    "mozilla-services/lua_sandbox_extensions": "mozilla",
    "madsmtm/nginx-error-log": "madsmtm",
}

#: The ``expected`` names we compare. ``time`` is the peer's own value (often with
#: the peer harness's zone arithmetic); ``time_iso`` is its naive wall clock.
COMPARED = (
    "time_iso",
    "level",
    "pid",
    "tid",
    "cid",
    "message",
    "client",
    "server",
    "request",
    "upstream",
    "host",
)

# How each peer's ``message`` relates to ours (``Event.message`` is the text after
# "PID#TID: [*CID ]" and before the real ", client: " tail, " while ..." included).
#
#   source                      rule        what is compared
#   elastic/beats               body        peer = the whole text after "*CID " (or "TID: "),
#   aasaam                      body          tail included: it must equal that text of our
#                                             event's line, and our message must be that text
#                                             up to a ", client: " tail (or all of it)
#   vectordotdev/vrl            vrl_excess  VRL moves ', excess: X[,] by zone "Z"' into its own
#                                             fields: we remove it from our message and check
#                                             the removed X and Z against the peer's excess/zone
#   crowdsecurity/hub           exact       equal (crowdsec keeps excess/zone in the message)
#   gbenson/hive, mozilla       exact       equal
#   madsmtm                     stripped    the peer strips surrounding whitespace: equal to
#                                             our message with .strip(), and ours must be
#                                             the line's text verbatim (whitespace kept)
#   DataDog, mainevent          -           no message expectation (error.message / errstr keep
#                                             the "pid#tid: *cid" prefix; left in peer_fields)
MESSAGE_RULE = {
    "elastic/beats": "body",
    "aasaam/nginx-error-log-parser": "body",
    "vectordotdev/vrl": "vrl_excess",
    "crowdsecurity/hub": "exact",
    "gbenson/hive": "exact",
    "mozilla-services/lua_sandbox_extensions": "exact",
    "madsmtm/nginx-error-log": "stripped",
}

# Other fields: compared as equal (``getattr(event, field) == expected``), except
#
#   source     field     how
#   all        time      not compared (the peer harnesses add zones); time_iso is, against
#                          event.time.replace(tzinfo=None).isoformat()
#   all        cid       expected null: our cid must be None
#   aasaam     client    on a line without a ", client: " key the peer takes the address
#                          from the message text ("client 127.0.0.1 closed keepalive
#                          connection"); ours is that key only: xfail(strict), PEER_MEANING
#   crowdsec   client    remote_addr; the fixture maps it only where a ", client: " key exists
#   fail2ban   client    failJSON "host" (the banned address) = the last "client:" key
#   datadog    client    network.client.ip
#   crowdsec   server    target_fqdn (absent for "server: ,"; VRL expects "" there)
#   crowdsec, aasaam  request  not in the fixture (the peers split it into method/path/...)
#   datadog, mainevent, mozilla  only the fields the peer states (no pid/tid/cid, or no level)
PEER_MEANING = {
    ("aasaam/nginx-error-log-parser", "client"): (
        "aasaam takes the client address from the message text; our client is the "
        "', client: ' key, which this line does not have"
    ),
}

_TAIL_KEY = ", client: "


def _peer_meaning(record: dict[str, Any], field: str) -> str | None:
    """Why the peer's value cannot be ours for this record and field, if it cannot."""
    repo = record["source"].split(":", 1)[0]
    if _TAIL_KEY in record["line"]:
        return None
    return PEER_MEANING.get((repo, field))


# -- loading -------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^\w.:#-]+", "_", text).strip("_")


def _load(name: str) -> list[dict[str, Any]]:
    with (FIXTURES / name).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _record_ids(records: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    seen: Counter[str] = Counter()
    for n, rec in enumerate(records, 1):
        repo, _, path = rec["source"].partition(":")
        short = SHORT.get(repo, repo)
        file = path.rsplit("/", 1)[-1]
        case = rec.get("case") or ""
        if "line_no" in rec:
            label = f"{file}:L{rec['line_no']}"
        elif case and len(case) <= 48:
            label = case
        else:
            label = file
        base = _slug(f"{short}:{label}")
        seen[base] += 1
        suffix = f"#{seen[base]}" if seen[base] > 1 else ""
        ids.append(f"{n:03d}-{base}{suffix}")
    return ids


RECORDS = _load("nginx-error.jsonl")
RECORD_IDS = _record_ids(RECORDS)
ISSUES = _load("issue-lines.jsonl")
ISSUE_IDS = [
    f"{n:02d}-{_slug(rec['source'].removeprefix('https://github.com/'))}"
    for n, rec in enumerate(ISSUES, 1)
]

PARSE_ERROR = [
    pytest.param(rec, id=rid)
    for rec, rid in zip(RECORDS, RECORD_IDS, strict=True)
    if rec["expected"].get("expect_parse_error")
]
MUST_PARSE = [
    pytest.param(rec, id=rid)
    for rec, rid in zip(RECORDS, RECORD_IDS, strict=True)
    if not rec["expected"].get("expect_parse_error")
]


def _field_cases() -> list[Any]:
    cases = []
    for rec, rid in zip(RECORDS, RECORD_IDS, strict=True):
        expected = rec["expected"]
        repo = rec["source"].split(":", 1)[0]
        for field in COMPARED:
            if field not in expected:
                continue
            if field == "message" and repo not in MESSAGE_RULE:
                continue
            marks = []
            why = _peer_meaning(rec, field)
            if why is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=why))
            cases.append(pytest.param(rec, field, id=f"{rid}-{field}", marks=marks))
    return cases


FIELD_CASES = _field_cases()

# "DATE TIME [level] PID#TID: [*CID ]" at the start of an nginx event (our own,
# independent reading of the prefix, to check the parser against).
_PREFIX = re.compile(
    r"(?P<date>\d{4}/\d{2}/\d{2}) (?P<clock>\d{2}:\d{2}:\d{2}) \[(?P<level>[a-z]+)\] "
    r"(?P<pid>\d+)#(?P<tid>\d+):(?: \*(?P<cid>\d+)(?= |$))? ?"
)
_VRL_EXCESS = re.compile(r', excess: (?P<excess>[\d.]+),? by zone "(?P<zone>[^"]*)"\Z')


def _event(text: str) -> Event:
    """The one Event of a record (Unparsed left-overs are test_record_is_one_event's)."""
    events = [item for item in parse_text(text, UTC) if isinstance(item, Event)]
    assert len(events) == 1, f"expected one Event, got {len(events)}"
    return events[0]


def _one_event(text: str) -> Event:
    items = parse_text(text, UTC)
    shape = [
        type(item).__name__ + (f"({item.reason})" if isinstance(item, Unparsed) else "")
        for item in items
    ]
    assert shape == ["Event"], f"expected one Event, got {shape}"
    event = items[0]
    assert isinstance(event, Event)
    return event


# -- every record ----------------------------------------------------------------


@pytest.mark.parametrize("record", MUST_PARSE)
def test_record_is_one_event(record: dict[str, Any]) -> None:
    """A valid nginx error line (or multi-line event) gives one Event and no Unparsed."""
    _one_event(record["line"])


def _as_framed(text: str) -> str:
    """A record's text as one event: CRLF read as LF, the final line end dropped."""
    text = text.replace("\r\n", "\n")
    return text[:-1] if text.endswith(("\n", "\r")) else text


@pytest.mark.parametrize("record", MUST_PARSE)
def test_event_text_is_the_line(record: dict[str, Any]) -> None:
    """Framing, unwrapping and assembly keep the text: the event is the nginx part of the line.

    Only a wrapper in front of the first line is removed; continuation lines stay as
    they are.
    """
    event = _event(record["line"])
    text = _as_framed(record["line"])
    m = _PREFIX.search(text)
    assert m is not None
    assert event.line == text[m.start() :]
    assert event.lines == text.count("\n") + 1


@pytest.mark.parametrize("record", PARSE_ERROR)
def test_record_the_peer_rejects_gives_no_event(record: dict[str, Any]) -> None:
    items = parse_text(record["line"], UTC)
    assert not [item for item in items if isinstance(item, Event)]
    assert any(isinstance(item, Unparsed) for item in items)


@pytest.mark.parametrize("record", MUST_PARSE)
def test_prefix_fields_agree_with_the_line(record: dict[str, Any]) -> None:
    """time, level, pid, tid, cid as an independent anchored reading of the line gives them."""
    event = _event(record["line"])
    m = _PREFIX.search(record["line"])
    assert m is not None
    want = (
        f"{m['date'].replace('/', '-')}T{m['clock']}",
        m["level"],
        int(m["pid"]),
        int(m["tid"]),
        int(m["cid"]) if m["cid"] else None,
    )
    got = (
        event.time.replace(tzinfo=None).isoformat(),
        event.level,
        event.pid,
        event.tid,
        event.cid,
    )
    assert got == want
    assert event.time.tzinfo is UTC


# -- the peers' expectations -----------------------------------------------------


def _body(event: Event) -> str:
    """Our event's text after "PID#TID: " and "*CID ", tail included."""
    m = _PREFIX.match(event.line)
    assert m is not None, event.line
    return event.line[m.end() :]


@pytest.mark.parametrize(("record", "field"), FIELD_CASES)
def test_expected_field(record: dict[str, Any], field: str) -> None:
    event = _event(record["line"])
    want = record["expected"][field]
    repo = record["source"].split(":", 1)[0]
    if field == "time_iso":
        assert event.time.replace(tzinfo=None).isoformat() == want
        return
    if field != "message":
        assert getattr(event, field) == want
        return
    rule = MESSAGE_RULE[repo]
    if rule == "exact":
        assert event.message == want
    elif rule == "stripped":
        # The peer strips; ours is verbatim: the line's own text, whitespace and all.
        assert event.message.strip() == want
        assert _body(event).startswith(event.message)
    elif rule == "vrl_excess":
        message = event.message
        peer = record["peer_fields"]
        if "excess" in peer:
            m = _VRL_EXCESS.search(message)
            assert m is not None, message
            assert (float(m["excess"]), m["zone"]) == (peer["excess"], peer["zone"])
            message = message[: m.start()]
        assert message == want
    else:  # body: the peer's message is our message plus the ", client: ..." tail
        body = _body(event)
        assert body == want
        assert body.startswith(event.message)
        rest = body[len(event.message) :]
        assert rest == "" or rest.startswith(_TAIL_KEY), rest


# -- lines from GitHub issues ----------------------------------------------------


@pytest.mark.parametrize(
    "issue", [pytest.param(r, id=i) for r, i in zip(ISSUES, ISSUE_IDS, strict=True)]
)
def test_issue_line_is_one_event(issue: dict[str, Any]) -> None:
    """Real ingress-nginx / Kong / APISIX lines, one with a docker-compose prefix."""
    event = _one_event(issue["line"])
    m = _PREFIX.search(issue["line"])
    assert m is not None
    # Wrappers (the compose "kong_1 | " prefix) are removed: the event is the nginx line.
    assert event.line == issue["line"][m.start() :]
    assert (event.level, event.pid, event.tid) == (m["level"], int(m["pid"]), int(m["tid"]))
    assert event.cid == (int(m["cid"]) if m["cid"] else None)


def test_fixture_counts() -> None:
    """The fixture files are the ones the README describes (617 + 20 records).

    122 records have expectations: the shared README says 124 after trimming, but
    its own per-source table adds up to 122 (134 minus the 12 trimmed records).
    """
    assert len(RECORDS) == 617
    assert sum(1 for rec in RECORDS if rec["expected"]) == 122
    assert len(PARSE_ERROR) == 9
    assert len(ISSUES) == 20
    assert len(set(RECORD_IDS)) == len(RECORD_IDS)
    assert {rec["source"].split(":", 1)[0] for rec in RECORDS} == set(SHORT)
