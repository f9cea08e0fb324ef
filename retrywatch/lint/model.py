"""What ``retrywatch lint`` reports: findings, their rules and severities."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from retrywatch.detect.remedies import doc_page

__all__ = ["RULES", "Finding", "Location", "Rule", "Severity"]


class Severity(IntEnum):
    NOTE = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.upper()]


@dataclass(slots=True, frozen=True)
class Rule:
    code: str  # the failure mode, as the live alerts' diagnosis names it
    title: str
    summary: str  # one sentence: what goes wrong
    level: str = "error"  # the severity of its typical finding (SARIF's default level)

    @property
    def docs(self) -> str:
        return doc_page(self.code)


RULES: dict[str, Rule] = {r.code: r for r in (
    Rule("http_retry_loop", "HTTP request retries a dead upstream without end",
         "A Lua balancer adds a try on every attempt (set_more_tries) while the location's "
         "*_next_upstream_tries is 0, so one request retries until the client goes away."),
    Rule("stream_retry_loop", "Stream session retries a dead upstream without end",
         "A stream Lua balancer adds a try on every attempt while the stream server's "
         "proxy_next_upstream_tries is 0: the ingress-nginx TCP/UDP incident."),
    Rule("unbounded_next_upstream", "A request may try very many peers, with no time limit",
         "*_next_upstream_tries 0 (or a large value) and *_next_upstream_timeout 0 on a "
         "group with many peers: a request that finds them all down tries every one.",
         "warning"),
    Rule("no_live_retry_loop", "Retrying on no_live without a bound",
         "*_next_upstream no_live retries when no peer is live, which fails at once: with "
         "unlimited or very large tries one request spins through them inside one event."),
    Rule("lint_input", "A file could not be read as a configuration",
         "retrywatch lint could not read or parse this file, or a file it includes.",
         "error"),
)}


@dataclass(slots=True, frozen=True)
class Location:
    file: str
    line: int | None
    what: str = ""  # the directive or key, as written ("proxy_next_upstream_tries 0")

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "what": self.what}


@dataclass(slots=True, frozen=True)
class Finding:
    code: str
    severity: Severity
    location: Location  # where the fix goes
    message: str  # what is wrong here, with the values found
    why: str  # why it loops
    fix: str  # the same words as the live alert's diagnosis
    related: tuple[Location, ...] = field(default=())  # the other directives involved
    facts: dict[str, Any] = field(default_factory=dict)  # machine-readable details

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    def key(self) -> tuple[str, str, int | None, str]:
        return (self.code, self.location.file, self.location.line, self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity.label,
                "title": self.rule.title, **self.location.to_dict(),
                "message": self.message, "why": self.why, "fix": self.fix,
                "docs": self.rule.docs, "related": [r.to_dict() for r in self.related],
                "facts": self.facts}
