"""Runaway or just busy: how sure retrywatch is that a connection is in a retry loop.

A connection id is not a request. HTTP/2 multiplexes many requests on one connection and
an HTTP/1.1 keep-alive client sends one after another; when an upstream group is down each
of them fails its bounded tries and the connection's count passes the threshold. A retry
loop is *one* request (or stream session) that keeps trying. The log says which, when it
says enough:

- a request to a dead upstream fails at most once per peer (nginx marks the peers it tried),
  and a client connection carries at most ``keepalive_requests`` requests (nginx's default
  1,000, HTTP/2 streams included; the configuration given says the real value): a
  connection with more failures than requests times peers seen (+1 for the ``no live
  upstreams`` that ends a request) has a request that tried a peer again: a loop;
- a stream session is one sequence of tries: a session that tries one peer ``CYCLES``
  times is retrying without end;
- nginx does not go back to the event loop between immediate ``connect() to X failed``
  errors: a thousand of them in one second on one connection is a synchronous loop;
- ``no live upstreams`` ends the request (nginx gave up), so a connection whose failures are
  mostly that is many requests, not one;
- and the configuration, when given (``--nginx-config``), says whether the route can loop at
  all: where the tries are bounded and nothing adds tries, it cannot.

``confirmed``: the evidence is as strong as in the real storms. ``suspected``: the count
crossed the threshold but the log cannot tell one looping request from many bounded ones.
A connection whose route the configuration bounds gets no alert at all (``ruled_out``),
unless its log contradicts the configuration (then it is suspected, saying so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from retrywatch.detect.core import Conn
from retrywatch.lint.rules import Verdict

__all__ = ["CYCLES", "FAST", "REQUESTS_PER_CONNECTION", "Confidence", "Judgement", "judge"]

Confidence = Literal["confirmed", "suspected", "ruled_out"]

#: Immediate connect() failures in one second of one connection: a synchronous loop.
FAST = 1000
#: Requests one client connection may carry when the configuration does not say:
#: nginx's default keepalive_requests (1.19.10 on; HTTP/2 too since 1.19.7).
REQUESTS_PER_CONNECTION = 1000
#: Tries of one peer within one stream session from which the session is looping.
CYCLES = 10


@dataclass(slots=True, frozen=True)
class Judgement:
    confidence: Confidence
    evidence: tuple[str, ...]  # what the log (and the configuration) show, plainly
    verdict: Verdict | None = None  # the configuration's, when given and matched

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"confidence": self.confidence, "evidence": list(self.evidence)}
        if self.verdict is not None:
            out["configuration"] = {"loop": self.verdict.loop, "bound": self.verdict.bound,
                                    "why": self.verdict.why}
        return out


def _protocols(st: Conn) -> set[str]:
    return {r.rsplit(" ", 1)[-1] for r in st.requests if r.count(" ") >= 2}


def judge(st: Conn, verdict: Verdict | None = None) -> Judgement:
    """How sure: from the connection's figures and, when given, the configuration's verdict
    for its route."""
    evidence: list[str] = []
    failures = st.failures
    kinds = st.kinds
    immediate = kinds.get("connect_to_failed", 0)
    no_live = kinds.get("no_live_upstreams", 0)
    multiplexed = bool({"HTTP/2.0", "HTTP/3.0"} & _protocols(st))
    top_peer, top_count = max(st.upstreams.items(), key=lambda kv: kv[1], default=("?", 0))
    peers = len([p for p in st.upstreams if p != "?"]) or 1
    requests = verdict.requests if verdict is not None else REQUESTS_PER_CONNECTION
    most = requests * (peers + (1 if no_live else 0))

    strong = False
    if st.peak >= FAST and immediate * 2 >= failures:
        strong = True
        evidence.append(f"{st.peak:,} immediate failures in one second on one connection: "
                        "nginx retried inside one event (a synchronous loop)")
    elif st.subsystem != "stream" and failures > most:
        strong = True
        evidence.append(f"{failures:,} failures on one connection against {peers:,} peer(s), "
                        f"up to {st.peak:,} a second: more than its requests can make (at most "
                        f"{requests:,} requests on a connection, each failing at most once per "
                        "peer)")
    if st.subsystem == "stream" and top_count >= CYCLES:
        strong = True
        evidence.append(f"one stream session tried {top_peer} {top_count:,} times (a "
                        "session tries each peer of its group at most once unless a "
                        "balancer adds tries)")

    if verdict is not None:
        if verdict.loop:
            evidence.append(f"the configuration allows a loop here: {verdict.why}")
            return Judgement("confirmed" if verdict.certain or strong else "suspected",
                             tuple(evidence), verdict)
        if not strong:
            return Judgement("ruled_out", (f"the configuration bounds every request here: "
                                           f"{verdict.why}",), verdict)
        evidence.append(f"but the configuration given bounds every request here ({verdict.why})"
                        ": is it the configuration nginx runs?")
        return Judgement("suspected", tuple(evidence), verdict)

    if strong:
        return Judgement("confirmed", tuple(evidence))
    # why the log cannot tell
    if multiplexed:
        evidence.append("HTTP/2 connection: its concurrent requests share the connection id, "
                        "and each may fail once per peer")
    if no_live * 2 >= failures and no_live:
        evidence.append(f"{no_live:,} of the failures are 'no live upstreams': nginx gave up "
                        "on those requests")
    if st.distinct_requests > 1:
        evidence.append(f"{st.distinct_requests:,} different requests on this connection")
    if not evidence:
        evidence.append(f"{failures:,} failures at up to {st.peak:,} a second: one looping "
                        "request or several bounded ones look alike in the log; give "
                        "--nginx-config to tell")
    return Judgement("suspected", tuple(evidence))
