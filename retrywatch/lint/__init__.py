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
from retrywatch.lint.nginx_conf import (
    Config,
    Problem,
    default_root,
    load,
    load_folder,
    local_path,
    read_bytes,
)
from retrywatch.lint.rules import DEFAULT_MAX_TRIES, check

__all__ = ["RULES", "Finding", "LintResult", "Rule", "Severity", "docs_dir", "explain", "lint",
           "pages"]

_YAML = (".yaml", ".yml")
_CODE = re.compile(r"[a-z][a-z_]*")
_MAX_YAML_BYTES = 16 * 1024 * 1024
_NOTHING = "nothing retrywatch lint reads here"  # ingress.read_yaml's note


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


def _walk(folder: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """The nginx.conf files, the other *.conf files, the YAML files and the JSON files under
    ``folder``, recursively (hidden folders skipped), in a stable order."""
    mains: list[str] = []
    confs: list[str] = []
    yamls: list[str] = []
    jsons: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.endswith(_YAML):
                yamls.append(full)
            elif name.endswith(".json"):
                jsons.append(full)
            elif name == "nginx.conf":
                mains.append(full)
            elif name.endswith(".conf"):
                confs.append(full)
    return mains, confs, yamls, jsons


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


def _is_json(path: str, head: bytes) -> bool:
    """Kubernetes objects as JSON (``kubectl get … -o json``): a ``.json`` file, or text
    that starts with ``{`` and names an apiVersion or a kind (an nginx file cannot start
    with a brace)."""
    if path.endswith(".json"):
        return True
    return head.lstrip()[:1] == b"{" and (b'"apiVersion"' in head or b'"kind"' in head)


def _problem(p: Problem) -> Finding:
    severity = Severity.ERROR if p.severity == "error" else Severity.NOTE
    return Finding("lint_input", severity, Location(p.file, p.line), p.message,
                   "retrywatch lint judges only what it could read.",
                   "Fix the file (nginx -t says the same for nginx files), or give the "
                   "missing include beside it.")


class _Run:
    """One ``lint()``: the inputs read, the files seen (an input already read as an
    include of another is not read again), the findings and problems."""

    def __init__(self, prefix: str | None, max_tries: int, root: str | None) -> None:
        self.prefix = prefix
        self.max_tries = max_tries
        self.root = root
        self.result = LintResult()
        self.inputs = ingress.Inputs()
        self.problems: list[Problem] = []
        self.seen: set[str] = set()
        self.listed: set[str] = set()  # result.files, to add each once

    def local(self, path: str, root_dir: str | None = None) -> str:
        """Where ``path`` is read (a link to an absolute path is followed under the root)."""
        if path == "-":
            return path
        root_dir = root_dir or self.root or default_root(path)
        return local_path(path, root_dir)

    def real(self, path: str, root_dir: str | None = None) -> str:
        """The file ``path`` is, to know it when it is met again."""
        return path if path == "-" else os.path.realpath(self.local(path, root_dir))

    def read(self, path: str, *, missing_ok: bool = False) -> bytes | None:
        """An input's content, read once; None (and a problem) if it cannot be read.
        ``missing_ok``: a file found in a folder that is a link to nowhere (under the
        root) is no input: an include of it says so."""
        try:
            data = read_bytes(self.local(path))
        except OSError as exc:
            if not (missing_ok and isinstance(exc, FileNotFoundError)):
                self.problems.append(Problem(path, None, exc.strerror or str(exc), "error"))
            return None
        if _binary(data):
            self.problems.append(Problem(path, None, "not a text file", "error"))
            return None
        return data

    def file(self, path: str) -> None:
        """A file named on the command line (``-``: standard input)."""
        if self.real(path) in self.seen:
            return  # already read as an include of an earlier file
        data = self.read(path)
        if data is None:
            return
        if _is_json(path, data) or _is_yaml(path, data):
            self.yaml(path, data, quiet=False)
            return
        self.nginx(load(path, root=self.root, content=data))

    def folder(self, path: str) -> None:
        """Every nginx.conf with its includes; then the other *.conf files no nginx.conf
        read, as nginx would read them (``load_folder``); the YAML files, and the JSON ones
        that hold Kubernetes objects."""
        mains, confs, yamls, jsons = _walk(path)
        if not (mains or confs or yamls or jsons):
            self.problems.append(Problem(path, None, "no nginx configuration (*.conf) or "
                                         "Kubernetes YAML (*.yaml, *.yml) in this folder",
                                         "error"))
            return
        for main in mains:
            self.file(main)
        contents: dict[str, bytes] = {}
        for conf in confs:
            if self.real(conf) not in self.seen \
                    and (data := self.read(conf, missing_ok=True)) is not None:
                contents[conf] = data
        if contents:
            for config in load_folder(list(contents), root=self.root, contents=contents):
                self.nginx(config)
        for name in yamls + jsons:
            if self.real(name) in self.seen:
                continue
            data = self.read(name, missing_ok=True)
            if data is None:
                continue
            if name.endswith(".json") and not _is_json("", data):
                continue  # some other JSON (package.json): not for lint
            self.yaml(name, data, quiet=True)

    def yaml(self, path: str, data: bytes, *, quiet: bool) -> None:
        """Kubernetes YAML (or JSON: PyYAML reads it, with its lines). ``quiet``: found in
        a folder, where a file lint has nothing to read in is no news."""
        self.seen.add(self.real(path))
        self.result.files.append(path)
        if len(data) > _MAX_YAML_BYTES:
            self.problems.append(Problem(path, None, f"larger than {_MAX_YAML_BYTES} bytes",
                                         "error"))
            return
        text = data.decode("utf-8", errors="replace")
        if _is_json(path, data):
            text = text.replace("\t", " ")  # JSON's whitespace; PyYAML's indentation has none
        found: list[Problem] = []
        ingress.read_yaml(path, text, self.inputs, found)
        self.problems += [p for p in found if not (quiet and p.severity == "note"
                                                   and p.message.startswith(_NOTHING))]

    def nginx(self, config: Config) -> None:
        self.problems += config.problems
        for file in config.files:
            self.seen.add(self.real(file, config.root_dir))
        for file in config.files:
            if file not in self.listed:
                self.listed.add(file)
                self.result.files.append(file)
        if self.prefix:
            prefixes = [self.prefix]
        else:
            here = os.getcwd() if config.path == "-" else \
                os.path.dirname(os.path.abspath(config.path))
            prefixes = [here, os.path.dirname(here)]
        self.result.findings += check(config, prefixes=prefixes, max_tries=self.max_tries)


def lint(paths: list[str], *, prefix: str | None = None, max_tries: int = DEFAULT_MAX_TRIES,
         ingress_version: tuple[int, ...] | None = None,
         annotations_prefix: str = ingress.ANNOTATION_PREFIX,
         root: str | None = None) -> LintResult:
    """Lint nginx configuration files and ingress-nginx YAML (or JSON).

    ``paths``: files (``-`` for standard input) and folders. ``prefix``: nginx's ``-p``,
    where relative Lua paths are looked up (default: the main file's folder and its
    parent). ``max_tries``: tries per request from which a bounded retry is still
    reported. ``ingress_version``: the controller's, when no Deployment or Helm values
    given say it. ``root``: where the configuration's absolute paths (``include
    /etc/nginx/conf.d/*.conf;``) are found; default: the part of each file's path before
    ``/etc/nginx/`` (a repository's copy of a server's tree), else ``/``.
    """
    run = _Run(prefix, max_tries, root)
    for path in paths:
        if path != "-" and os.path.isdir(path):
            run.folder(path)
        else:
            run.file(path)
    result = run.result
    result.findings += ingress.check(run.inputs, version=ingress_version,
                                     prefix=annotations_prefix)
    result.findings += [_problem(p) for p in dict.fromkeys(run.problems)]
    # one finding per (code, place, message): the candidates of a variable may repeat one
    result.findings = list({f.key(): f for f in result.findings}.values())
    result.findings.sort(key=lambda f: (f.location.file, f.location.line or 0, -f.severity))
    return result
