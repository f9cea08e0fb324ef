"""An alert's saved form and its redaction, in one process: ``to_state``/``from_state``
bring back every field (and read an older checkpoint's alert with today's defaults);
query values are redacted in the request and the sample only; the JSON made once per
change is cleared by every change. (Mutation testing found these reached but their
results unchecked.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from helpers import BASE_TS, http_refused, stream_refused, when
from service_harness import new_engine
from test_engine import lines

from retrywatch.detect.alerts import REDACTED, Alert, alert_id, redact_query
from retrywatch.detect.core import Conn
from retrywatch.detect.diagnosis import Diagnosis
from retrywatch.detect.judge import Judgement, judge
from retrywatch.lint.rules import Verdict

FIRED = datetime(2026, 11, 25, 17, 0, 3, tzinfo=UTC)


def an_alert() -> Alert:
    return Alert(
        id="6e0c0dedff9acdc6", source="nginx", pid=18264, cid=73, fired_at=FIRED,
        failures_in_window=812,
        diagnosis=Diagnosis("http_retry_loop", "the cause", "the fix"),
        snapshot={"request": "GET /a?token=s3cret&b=1 HTTP/1.1", "failures": 9000,  # type: ignore[typeddict-item]
                  "sample": "connect() failed ... request: \"GET /a?token=s3cret HTTP/1.1\"",
                  "upstreams": {"127.0.0.1:17939": 9000}},
        confidence="confirmed", evidence={"evidence": ["one request, retried"]})


def test_to_state_and_back_is_the_same_alert() -> None:
    alert = an_alert()
    alert.resolve(FIRED + timedelta(seconds=40), "quiet")
    saved = orjson.loads(orjson.dumps(alert.to_state()))  # as the checkpoint holds it
    back = Alert.from_state(saved)
    assert back == alert
    assert back.to_dict() == alert.to_dict()
    assert back.resolved_at == FIRED + timedelta(seconds=40)
    assert (back.state, back.resolved_reason, back.confidence) == (
        "resolved", "quiet", "confirmed")
    assert back.diagnosis == Diagnosis("http_retry_loop", "the cause", "the fix")
    assert back.failures_in_window == 812
    assert saved["fired_at"] == "2026-11-25T17:00:03+00:00"
    assert saved["diagnosis"]["code"] == "http_retry_loop"


def test_a_firing_alert_saved_has_no_resolution() -> None:
    saved = an_alert().to_state()
    assert saved["state"] == "firing"
    assert saved["resolved_at"] is None and saved["resolved_reason"] is None
    back = Alert.from_state(saved)
    assert (back.state, back.resolved_at, back.resolved_reason) == ("firing", None, None)


def test_an_alert_from_an_older_checkpoint_reads_with_defaults() -> None:
    """Before confidence, evidence and the window count were saved: an alert then fired
    on the count alone (suspected), with nothing more to show."""
    back = Alert.from_state({"id": 7, "source": "nginx", "pid": "18264", "cid": 73,
                             "fired_at": "2026-11-25T17:00:03+00:00", "state": "odd"})
    assert (back.id, back.pid, back.cid) == ("7", 18264, 73)
    assert back.state == "firing" and back.resolved_at is None
    assert back.confidence == "suspected" and back.evidence == {}
    assert back.failures_in_window == 0 and back.diagnosis is None
    assert back.snapshot == {}
    with pytest.raises(KeyError):
        Alert.from_state({"source": "nginx", "pid": 1, "cid": 1,
                          "fired_at": "2026-11-25T17:00:03+00:00"})


@pytest.mark.parametrize(("text", "redacted"), [
    ("GET /a?token=secret&b=1 HTTP/1.1", f"GET /a?token={REDACTED}&b={REDACTED} HTTP/1.1"),
    ("GET /a?flag&x=1#frag", f"GET /a?flag&x={REDACTED}#frag"),
    ('upstream: "http://u/p?k=v", host: "h"', f'upstream: "http://u/p?k={REDACTED}", host: "h"'),
    ("GET /a?x=1 and /b?y=2", f"GET /a?x={REDACTED} and /b?y={REDACTED}"),
    ("GET /a?=v", f"GET /a?={REDACTED}"),
    ("GET /a?x=a=b&y=1", f"GET /a?x={REDACTED}&y={REDACTED}"),  # the first = ends the name
    ("GET /a? HTTP/1.1", "GET /a? HTTP/1.1"),
    ("no query at all", "no query at all"),
])
def test_redact_query_replaces_values_and_keeps_names(text: str, redacted: str) -> None:
    assert redact_query(text) == redacted


def test_redact_replaces_the_request_and_the_sample_only() -> None:
    alert = an_alert()
    made = alert.to_json()
    alert.redact()
    assert alert.snapshot["request"] == f"GET /a?token={REDACTED}&b={REDACTED} HTTP/1.1"
    assert alert.snapshot["sample"] == (
        f'connect() failed ... request: "GET /a?token={REDACTED} HTTP/1.1"')
    assert alert.snapshot["failures"] == 9000
    assert alert.snapshot["upstreams"] == {"127.0.0.1:17939": 9000}
    assert alert.json_made is None  # the JSON made before is not served again
    assert b"s3cret" in made and b"s3cret" not in alert.to_json()


def test_redact_leaves_an_alert_without_queries_alone() -> None:
    alert = an_alert()
    alert.snapshot = {"request": "GET /a HTTP/1.1", "sample": None}  # type: ignore[typeddict-item]
    made = alert.to_json()
    alert.redact()
    assert alert.snapshot == {"request": "GET /a HTTP/1.1", "sample": None}
    assert alert.json_made is made  # nothing changed: nothing to make again
    only_sample = an_alert()
    only_sample.snapshot = {"request": None, "sample": "x /b?k=v"}  # type: ignore[typeddict-item]
    only_sample.redact()
    assert only_sample.snapshot == {"request": None, "sample": f"x /b?k={REDACTED}"}


def test_the_json_is_made_once_per_change() -> None:
    alert = an_alert()
    assert alert.json_made is None
    first = alert.to_json()
    assert alert.to_json() is first and alert.json_made is first
    assert orjson.loads(first) == orjson.loads(orjson.dumps(alert.to_dict()))
    alert.resolve(FIRED + timedelta(seconds=5), "connection_ended")
    assert alert.json_made is None
    assert orjson.loads(alert.to_json())["state"] == "resolved"


def test_a_fired_alert_as_the_api_shows_it_every_field() -> None:
    """Each figure of the snapshot computed from a storm whose numbers are known."""
    engine = new_engine()
    text = [stream_refused(10, 7, upstream="10.0.0.2:5555") for _ in range(20)]
    text += [stream_refused(12, 7, upstream="10.0.0.3:5555") for _ in range(30)]
    engine.feed("nginx", lines(*text, stream_refused(12, 99)))
    (alert,) = engine.firing.values()
    d = alert.to_dict()
    diagnosis, evidence, sample = d.pop("diagnosis"), d.pop("evidence"), d.pop("sample")
    assert d == {
        "id": alert_id("nginx", 2454, 7, BASE_TS + 10), "state": "firing",
        "source": "nginx", "pid": 2454, "cid": 7, "subsystem": "stream",
        "client": "10.0.0.1", "server": "0.0.0.0:5555", "request": None, "host": None,
        "upstreams": {"10.0.0.3:5555": 30, "10.0.0.2:5555": 20},  # most failures first
        "failures": 50, "first_seen": when(10).isoformat(), "last_seen": when(12).isoformat(),
        "duration_seconds": 3, "peak_per_second": 30, "mean_per_second": 16.7,
        "errnos": {"111: Connection refused": 50}, "kinds": {"connect_failed": 50},
        "distinct_requests": 0, "failures_in_window": 50,
        "fired_at": when(10).isoformat(), "resolved_at": None, "resolved_reason": None,
        "confidence": "confirmed", "configuration": None,
    }
    assert list(d["upstreams"]) == ["10.0.0.3:5555", "10.0.0.2:5555"]
    assert diagnosis is not None
    assert (diagnosis["code"], diagnosis["docs"]) == (
        "stream_retry_loop", "docs/lint/stream_retry_loop.md")
    assert "50 connect failures in 3 s (peak 30/s)" in diagnosis["cause"]
    assert evidence == alert.evidence["evidence"] and len(evidence) == 1
    assert "10.0.0.3:5555 30 times" in evidence[0]
    assert sample == stream_refused(10, 7, upstream="10.0.0.2:5555")


def test_a_request_and_sample_are_redacted_when_query_strings_are_not_kept() -> None:
    engine = new_engine(keep_query_strings=False)
    text = [http_refused(10, 7, uri="/pay?card=4111&cvv=1") for _ in range(40)]
    engine.feed("nginx", lines(*text, stream_refused(10, 99)))
    (alert,) = engine.firing.values()
    assert alert.snapshot["request"] == f"GET /pay?card={REDACTED}&cvv={REDACTED} HTTP/1.1"
    assert alert.snapshot["sample"] is not None and "4111" not in alert.snapshot["sample"]
    assert alert.snapshot["distinct_requests"] == 1
    kept = new_engine()
    kept.feed("nginx", lines(*text, stream_refused(10, 99)))
    (same,) = kept.firing.values()
    assert same.snapshot["request"] == "GET /pay?card=4111&cvv=1 HTTP/1.1"


# -- refresh: the judgement given, not one made again; confidence only goes up ----------------

def suspected_conn(uri: str = "/a?token=s3cret") -> Conn:
    """Figures the log alone only suspects (600 failures in a second over three peers, as
    200 concurrent HTTP/2 requests make them): a judgement given decides, not judge()."""
    peers = {f"127.0.0.1:900{i}": 200 for i in range(1, 4)}
    request = f"GET {uri} HTTP/2.0"
    return Conn(("nginx", 1, 7), 600, 600, 1, 0, 0, FIRED, FIRED, 600, 0, 200, peers,
                {"111: Connection refused": 600}, {"connect_failed": 600}, {request: 600}, 1,
                "127.0.0.1", "storm.test", None, "http://127.0.0.1:9001/a", "http",
                f'connect() failed, request: "{request}"')


CONFIRMED = Judgement("confirmed", ("the configuration says it loops",),
                      Verdict(loop=True, bound=None, why="tries 0 and timeout 0", requests=1))
SUSPECTED = Judgement("suspected", ("could be many requests",))


def test_the_conn_below_is_only_suspected_by_the_log() -> None:
    assert judge(suspected_conn()).confidence == "suspected"


def test_fire_takes_the_judgement_given() -> None:
    alert = Alert.fire(suspected_conn(), FIRED, CONFIRMED)
    assert alert.confidence == "confirmed"
    assert alert.evidence == CONFIRMED.to_dict()
    d = alert.to_dict()
    assert d["evidence"] == ["the configuration says it loops"]
    assert d["configuration"] == {"loop": True, "bound": None, "why": "tries 0 and timeout 0"}
    # the diagnosis is made from the same judgement: no "cannot tell" for a confirmed one
    assert alert.diagnosis is not None
    assert "The configuration shows it: tries 0 and timeout 0" in alert.diagnosis.cause
    assert "cannot tell" not in alert.diagnosis.cause
    alone = Alert.fire(suspected_conn(), FIRED)
    assert alone.confidence == "suspected" and alone.diagnosis is not None
    assert "cannot tell" in alone.diagnosis.cause
    assert alone.to_dict()["configuration"] is None


def test_fire_and_refresh_keep_query_strings_unless_told() -> None:
    kept = Alert.fire(suspected_conn(), FIRED)
    assert kept.snapshot["request"] == "GET /a?token=s3cret HTTP/2.0"
    assert kept.snapshot["sample"] == 'connect() failed, request: "GET /a?token=s3cret HTTP/2.0"'
    kept.refresh(suspected_conn("/b?k=v"))
    assert kept.snapshot["request"] == "GET /b?k=v HTTP/2.0"
    redacted = Alert.fire(suspected_conn(), FIRED, redact=True)
    assert redacted.snapshot["request"] == f"GET /a?token={REDACTED} HTTP/2.0"
    redacted.refresh(suspected_conn("/b?k=v"), redact=True)
    assert redacted.snapshot["request"] == f"GET /b?k={REDACTED} HTTP/2.0"


def test_refresh_says_when_the_alert_becomes_confirmed_once() -> None:
    alert = Alert.fire(suspected_conn(), FIRED, SUSPECTED)
    assert alert.confidence == "suspected"
    assert alert.refresh(suspected_conn(), SUSPECTED) is False
    assert alert.refresh(suspected_conn(), CONFIRMED) is True
    assert alert.confidence == "confirmed"
    assert alert.refresh(suspected_conn(), CONFIRMED) is False  # already confirmed


def test_a_confirmed_alert_stays_confirmed_with_its_evidence() -> None:
    alert = Alert.fire(suspected_conn(), FIRED, CONFIRMED)
    assert alert.refresh(suspected_conn(), SUSPECTED) is False
    assert alert.confidence == "confirmed"
    assert alert.evidence == CONFIRMED.to_dict()  # not the weaker evidence
    # a suspected one takes the newer suspected evidence
    weak = Alert.fire(suspected_conn(), FIRED, Judgement("suspected", ("first",)))
    weak.refresh(suspected_conn(), Judgement("suspected", ("second",)))
    assert (weak.confidence, weak.evidence["evidence"]) == ("suspected", ["second"])


def test_an_alert_without_diagnosis_or_evidence_shows_none() -> None:
    alert = Alert(id="x", source="nginx", pid=1, cid=2, fired_at=FIRED)
    d = alert.to_dict()
    assert (d["diagnosis"], d["evidence"], d["configuration"]) == (None, [], None)
    assert alert.to_state()["diagnosis"] is None


def test_redact_replaces_a_query_in_the_request_alone() -> None:
    alert = an_alert()
    alert.snapshot = {"request": "GET /a?k=v HTTP/1.1", "sample": "no query"}  # type: ignore[typeddict-item]
    alert.to_json()
    alert.redact()
    assert alert.snapshot == {"request": f"GET /a?k={REDACTED} HTTP/1.1", "sample": "no query"}
    assert alert.json_made is None
