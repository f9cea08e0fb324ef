"""The pages of docs/lint/ against a real nginx: every example configuration on them is
checked by nginx itself, linted, and, where nginx here can run it, run.

The tests are parametrized over the pages found in docs/lint/, so a new page is tested as
soon as it exists. The page conventions are in docs/lint/README.md.

- ``nginx bad`` / ``nginx fixed`` (rule pages): ``nginx -t`` accepts them (Debian's nginx
  1.22.1 with its ndk, http-lua and stream modules). ``retrywatch lint`` gives the page's
  code for the bad one, at the page's severity, and nothing at warning or above for the
  fixed one. Through the CLI the exit status is 1 for the bad one (with ``--fail-on
  warning``; with the default ``--fail-on error`` for the error rules) and 0 for the fixed
  one.
- HTTP rule pages: the bad configuration runs in a real nginx. Its upstream ports are closed
  loopback ports held by the test, and its listen port is a free one. One request (the
  client gives up after 1 s) storms, and ``retrywatch replay`` of the error log raises an
  alert for that request's connection. The alert carries the page's diagnosis code when the
  page's code is a diagnosis, and a ``docs`` page that exists in any case. The fixed
  configuration answers the same request with a 502 after exactly as many failures as its
  bound, and raises no alert.
- ``nginx live`` (diagnosis pages): ``nginx -t``, then a real run that raises the page's
  diagnosis. Each page has its own way of driving its run (``LIVE_DRIVERS``).
- ``yaml bad`` / ``yaml fixed`` (ingress-nginx): lint gives the code / nothing.
- A rendered ingress-nginx-like nginx.conf (the controller template's lines, with a
  stand-in for its Lua balancer) storms in a real nginx and is flagged by lint with
  ``proxy_next_upstream_tries 0``, and is bounded and clean with 3.

What cannot run here is checked otherwise (its storm tests are not generated; nothing is
skipped):

- stream_retry_loop: Debian packages no stream-lua-nginx-module, so a stream
  ``balancer_by_lua_block`` cannot run. ``nginx -t`` rejects it (the http Lua module knows
  the directive only for http upstreams: ``"balancer_by_lua_block" directive is not allowed
  here``). The test asserts that message, and checks that the rest of the configuration
  passes ``nginx -t`` without the Lua directives. The page is also linted. The storm itself
  is not run.
- no_live_retry_loop: ``no_live`` is a proposal (nginx/nginx PR #1757), in no released
  nginx. nginx 1.22 rejects it with ``invalid value "no_live"``. The test asserts that, and
  checks that both examples pass ``nginx -t`` with the ``no_live`` token removed. The page
  is lint-only.

Safety: every address in an example is 127.0.0.1 (checked first, see
``test_examples_stay_on_loopback``). Before a run, ports 9000-9099 become closed ports
held by the test, and 8080 becomes a free port. Every run has a count or time bound: one
request, a client that gives up after at most 1.5 s, Lua caps in the examples whose storm
the client cannot stop, and an nginx stopped at the end (SIGQUIT, then SIGKILL of its
group).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from nginx_harness import (
    NGINX_MODULES,
    closed_port,
    free_port,
    full_backlog_port,
    http_temp_paths,
    nginx_binary,
    running_nginx,
    wait_quiet,
)

from retrywatch.detect.core import DetectorConfig
from retrywatch.detect.remedies import fix
from retrywatch.forensics.replay import replay
from retrywatch.lint import RULES, LintResult, Severity, lint

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "lint"
RETRYWATCH = [sys.executable, "-m", "retrywatch"]
UTC = ZoneInfo("UTC")

#: The codes the live alerts' diagnosis gives (retrywatch/detect/diagnosis.py).
DIAGNOSIS_CODES = frozenset({"http_retry_loop", "stream_retry_loop", "synchronous_loop",
                             "keepalive_failing_requests", "slow_timeout_loop", "retry_loop"})
#: The severity of the finding a rule page's bad example must give (default: error).
BAD_SEVERITY = {"unbounded_next_upstream": Severity.WARNING}

CLIENT_TIMEOUT = 1.0  # seconds: a storm runs until the client gives up
QUIET_TIMEOUT = 10.0  # seconds for the error log to stop growing after the client left
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
FAILED = re.compile(
    rb"^\S+ \S+ \[(?:error|crit)\] (\d+)#\d+: \*(\d+) "
    rb"(?:connect\(\) (?:to \S+ )?failed|upstream timed out \(110: [^)]*\) while connecting"
    rb"|no live upstreams)", re.M)


# -- the pages ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    code: str
    path: Path
    text: str
    blocks: tuple[tuple[str, str], ...]  # (info string, body) of each fenced block

    def all(self, info: str) -> list[str]:
        return [body for kind, body in self.blocks if kind == info]

    def one(self, info: str) -> str:
        found = self.all(info)
        assert len(found) == 1, f"{self.path.name}: {len(found)} blocks `{info}`, want 1"
        return found[0]


def read_pages() -> list[Page]:
    pages = []
    for path in sorted(DOCS.glob("*.md")):
        if path.name == "README.md":
            continue
        text = path.read_text(encoding="utf-8")
        blocks = tuple((m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text))
        pages.append(Page(path.stem, path, text, blocks))
    return pages


PAGES = read_pages()
RULE_PAGES = [p for p in PAGES if p.all("nginx bad") or p.all("nginx fixed")]
LIVE_PAGES = [p for p in PAGES if p.all("nginx live")]
YAML_CASES = [pytest.param(p, kind, i, body, id=f"{p.code}-{kind}{i + 1}")
              for p in PAGES for kind in ("bad", "fixed")
              for i, body in enumerate(p.all(f"yaml {kind}"))]


def ids(value: object) -> str:
    return value.code if isinstance(value, Page) else str(value)


# -- what nginx here cannot run ---------------------------------------------------------------

@dataclass(frozen=True)
class Rejection:
    """Why nginx here rejects an example: the message ``nginx -t`` must give, and the example
    without what it rejects (which it must accept)."""

    why: str
    message: re.Pattern[str]
    without: str


def _drop_directive(conf: str, name: str) -> str:
    """``conf`` without every ``name …;`` and ``name … { … }`` (braces counted)."""
    out, at = [], 0
    for m in re.finditer(rf"^[ \t]*{re.escape(name)}\b", conf, re.M):
        if m.start() < at:
            continue
        out.append(conf[at:m.start()])
        i, depth = m.end(), 0
        while i < len(conf):
            ch = conf[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    i += 1
                    break
            elif ch == ";" and depth == 0:
                i += 1
                break
            i += 1
        at = i
    return "".join(out) + conf[at:]


def _stream_block(conf: str) -> str | None:
    m = re.search(r"^stream\s*\{", conf, re.M)
    if m is None:
        return None
    depth = 0
    for i in range(m.end() - 1, len(conf)):
        depth += {"{": 1, "}": -1}.get(conf[i], 0)
        if depth == 0:
            return conf[m.start():i + 1]
    return conf[m.start():]


def rejection(conf: str) -> Rejection | None:
    """None when Debian's nginx 1.22 with its ndk/http-lua/stream modules runs ``conf``."""
    if re.search(r"\bno_live\b", conf):
        return Rejection(
            "no_live is a proposal (nginx/nginx PR #1757), not in any released nginx: "
            "nginx 1.22 rejects it, so this example cannot run here (lint-only)",
            re.compile(r'invalid value "no_live"'),
            re.sub(r"[ \t]+no_live\b", "", conf))
    stream = _stream_block(conf)
    lua = re.findall(r"^\s*(\w*lua\w*)\b", stream or "", re.M)
    if stream is not None and lua:
        without = conf.replace(stream, _drop_all(stream, lua))
        return Rejection(
            "Debian packages no stream-lua-nginx-module: a stream Lua balancer cannot run "
            f"here ({lua[0]}); nginx -t, the rest of the configuration and lint are checked",
            re.compile(rf'unknown directive "{lua[0]}"|"{lua[0]}" directive is not allowed '
                       "here"),
            without)
    return None


