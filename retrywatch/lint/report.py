"""The findings as text for a terminal, JSON for scripts, and SARIF 2.1.0 for CI systems
(GitHub code scanning, GitLab, Azure DevOps show SARIF results inline on the lines)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import orjson

from retrywatch import __version__
from retrywatch.lint import LintResult, docs_dir
from retrywatch.lint.model import RULES, Finding, Location, Severity

__all__ = ["render_json", "render_sarif", "render_text"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "note"}


def _rel(path: str) -> str:
    """A path relative to the working directory when it is under it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _at(loc: Location) -> str:
    return f"{_rel(loc.file)}:{loc.line}" if loc.line else _rel(loc.file)


def _summary(result: LintResult) -> dict[str, int]:
    counts = {s.label: 0 for s in sorted(Severity, reverse=True)}
    for f in result.findings:
        counts[f.severity.label] += 1
    return {**counts, "files": len(result.files)}


def render_text(result: LintResult, out: TextIO, *, color: bool = False) -> None:
    paint = {Severity.ERROR: "\x1b[1;31m", Severity.WARNING: "\x1b[1;33m",
             Severity.NOTE: "\x1b[1;36m"}
    for f in result.findings:
        label = f"{f.severity.label}[{f.code}]"
        if color:
            label = f"{paint[f.severity]}{label}\x1b[0m"
        out.write(f"{_at(f.location)}: {label} {f.message}\n")
        if f.code == "lint_input":
            continue
        out.write(f"  why: {f.why}\n")
        out.write(f"  fix: {f.fix}\n")
        for r in f.related:
            out.write(f"  see: {_at(r)}" + (f" {r.what}" if r.what else "") + "\n")
        out.write(f"  docs: {f.rule.docs} (retrywatch lint --explain {f.code})\n")
    s = _summary(result)
    out.write(f"{s['error']} error(s), {s['warning']} warning(s), {s['note']} note(s) "
              f"in {s['files']} file(s).\n")


def render_json(result: LintResult, out: TextIO) -> None:
    doc = {"tool": "retrywatch lint", "version": __version__,
           "files": [_rel(f) for f in result.files],
           "findings": [{**f.to_dict(), "file": _rel(f.location.file),
                         "related": [{**r.to_dict(), "file": _rel(r.file)} for r in f.related]}
                        for f in result.findings],
           "summary": _summary(result)}
    out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


def _help(code: str) -> dict[str, str]:
    rule = RULES[code]
    page = docs_dir() / f"{code}.md"
    markdown = page.read_text(encoding="utf-8") if page.is_file() else rule.summary
    return {"text": f"{rule.summary} See {rule.docs}.", "markdown": markdown}


def _uri(path: str) -> str:
    """A file URI, or a relative reference to %SRCROOT% with its characters escaped."""
    rel = _rel(path)
    if os.path.isabs(rel):
        return Path(rel).as_uri()
    return quote(Path(rel).as_posix())


def _artifact(path: str) -> dict[str, str]:
    location = {"uri": _uri(path)}
    if not os.path.isabs(_rel(path)):
        location["uriBaseId"] = "%SRCROOT%"
    return location


def _physical(loc: Location) -> dict[str, Any]:
    physical: dict[str, Any] = {"artifactLocation": {"uri": _uri(loc.file)}}
    if not os.path.isabs(_rel(loc.file)):
        physical["artifactLocation"]["uriBaseId"] = "%SRCROOT%"
    if loc.line:
        physical["region"] = {"startLine": loc.line}
    return physical


def _result(f: Finding, index: dict[str, int]) -> dict[str, Any]:
    text = f"{f.message} Why: {f.why} Fix: {f.fix}"
    out: dict[str, Any] = {
        "ruleId": f.code, "ruleIndex": index[f.code], "level": _LEVELS[f.severity],
        "message": {"text": text},
        "locations": [{"physicalLocation": _physical(f.location)}],
        # stable when lines move, distinct for each place: the code, the file, the
        # directive and the route(s) it is about
        "partialFingerprints": {"retrywatch/v1": f"{f.code}:{_rel(f.location.file)}:"
                                                 f"{f.location.what}:{f.facts.get('scope', '')}"
                                                 f":{f.facts.get('upstream', '')}"},
    }
    if f.related:
        out["relatedLocations"] = [
            {"id": i, "physicalLocation": _physical(r), "message": {"text": r.what or "here"}}
            for i, r in enumerate(f.related)]
    if f.facts:
        out["properties"] = f.facts
    return out


def render_sarif(result: LintResult, out: TextIO) -> None:
    codes = list(RULES)
    index = {code: i for i, code in enumerate(codes)}
    rules = [{"id": code, "name": "".join(w.title() for w in code.split("_")),
              "shortDescription": {"text": RULES[code].title},
              "fullDescription": {"text": RULES[code].summary},
              "help": _help(code),
              "defaultConfiguration": {"level": RULES[code].level},
              "properties": {"tags": ["nginx", "reliability"]}}
             for code in codes]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "retrywatch", "version": __version__,
                            "semanticVersion": __version__, "rules": rules}},
        "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().as_uri() + "/"}},
        "artifacts": [{"location": _artifact(f)} for f in result.files],
        "results": [_result(f, index) for f in result.findings],
        "invocations": [{"executionSuccessful": not result.input_errors,
                         "toolExecutionNotifications": [
                             {"level": "error", "message": {"text": f.message},
                              "locations": [{"physicalLocation": _physical(f.location)}]}
                             for f in result.input_errors]}],
    }
    doc = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
