"""``retrywatch lint``: find the retry-loop misconfiguration in nginx and ingress-nginx
configuration before it loops.

    inputs (paths) ──► nginx_conf (crossplane + lua) ──► rules ─┐
                   └─► ingress (Kubernetes YAML) ──────► ingress ┴─► findings ──► report

Nothing read is executed: nginx files are parsed, Lua is tokenised, YAML is composed with
the safe loader.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from retrywatch.lint import ingress
from retrywatch.lint.model import RULES, Finding, Location, Rule, Severity
from retrywatch.lint.nginx_conf import Problem, load
from retrywatch.lint.rules import DEFAULT_MAX_TRIES, check

__all__ = ["RULES", "Finding", "LintResult", "Rule", "Severity", "docs_dir", "explain", "lint",
           "pages"]

_YAML = (".yaml", ".yml")
_CODE = re.compile(r"[a-z][a-z_]*")
_MAX_YAML_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class LintResult:
    findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # every file read, includes too

    @property
    def input_errors(self) -> list[Finding]:
        return [f for f in self.findings if f.code == "lint_input"
                and f.severity is Severity.ERROR]

    def at_least(self, severity: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity >= severity]


def docs_dir() -> Path:
    """The rule pages: retrywatch/lint/docs/ (links to docs/lint/ in the repository, the
    files themselves in the wheel); the repository's docs/lint as a fallback."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "docs", here.parent.parent / "docs" / "lint"):
        if candidate.is_dir():
            return candidate
    return here / "docs"


def pages() -> list[str]:
    """The codes that have a page: the rules and the live alerts' diagnosis codes."""
    return sorted(p.stem for p in docs_dir().glob("*.md") if _CODE.fullmatch(p.stem))


def explain(code: str) -> str:
    """The page of a rule (or of a live alert's diagnosis code); KeyError if none."""
    if code not in pages():
        raise KeyError(code)
    return (docs_dir() / f"{code}.md").read_text(encoding="utf-8")


def _expand(paths: list[str], problems: list[Problem]) -> list[str]:
    """Files to lint: a directory gives its nginx.conf files (or, when it has none, every
    *.conf) and every YAML file, recursively, in a stable order; a directory with none of
    them is a problem (a mistyped path must not pass a CI job)."""
    out: list[str] = []
    for path in paths:
        if not os.path.isdir(path):
            out.append(path)
            continue
        confs, mains, yamls = [], [], []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if name.endswith(_YAML):
                    yamls.append(full)
                elif name == "nginx.conf":
                    mains.append(full)
                elif name.endswith(".conf"):
                    confs.append(full)
        if not (mains or confs or yamls):
            problems.append(Problem(path, None, "no nginx configuration (*.conf) or "
                                    "Kubernetes YAML (*.yaml, *.yml) in this folder", "error"))
        out += (mains or confs) + yamls
    return out


def _binary(head: bytes) -> bool:
    """A NUL, or mostly bytes that are not text, in the first 8 KiB."""
    sample = head[:8192]
    if b"\0" in sample:
        return True
    text = sample.decode("utf-8", errors="replace")
    odd = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\r\n\f"))
    return len(text) > 0 and odd / len(text) > 0.1


def _is_yaml(path: str, head: bytes) -> bool:
    if path.endswith(_YAML):
        return True
    first = head.lstrip().split(b"\n", 1)[0]
    return first.startswith((b"apiVersion:", b"kind:", b"---", b"controller:"))


def _problem(p: Problem) -> Finding:
    severity = Severity.ERROR if p.severity == "error" else Severity.NOTE
    return Finding("lint_input", severity, Location(p.file, p.line), p.message,
                   "retrywatch lint judges only what it could read.",
                   "Fix the file (nginx -t says the same for nginx files), or give the "
                   "missing include beside it.")


def lint(paths: list[str], *, prefix: str | None = None, max_tries: int = DEFAULT_MAX_TRIES,
         ingress_version: tuple[int, ...] | None = None,
         annotations_prefix: str = ingress.ANNOTATION_PREFIX) -> LintResult:
    """Lint nginx configuration files and ingress-nginx YAML.

    ``prefix``: nginx's ``-p``, where relative Lua paths are looked up (default: the main
    file's folder and its parent). ``max_tries``: tries per request from which a bounded
    retry is still reported. ``ingress_version``: the controller's, when no Deployment or
    Helm values given say it.
    """
    result = LintResult()
    inputs = ingress.Inputs()
    problems: list[Problem] = []
    seen: set[str] = set()
    for path in _expand(paths, problems):
        real = os.path.realpath(path)
        if real in seen:
            continue  # already read as an include of an earlier file
        try:
            with open(path, "rb") as f:
                head = f.read(_MAX_YAML_BYTES + 1)
        except OSError as exc:
            problems.append(Problem(path, None, exc.strerror or str(exc), "error"))
            continue
        if _binary(head):
            problems.append(Problem(path, None, "not a text file", "error"))
            continue
        if _is_yaml(path, head):
            seen.add(real)
            result.files.append(path)
            if len(head) > _MAX_YAML_BYTES:
                problems.append(Problem(path, None, f"larger than {_MAX_YAML_BYTES} bytes",
                                        "error"))
                continue
            ingress.read_yaml(path, head.decode("utf-8", errors="replace"), inputs, problems)
            continue
        config = load(path)
        problems += config.problems
        for file in config.files:
            seen.add(os.path.realpath(file))
        result.files += [f for f in config.files if f not in result.files]
        here = os.path.dirname(os.path.abspath(path))
        prefixes = [prefix] if prefix else [here, os.path.dirname(here)]
        result.findings += check(config, prefixes=prefixes, max_tries=max_tries)
    result.findings += ingress.check(inputs, version=ingress_version, prefix=annotations_prefix)
    result.findings += [_problem(p) for p in dict.fromkeys(problems)]
    result.findings.sort(key=lambda f: (f.location.file, f.location.line or 0, -f.severity))
    return result