def _drop_all(text: str, names: list[str]) -> str:
    for name in dict.fromkeys(names):
        text = _drop_directive(text, name)
    return text


# -- nginx ------------------------------------------------------------------------------------

def modules() -> list[Path]:
    paths = [NGINX_MODULES / m for m in ("ndk_http_module.so", "ngx_http_lua_module.so",
                                         "ngx_stream_module.so")]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"nginx modules missing: {missing} (Debian: libnginx-mod-http-ndk, "
                    "libnginx-mod-http-lua, libnginx-mod-stream)")
    return paths


def with_http_extras(conf: str, prefix: Path) -> str:
    """Temp paths in ``prefix`` and no access log, right after ``http {``."""
    extra = http_temp_paths(prefix) + "access_log off;\n"
    return re.sub(r"^http\s*\{", lambda m: f"{m.group(0)}\n{extra}", conf, count=1, flags=re.M)


def nginx_t(conf: str, prefix: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` of an example, with the modules loaded and a pid in ``prefix``."""
    binary = nginx_binary()
    loads = "".join(f"load_module {m};\n" for m in modules())
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(f"{loads}pid {prefix}/nginx.pid;\n{with_http_extras(conf, prefix)}")
    return subprocess.run([binary, "-p", f"{prefix}/", "-c", str(path),
                           "-e", str(prefix / "err.log"), "-t"],
                          capture_output=True, text=True, timeout=30, check=False)


def localize(conf: str, stack: contextlib.ExitStack, listen: int,
             ports: dict[int, int] | None = None) -> str:
    """The example with its upstream ports 9000-9099 made closed ports held by ``stack``
    (or the ports given), including inside Lua code, and 127.0.0.1:8080 made ``listen``."""
    taken = dict(ports or {})

    def real(port: int) -> int:
        assert 9000 <= port <= 9099, port
        if port not in taken:
            taken[port] = stack.enter_context(closed_port())
        return taken[port]

    text = re.sub(r"127\.0\.0\.1:(\d+)",
                  lambda m: m.group(0) if m.group(1) in ("8080", "8081")
                  else f"127.0.0.1:{real(int(m.group(1)))}", conf)
    text = re.sub(r'(set_current_peer\(\s*"127\.0\.0\.1"\s*,\s*)(\d+)',
                  lambda m: f"{m.group(1)}{real(int(m.group(2)))}", text)
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{listen}")
    assert set(IPV4.findall(text)) <= {"127.0.0.1"}, "an address that is not loopback"
    assert not re.search(r"127\.0\.0\.1:(?:90\d\d|8080)\b|\b90\d\d\)", text), text
    return text


def request(port: int, uris: list[str], timeout: float = CLIENT_TIMEOUT) -> bytes:
    """Send the requests on one connection (the last one closes it), read the answers for
    at most ``timeout`` seconds, then go away."""
    last = len(uris) - 1
    data = b"".join(f"GET {uri} HTTP/1.1\r\nHost: example.test\r\nConnection: "
                    f"{'close' if i == last else 'keep-alive'}\r\n\r\n".encode()
                    for i, uri in enumerate(uris))
    reply = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                c.settimeout(left)
                chunk = c.recv(65536)
                if not chunk:
                    break
                reply += chunk
    return reply




@dataclass
class Run:
    log: Path
    reply: bytes
    failures: Counter[tuple[int, int]]  # (worker pid, connection id) -> failure lines
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def connection(self) -> tuple[int, int]:
        """The one connection whose tries failed."""
        assert len(self.failures) == 1, f"want one failing connection: {self.failures}"
        [key] = self.failures
        return key

    def alert(self) -> dict[str, Any]:
        pid, cid = self.connection()
        found = [a for a in self.alerts if (a["pid"], a["cid"]) == (pid, cid)]
        assert len(found) == 1, (f"no alert for *{cid} ({self.failures[pid, cid]} failures); "
                                 f"alerts: {self.alerts}")
        assert {(a["pid"], a["cid"]) for a in self.alerts} == {(pid, cid)}
        return found[0]


def run_in_nginx(tmp_path: Path, conf: str, uris: list[str], *,
                 ports: dict[int, int] | None = None,
                 timeout: float = CLIENT_TIMEOUT) -> Run:
    """Run ``conf`` (an example) in a real nginx, send ``uris`` on one connection, wait for
    the log to go quiet, stop nginx, and replay the error log."""
    prefix = tmp_path / "nginx"
    log = prefix / "logs" / "run.error.log"
    with contextlib.ExitStack() as stack:
        listen = free_port()
        text = with_http_extras(localize(conf, stack, listen, ports), prefix)
        text = f"error_log {{prefix}}/logs/run.error.log error;\n{text}"
        with running_nginx(prefix, text, ports=[listen], modules=["ndk_http", "http_lua"]):
            reply = request(listen, uris, timeout)
            wait_quiet(log, QUIET_TIMEOUT)
    data = log.read_bytes()
    failures = Counter((int(p), int(c)) for p, c in FAILED.findall(data))
    result = replay([str(log)], tz=UTC, config=DetectorConfig(), threads=1)
    return Run(log, reply, failures, [a.to_dict() for a in result.alerts])


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def shown(result: LintResult) -> str:
    return "\n".join(f"{f.severity.label}[{f.code}] {f.location.file}:{f.location.line} "
                     f"{f.message}" for f in result.findings) or "(no findings)"


def section(page: Page, title: str) -> str:
    """The text of the page's ``## title`` section."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", page.text, re.M | re.S)
    assert m is not None, f"{page.path.name} has no section {title!r}"
    return m.group(1)


def has_lua_balancer(conf: str) -> bool:
    return re.search(r"\bbalancer_by_lua", conf) is not None


def servers(conf: str) -> int:
    return len(re.findall(r"^\s*server\s+(?:127\.0\.0\.1:|unix:)", conf, re.M))


# -- the pages themselves ---------------------------------------------------------------------

def test_every_code_has_its_page() -> None:
    codes = set(RULES) | DIAGNOSIS_CODES
    assert codes <= {p.code for p in PAGES}, f"pages missing in {DOCS}"
    readme = (DOCS / "README.md").read_text(encoding="utf-8")
    for code in codes:
        assert f"]({code}.md)" in readme, f"README.md does not link {code}.md"
    for code in set(RULES) - {"lint_input"}:
        page = next(p for p in PAGES if p.code == code)
        page.one("nginx bad")
        page.one("nginx fixed")
        assert len(page.all("yaml bad")) == len(page.all("yaml fixed")), page.path


@pytest.mark.parametrize("page", [p for p in PAGES if p.code in DIAGNOSIS_CODES | set(RULES)
                                  and p.code != "lint_input"], ids=ids)
def test_page_quotes_the_fix_text(page: Page) -> None:
    """Lint and the live alerts say the fix in the same words (remedies.py): the page too."""
    flat = " ".join(re.sub(r"^\s*>\s?", "", page.text, flags=re.M).split())
    assert " ".join(fix(page.code).split()) in flat


@pytest.mark.parametrize("page", [p for p in PAGES if any(k.startswith("nginx")
                                                          for k, _ in p.blocks)], ids=ids)
def test_examples_stay_on_loopback(page: Page) -> None:
    """Every address is 127.0.0.1: listen on 8080 (stream 8081), upstreams on 9000-9099."""
    for kind, body in page.blocks:
        if not kind.startswith("nginx"):
            continue
        assert set(IPV4.findall(body)) <= {"127.0.0.1"}, (kind, IPV4.findall(body))
        listens = set(re.findall(r"^\s*listen\s+([^\s;]+)", body, re.M))
        assert listens <= {"127.0.0.1:8080", "127.0.0.1:8081"}, (kind, listens)
        for port in re.findall(r"127\.0\.0\.1:(\d+)", body):
            assert port in ("8080", "8081") or 9000 <= int(port) <= 9099, (kind, port)
        for target in re.findall(r"set_current_peer\(([^)]*)\)", body):
            assert (re.fullmatch(r'\s*"127\.0\.0\.1"\s*,\s*90\d\d\s*', target)
                    or (kind == "nginx live" and re.fullmatch(r'\s*"unix:/[^"]+"\s*', target))
                    ), (kind, target)
        if kind in ("nginx bad", "nginx fixed", "nginx live"):
            assert re.search(r"^events\s*\{", body, re.M), f"{kind}: not a whole nginx.conf"
            for directive in ("pid", "error_log", r"\w+_temp_path"):
                assert not re.search(rf"^\s*{directive}\s", body, re.M), (kind, directive)


# -- nginx -t ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("page", "which"), [
    pytest.param(p, w, id=f"{p.code}-{w}") for p in RULE_PAGES for w in ("bad", "fixed")
] + [pytest.param(p, "live", id=f"{p.code}-live") for p in LIVE_PAGES])
def test_nginx_accepts_the_example(page: Page, which: str, tmp_path: Path) -> None:
    conf = page.one(f"nginx {which}")
    rejected = rejection(conf)
    done = nginx_t(conf, tmp_path / "t")
    if rejected is None:
        assert done.returncode == 0, done.stderr
        assert "test is successful" in done.stderr
        return
    # Documented on the page: nginx here cannot take it. Check that it fails for that
    # reason only.
    assert done.returncode != 0, f"{page.code}: nginx accepted it; update rejection()"
    assert rejected.message.search(done.stderr), done.stderr
    rest = nginx_t(rejected.without, tmp_path / "without")
    assert rest.returncode == 0, f"{rejected.why}\n{rejected.without}\n{rest.stderr}"


# -- lint ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", RULE_PAGES, ids=ids)
def test_lint_finds_the_bad_example_only(page: Page, tmp_path: Path) -> None:
    bad = lint([str(write(tmp_path / "bad" / "nginx.conf", page.one("nginx bad")))])
    assert not bad.input_errors, shown(bad)
    want = BAD_SEVERITY.get(page.code, Severity.ERROR)
    assert any(f.code == page.code and f.severity is want for f in bad.findings), shown(bad)
    assert {f.code for f in bad.at_least(Severity.WARNING)} == {page.code}, shown(bad)

    fixed = lint([str(write(tmp_path / "fixed" / "nginx.conf", page.one("nginx fixed")))])
    assert not fixed.input_errors, shown(fixed)
    assert fixed.at_least(Severity.WARNING) == [], shown(fixed)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RETRYWATCH, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("page", RULE_PAGES, ids=ids)
def test_lint_cli_exit_status(page: Page, tmp_path: Path) -> None:
    write(tmp_path / "bad.conf", page.one("nginx bad"))
    write(tmp_path / "fixed.conf", page.one("nginx fixed"))
    want = BAD_SEVERITY.get(page.code, Severity.ERROR)

    done = cli("lint", "--format", "json", "bad.conf", cwd=tmp_path)
    assert done.returncode == (1 if want >= Severity.ERROR else 0), done.stderr
    report = json.loads(done.stdout)
    assert page.code in {f["code"] for f in report["findings"]}
    assert all(f["docs"] == f"docs/lint/{f['code']}.md" for f in report["findings"])

    done = cli("lint", "--fail-on", "warning", "bad.conf", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"[{page.code}]" in done.stdout
    done = cli("lint", "--fail-on", "warning", "fixed.conf", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("page", "kind", "index", "body"), YAML_CASES)
def test_lint_ingress_yaml(page: Page, kind: str, index: int, body: str,
                           tmp_path: Path) -> None:
    result = lint([str(write(tmp_path / "ingress-nginx.yaml", body))])
    assert not result.input_errors, shown(result)
    if kind == "fixed":
        assert result.at_least(Severity.WARNING) == [], shown(result)
        return
    want = BAD_SEVERITY.get(page.code, Severity.ERROR)
    assert any(f.code == page.code and f.severity is want for f in result.findings), \
        shown(result)


# -- the examples in a real nginx ---------------------------------------------------------------

def runnable(page: Page) -> bool:
    """Both examples run in this nginx (what does not is asserted rejected for its reason by
    test_nginx_accepts_the_example, and linted: never run, never skipped)."""
    return rejection(page.one("nginx bad")) is None and rejection(page.one("nginx fixed")) is None


RUNNABLE_PAGES = [p for p in RULE_PAGES if runnable(p)]


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=ids)
def test_bad_example_storms_and_is_alerted(page: Page, tmp_path: Path) -> None:
    modules()
    conf = page.one("nginx bad")
    run = run_in_nginx(tmp_path, conf, ["/"])
    pid, cid = run.connection()
    if not has_lua_balancer(conf):
        # tries 0 without a Lua balancer: every peer of the group once, then a 502
        assert run.failures[pid, cid] == servers(conf)
        assert run.reply.startswith(b"HTTP/1.1 502 "), run.reply[:200]
    elif run.failures[pid, cid] > 1000:
        assert run.reply == b"", run.reply[:200]  # no answer: the client gave up
    alert = run.alert()
    assert alert["failures"] == run.failures[pid, cid]
    assert alert["subsystem"] == "http"
    assert alert["request"] == "GET / HTTP/1.1"
    diagnosis = alert["diagnosis"]
    if page.code in DIAGNOSIS_CODES:
        assert diagnosis["code"] == page.code, diagnosis
    assert diagnosis["docs"] == f"docs/lint/{diagnosis['code']}.md"
    assert (ROOT / diagnosis["docs"]).is_file()
    # and the page says which diagnosis a real run gives
    assert f"`{diagnosis['code']}`" in section(page, "What retrywatch says live"), diagnosis


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=ids)
def test_fixed_example_is_bounded_and_quiet(page: Page, tmp_path: Path) -> None:
    modules()
    conf = page.one("nginx fixed")
    tries = re.findall(r"^\s*\w+_next_upstream_tries\s+(\d+)\s*;", conf, re.M)
    assert tries, "a fixed example sets *_next_upstream_tries"
    bound = int(tries[-1]) if has_lua_balancer(conf) else min(int(tries[-1]), servers(conf))
    run = run_in_nginx(tmp_path, conf, ["/"])
    assert run.reply.startswith(b"HTTP/1.1 502 "), run.reply[:200]
    assert run.failures[run.connection()] == bound
    assert run.alerts == []


# -- the diagnosis pages' configurations ----------------------------------------------------------

@contextlib.contextmanager
def workers_folder() -> Iterator[Path]:
    """A folder nginx's workers may enter and read (they run as nobody when the master runs
    as root, and pytest's tmp_path is private to its user)."""
    folder = Path(tempfile.mkdtemp(prefix="retrywatch-lint-"))
    try:
        folder.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def stale_unix_socket() -> Iterator[Path]:
    """A unix socket file that nothing listens on: connect() is refused at once."""
    with workers_folder() as folder:
        path = folder / "stale.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(str(path))
        path.chmod(0o777)
        yield path




@dataclass(frozen=True)
class Driver:
    """How a diagnosis page's ``nginx live`` configuration is run."""

    uris: list[str]
    timeout: float = CLIENT_TIMEOUT
    setup: Callable[[contextlib.ExitStack, str], str] = lambda _stack, conf: conf
    ports: Callable[[contextlib.ExitStack], dict[int, int]] = lambda _stack: {}


def _with_stale_socket(stack: contextlib.ExitStack, conf: str) -> str:
    path = stack.enter_context(stale_unix_socket())
    return re.sub(r"unix:/[^\s\";)]+\.sock", f"unix:{path}", conf)


LIVE_DRIVERS: dict[str, Driver] = {
    # a stale unix socket: connect() fails at once; the example's Lua cap ends it
    "synchronous_loop": Driver(["/"], setup=_with_stale_socket),
    # four requests on one keep-alive connection, each failing 3 times
    "keepalive_failing_requests": Driver(["/r0", "/r1", "/r2", "/r3"]),
    # 127.0.0.1:9001 drops SYNs: one try per proxy_connect_timeout (100 ms)
    "slow_timeout_loop": Driver(["/"], timeout=1.5,
                                ports=lambda stack: {9001: stack.enter_context(
                                    full_backlog_port())}),
    # a URI long enough that nginx cuts the line inside request: (2,048 bytes)
    "retry_loop": Driver(["/?q=" + "a" * 2000]),
}


@pytest.mark.parametrize("page", LIVE_PAGES, ids=ids)
def test_live_example_gives_the_diagnosis(page: Page, tmp_path: Path) -> None:
    assert page.code in LIVE_DRIVERS, f"add a driver for {page.code} to LIVE_DRIVERS"
    driver = LIVE_DRIVERS[page.code]
    modules()
    with contextlib.ExitStack() as stack:
        conf = driver.setup(stack, page.one("nginx live"))
        run = run_in_nginx(tmp_path, conf, driver.uris, ports=driver.ports(stack),
                           timeout=driver.timeout)
    alert = run.alert()
    assert alert["diagnosis"]["code"] == page.code, (alert["diagnosis"], alert["kinds"])
    assert alert["diagnosis"]["docs"] == f"docs/lint/{page.code}.md"
    assert alert["failures"] == run.failures[run.connection()]


# -- an ingress-nginx-like rendered configuration ----------------------------------------------

# Rendered from kubernetes/ingress-nginx rootfs/etc/nginx/template/nginx.tmpl, as quoted in
# the research notes (docs/lint/http_retry_loop.md gives the same provenance):
# - the HTTP upstream: controller-v1.15.1 lines 518-540 (`server 0.0.0.1; # placeholder`,
#   `balancer_by_lua_file /etc/nginx/lua/nginx/ngx_conf_balancer.lua;`, the keepalive
#   lines left out as with upstream-keepalive-connections 0); up to controller-v1.11.8
#   (lines 553-555) `balancer_by_lua_block { balancer.balance() }` instead;
# - the location: controller-v1.15.1 lines 1352-1355 (v1.11.8: 1479-1482), with the
#   defaults `error timeout` and 0 and the tries of the Ingress's annotation.
# The events/http/server/listen lines and proxy_pass (buildProxyPass's output for HTTP)
# are this test's.
RENDERED = """\
events {}

http {
    lua_package_path "%(lua_path)s";

    upstream upstream_balancer {
        ### Attention!!!  (the template's comment block about the kubectl plugin)
        server %(placeholder)s; # placeholder

%(balancer)s
    }

    server {
        listen 127.0.0.1:%(listen)s;

        location / {
            # In case of errors try the next upstream server before returning an error
            proxy_next_upstream                     error timeout;
            proxy_next_upstream_timeout             0;
            proxy_next_upstream_tries               %(tries)d;

            proxy_pass http://upstream_balancer;
        }
    }
}
"""
BALANCER_FILE = "        balancer_by_lua_file %s;"
BALANCER_BLOCK = "        balancer_by_lua_block {\n          balancer.balance()\n        }"

# rootfs/etc/nginx/lua/nginx/ngx_conf_balancer.lua at controller-v1.15.1
NGX_CONF_BALANCER = 'local balancer = require("balancer")\nbalancer.balance()\n'

# A stand-in for rootfs/etc/nginx/lua/balancer.lua (controller-v1.15.1 lines 337-361; the
# same at v1.11.8), which is not installed here: what _M.balance() does to the tries. The
# real one picks the peer of $proxy_upstream_name from the endpoints the controller
# posts; here it is a closed port.
BALANCER_STAND_IN = """\
local ngx_balancer = require("ngx.balancer")

local _M = {}

function _M.balance()
  local peer = "127.0.0.1:%(dead)d"

  ngx_balancer.set_more_tries(1)            -- line 354

  local ok, err = ngx_balancer.set_current_peer(peer)
  if not ok then
    ngx.log(ngx.ERR, "error while setting current upstream peer ", peer, ": ", err)
  end
end

return _M
"""


@pytest.mark.parametrize("tries", [0, 3])
def test_rendered_ingress_nginx_conf(tries: int, tmp_path: Path) -> None:
    # As the controller writes it (never run: 0.0.0.1 is not a loopback address), with the
    # controller's Lua files absent: lint knows what balancer.balance() does.
    controller_lua = "/etc/nginx/lua/?.lua;/etc/nginx/lua/vendor/?.lua;;"
    for name, balancer in (
            ("v1.15", BALANCER_FILE % "/etc/nginx/lua/nginx/ngx_conf_balancer.lua"),
            ("v1.11", BALANCER_BLOCK)):
        path = write(tmp_path / "rendered" / name / "nginx.conf", RENDERED % {
            "lua_path": controller_lua, "placeholder": "0.0.0.1", "balancer": balancer,
            "listen": 80, "tries": tries})
        result = lint([str(path)])
        assert not result.input_errors, shown(result)
        if tries == 0:
            [finding] = result.at_least(Severity.WARNING)
            assert (finding.code, finding.severity) == ("http_retry_loop", Severity.ERROR)
            assert "ingress-nginx's balancer.balance()" in finding.message
            assert finding.location.line == path.read_text().splitlines().index(
                "            proxy_next_upstream_tries               0;") + 1
        else:
            assert result.at_least(Severity.WARNING) == [], shown(result)

    # The same in a real nginx, with the stand-in balancer found through lua_package_path.
    modules()
    with workers_folder() as lua, closed_port() as placeholder, closed_port() as dead:
        write(lua / "balancer.lua", BALANCER_STAND_IN % {"dead": dead})
        entry = write(lua / "nginx" / "ngx_conf_balancer.lua", NGX_CONF_BALANCER)
        (lua / "nginx").chmod(0o755)
        listen = free_port()
        conf = RENDERED % {"lua_path": f"{lua}/?.lua;/usr/share/lua/5.1/?.lua;;",
                           "placeholder": f"127.0.0.1:{placeholder}",
                           "balancer": BALANCER_FILE % entry, "listen": listen,
                           "tries": tries}
        assert set(IPV4.findall(conf)) == {"127.0.0.1"}
        path = write(tmp_path / "run" / "nginx.conf", conf)
        result = lint([str(path)])  # it reads the stand-in now
        if tries == 0:
            [finding] = result.at_least(Severity.WARNING)
            assert finding.code == "http_retry_loop"
            assert "set_more_tries(1) on every try" in finding.message
            assert str(lua / "balancer.lua") in finding.message
        else:
            assert result.at_least(Severity.WARNING) == [], shown(result)

        prefix = tmp_path / "nginx"
        log = prefix / "logs" / "run.error.log"
        text = (f"error_log {log} error;\n"
                + with_http_extras(conf, prefix))
        with running_nginx(prefix, text, ports=[listen], modules=["ndk_http", "http_lua"]):
            reply = request(listen, ["/"])
            wait_quiet(log, QUIET_TIMEOUT)
    failures = Counter(FAILED.findall(log.read_bytes()))
    done = subprocess.run([*RETRYWATCH, "replay", "--timezone", "UTC", "--format", "json",
                           str(log)], capture_output=True, text=True, timeout=60, check=True)
    alerts = json.loads(done.stdout)["alerts"]
    [(pid, cid)] = failures
    if tries == 0:
        assert reply == b"", reply[:200]  # the client gave up
        assert failures[pid, cid] > 1000
        [alert] = alerts
        assert (alert["pid"], alert["cid"]) == (int(pid), int(cid))
        assert alert["diagnosis"]["code"] == "http_retry_loop"
        assert alert["upstreams"] == {f"127.0.0.1:{dead}": failures[pid, cid]}
    else:
        assert reply.startswith(b"HTTP/1.1 502 "), reply[:200]
        assert failures[pid, cid] == tries
        assert alerts == []

