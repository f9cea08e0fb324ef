"""Why a connection keeps failing, and what to change: read from what the log shows."""

from __future__ import annotations

from dataclasses import dataclass

from retrywatch.detect.core import Conn
from retrywatch.detect.judge import Judgement, judge
from retrywatch.detect.remedies import doc_page, fix, module_of_scheme
from retrywatch.detect.schema import DiagnosisData

__all__ = ["Diagnosis", "diagnose"]

#: Immediate failures in one log second above which the worker must be spinning
#: synchronously (asynchronous refusals on loopback top out near 45k/s, but an
#: immediate connect() error never returns to the event loop: shared/real-nginx).
SYNC_LOOP_PER_SECOND = 1000
#: Distinct failing requests on one connection that make it a keep-alive pattern.
KEEPALIVE_MIN_REQUESTS = 3


@dataclass(slots=True, frozen=True)
class Diagnosis:
    code: str
    cause: str
    fix: str

    def to_dict(self) -> DiagnosisData:
        return {"code": self.code, "cause": self.cause, "fix": self.fix,
                "docs": doc_page(self.code)}


def _share(st: Conn, *kinds: str) -> float:
    return sum(st.kinds.get(k, 0) for k in kinds) / max(st.failures, 1)


def _peers(st: Conn) -> str:
    top = sorted(st.upstreams.items(), key=lambda kv: -kv[1])[:3]
    text = ", ".join(f"{addr} ({count:,})" for addr, count in top)
    more = len(st.upstreams) - len(top)
    return text + (f" and {more} more" if more > 0 else "")


def diagnose(st: Conn, judgement: Judgement | None = None) -> Diagnosis:
    """The likely cause and the fix for a connection whose failures crossed the threshold.

    The cause states as fact only what the log (and the configuration, when given) shows;
    what it cannot show is said as what to check ("if … is 0").
    """
    judgement = judgement or judge(st)
    verdict = judgement.verdict
    seconds = st.last - st.first + 1
    what = (
        f"{st.failures:,} connect failures in {seconds:,} s (peak {st.peak:,}/s) "
        f"against {_peers(st)}"
    )
    scheme = (st.upstream_url or "").split("://", 1)[0] if "://" in (st.upstream_url or "") else ""
    module = module_of_scheme(scheme)
    tries = f"{module}_next_upstream_tries"
    connect_timeout = f"{module}_connect_timeout"
    requests = st.distinct_requests
    confirmed = judgement.confidence == "confirmed"
    shown = f"The configuration shows it: {verdict.why}. " if verdict and verdict.loop else ""
    unsure = ("The log alone cannot tell one looping request from many bounded ones ("
              + "; ".join(judgement.evidence) + "). ") if not confirmed else ""

    if _share(st, "connect_to_failed") >= 0.5 and st.peak >= SYNC_LOOP_PER_SECOND:
        return Diagnosis(
            "synchronous_loop",
            f"connect() fails at once ({_top(st.errnos)}) and nginx retries inside one event: "
            f"the worker is stuck in a synchronous loop, blocking every other connection it "
            f"serves, and its clock is frozen (the lines share one second). {what}. {shown}",
            fix("synchronous_loop", module),
        )
    if not confirmed and st.subsystem == "http" and (
            requests >= KEEPALIVE_MIN_REQUESTS
            and st.failures <= requests * max(len(st.upstreams), 1) * 3):
        return Diagnosis(
            "keepalive_failing_requests",
            f"A keep-alive connection carries many different requests ({requests:,}) and "
            f"each one fails a bounded number of times: the upstream is down, but this is not "
            f"a retry loop. {what}.",
            fix("keepalive_failing_requests", module),
        )
    if not confirmed and st.subsystem == "http" and {"HTTP/2.0", "HTTP/3.0"} & {
            r.rsplit(" ", 1)[-1] for r in st.requests}:
        return Diagnosis(
            "multiplexed_failing_requests",
            f"An HTTP/2 connection's requests fail against a dead upstream: they share the "
            f"connection id, so their bounded tries add up on it. {what}. {unsure}If its "
            f"location passes to a Lua balancer that calls set_more_tries() on every try while "
            f"{tries} is 0, one of them may be looping: check with retrywatch lint, or give "
            "--nginx-config.",
            fix("multiplexed_failing_requests", module),
        )
    if _share(st, "upstream_timed_out") >= 0.5:
        return Diagnosis(
            "slow_timeout_loop",
            "The connection keeps retrying peers that never answer the SYN "
            f"({_top(st.errnos)}): one try per {connect_timeout}. {what}. {shown}{unsure}",
            fix("slow_timeout_loop", module),
        )
    if st.subsystem == "stream":
        cause = (shown or ("A TCP/UDP stream session retries its dead upstreams without end. "
                           if confirmed else unsure)
                 + ("" if verdict and verdict.loop else
                    "The usual cause, to check: a Lua balancer that adds a try "
                    "(set_more_tries) on every attempt while proxy_next_upstream_tries is 0 "
                    "(nginx's default), as in the ingress-nginx 0.25 incident. "))
        return Diagnosis("stream_retry_loop", f"{cause}{what}.", fix("stream_retry_loop", module))
    if st.subsystem == "http":
        cause = (shown or ("One HTTP request retries its dead upstreams without end. "
                           if confirmed else unsure)
                 + ("" if verdict and verdict.loop else
                    "The usual cause, to check: a balancer (balancer_by_lua) that adds a try "
                    f"on every attempt while {tries} is 0 (nginx's default). "))
        return Diagnosis("http_retry_loop", f"{cause}{what}.", fix("http_retry_loop", module))
    return Diagnosis(
        "retry_loop",
        f"One connection keeps retrying upstreams that refuse it. {what}. {shown}{unsure}",
        fix("retry_loop", module),
    )


def _top(errnos: dict[str, int]) -> str:
    if not errnos:
        return "no errno"
    return max(errnos.items(), key=lambda kv: kv[1])[0]
