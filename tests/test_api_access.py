"""Access: the API token (every endpoint but the probes, /metrics included, with a real
Prometheus sending it), TLS, the warning when listening beyond loopback without a token,
query strings redacted in the API, metrics and deliveries, and `retrywatch config`
masking every secret. Real ``retrywatch run`` processes on 127.0.0.1; every wait bounded."""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_harness import ROOT, Run, clean_env, poll, running, storm
from click.testing import CliRunner
from nginx_harness import free_port
from webhook_receiver import WebhookReceiver, receiving

from retrywatch.cli import main

TOKEN = "s3cret-t0ken"
SECRET = "hunter2"  # a query value that must not leave the service
PROMETHEUS = shutil.which("prometheus") or "prometheus"  # the name alone when missing: a skip
OPENSSL = shutil.which("openssl")
#: Every endpoint but the probes, the documentation and the live page.
PROTECTED = ["/metrics", "/api/v1/alerts", "/api/v1/alerts/stream",
             "/api/v1/alerts/0000000000000000", "/api/v1/connections", "/api/v1/sources",
             "/api/v1/disk"]
#: Open: the probes carry no token, nor does a browser loading the documentation (its
#: Authorize button takes the token for the requests it makes) or the live page (no data
#: in it: its script asks for the token, and sends it with every request).
OPEN = ["/healthz", "/readyz", "/docs", "/redoc", "/openapi.json",
        "/docs/assets/swagger-ui-bundle.js", "/", "/ui/live.js", "/ui/live.css"]


def follow(tmp_path: Path, data: bytes = b"") -> list[str]:
    log = tmp_path / "error.log"
    log.write_bytes(data)
    return ["--log", str(log), "--from", "beginning", "--timezone", "UTC"]


def status(url: str, path: str, headers: dict[str, str] | None = None,
           verify: Any = True) -> int:
    """The status of a GET (a stream: of its head only)."""
    with httpx.Client(base_url=url, timeout=5.0, verify=verify) as http, \
            http.stream("GET", path, headers=headers or {}) as response:
        return response.status_code


# -- the API token --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A service with an API token (from the environment) that has read a small storm."""
    work = tmp_path_factory.mktemp("guarded")
    data, lines = storm(3)
    with running(follow(work, data), work, env=clean_env(RETRYWATCH_API_TOKEN=TOKEN),
                 token=TOKEN) as service:
        poll("the storm read", lambda: service.lines_read() == lines)
        yield service


@pytest.mark.parametrize("path", PROTECTED)
def test_every_endpoint_but_the_probes_needs_the_token(guarded: Run, path: str) -> None:
    assert status(guarded.url, path) == 401
    assert status(guarded.url, path, {"Authorization": "Bearer wrong"}) == 401
    assert status(guarded.url, path, {"Authorization": f"Basic {TOKEN}"}) == 401
    wanted = 404 if path.endswith("0000000000000000") else 200
    assert status(guarded.url, path, {"Authorization": f"Bearer {TOKEN}"}) == wanted
    assert status(guarded.url, path, {"Authorization": f"bearer {TOKEN}"}) == wanted


def test_401_says_how_to_authenticate(guarded: Run) -> None:
    r = httpx.get(f"{guarded.url}/api/v1/alerts", timeout=5.0)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 401
    assert TOKEN not in r.text


@pytest.mark.parametrize("path", OPEN)
def test_the_probes_and_the_documentation_need_no_token(guarded: Run, path: str) -> None:
    assert status(guarded.url, path) == 200


def test_the_token_opens_the_event_stream(guarded: Run) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=guarded.url, timeout=5.0) as http, \
            http.stream("GET", "/api/v1/alerts/stream", headers=headers) as response:
        assert response.status_code == 200
        assert next(response.iter_lines()) == ": retrywatch alert stream"


@pytest.mark.skipif(shutil.which(PROMETHEUS) is None, reason=f"{PROMETHEUS} missing")
def test_prometheus_scrapes_metrics_with_the_bearer_token(guarded: Run, tmp_path: Path) -> None:
    """The real Prometheus: the job with ``authorization: credentials`` scrapes (up 1, the
    series are there), the same job with the older ``bearer_token`` too, the one without is
    refused (up 0)."""
    target = f"127.0.0.1:{guarded.port}"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: with_token\n    authorization: {{credentials: '{TOKEN}'}}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
        f"  - job_name: bearer_token\n    bearer_token: '{TOKEN}'\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
        "  - job_name: without\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n")
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> dict[str, float] | None:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited: {log.read_text(errors='replace')}")
        try:
            r = httpx.get(f"{url}/api/v1/query", params={"query": "up"}, timeout=5)
        except httpx.TransportError:
            return None
        if r.status_code != 200:
            return None
        got = {s["metric"]["job"]: float(s["value"][1]) for s in r.json()["data"]["result"]}
        return got if len(got) == 3 else None

    try:
        assert poll("three targets scraped", up, 60) == {
            "with_token": 1.0, "bearer_token": 1.0, "without": 0.0}
        r = httpx.get(f"{url}/api/v1/query",
                      params={"query": 'retrywatch_alerts_fired_total{job="with_token"}'},
                      timeout=5)
        assert [float(s["value"][1]) for s in r.json()["data"]["result"]] == [3.0]
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- TLS ----------------------------------------------------------------------------------------
@pytest.mark.skipif(OPENSSL is None, reason="openssl missing")
def test_tls_with_a_certificate_and_key(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([str(OPENSSL), "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    verify = ssl.create_default_context(cafile=str(cert))
    with running([*follow(tmp_path), "--tls-cert", str(cert), "--tls-key", str(key)],
                 tmp_path, verify=verify, env=clean_env(RETRYWATCH_API_TOKEN=TOKEN),
                 token=TOKEN) as service:
        assert service.url.startswith("https://")
        assert service.get("/api/v1/alerts")["total"] == 0
        assert status(service.url, "/api/v1/sources", verify=verify) == 401
        with pytest.raises(httpx.TransportError):  # plain HTTP is not answered
            httpx.get(f"http://127.0.0.1:{service.port}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # nor a client that does not trust it
            httpx.get(f"{service.url}/healthz", timeout=5)


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "retrywatch", "run", *follow(tmp_path), "--tls-cert", str(cert)],
        check=False, capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=30)
    assert done.returncode == 2
    assert "ssl_certfile and ssl_keyfile" in done.stderr


# -- the warning beyond loopback -------------------------------------------------------------
@pytest.mark.parametrize(("listen", "token", "warned"), [
    ("0.0.0.0:8734", None, True),
    ("[::]:8734", None, True),
    ("192.0.2.10:8734", None, True),
    ("nginx-logs.example:8734", None, True),
    ("0.0.0.0:8734", TOKEN, False),
    ("127.0.0.1:8734", None, False),
    ("127.0.0.2:8734", None, False),
    ("[::1]:8734", None, False),
    ("localhost:8734", None, False),
])
def test_a_warning_when_listening_beyond_loopback_without_a_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listen: str, token: str | None,
        warned: bool) -> None:
    """``retrywatch run`` up to the point where it would listen (nothing is bound: the
    server is replaced)."""
    from retrywatch.serve import service as service_module

    served: list[str] = []
    monkeypatch.setattr(service_module, "serve", lambda *args, **kwargs: served.append("x"))
    for name in [k for k in os.environ if k.startswith("RETRYWATCH_")]:
        monkeypatch.delenv(name)
    if token:
        monkeypatch.setenv("RETRYWATCH_API_TOKEN", token)
    try:
        result = CliRunner().invoke(main, ["run", *follow(tmp_path), "--listen", listen])
    finally:
        logging.getLogger("retrywatch").handlers.clear()
    assert result.exit_code == 0, result.output
    assert served == ["x"]
    assert ("without an API token" in result.output) is warned, result.output


# -- query strings ----------------------------------------------------------------------------
def hooks_config(path: Path, url: str) -> Path:
    receivers: list[dict[str, Any]] = [{"name": "json", "url": f"{url}/json", "format": "json"},
                 {"name": "slack", "url": f"{url}/slack", "format": "slack"},
                 {"name": "am", "url": f"{url}/am", "format": "alertmanager"}]
    for r in receivers:
        r.update(group_wait=0.05, backoff_initial=0.02)
    path.write_text(json.dumps({"receivers": receivers}))  # JSON is YAML
    return path


def test_query_strings_are_redacted_in_the_api_metrics_and_deliveries(tmp_path: Path) -> None:
    data, lines = storm(3, query=f"?token={SECRET}&a=1")
    redacted = "GET /cart?token=…&a=… HTTP/1.1"
    with receiving(WebhookReceiver()) as hook:
        config = hooks_config(tmp_path / "config.yaml", hook.url)
        with running([*follow(tmp_path), "--config", str(config)], tmp_path) as service, \
                httpx.Client(base_url=service.url, timeout=10.0) as http, \
                http.stream("GET", "/api/v1/alerts/stream") as response:
            events = response.iter_lines()
            assert next(events) == ": retrywatch alert stream"
            with (tmp_path / "error.log").open("ab") as f:
                f.write(data)
            streamed: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            kind = ""
            for line in events:
                assert time.monotonic() < deadline, "the fired events did not come in time"
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "fired":
                    streamed.append(json.loads(line[6:]))
                    if len(streamed) == 3:
                        break
            poll("the storm read", lambda: service.lines_read() == lines)
            alerts = service.get("/api/v1/alerts")["alerts"]
            assert len(alerts) == 3
            for alert in [*alerts, *streamed]:
                assert alert["request"] == redacted
                assert 'referrer: "https://shop.test/?token=…&a=…"' in alert["sample"]
                assert '/cart?token=…&a=…", host' in alert["sample"]  # the upstream URL
            one = service.get(f"/api/v1/alerts/{alerts[0]['id']}")
            assert one["request"] == redacted
            hook.wait_for("each receiver's message",
                          lambda: {r.path for r in hook.ok} >= {"/json", "/slack",
                                                                 "/am/api/v2/alerts"})
            everything = [json.dumps(alerts), json.dumps(streamed), service.get("/metrics"),
                          json.dumps(service.get("/api/v1/connections")),
                          *(r.body.decode() for r in hook.requests)]
            assert all(SECRET not in text for text in everything)
            bodies = [json.dumps(r.json(), ensure_ascii=False) for r in hook.requests]
            assert any("GET /cart?token=…&a=… HTTP/1.1" in body for body in bodies)  # json


def test_keep_query_strings_shows_them(tmp_path: Path) -> None:
    data, lines = storm(1, query=f"?token={SECRET}&a=1")
    with running([*follow(tmp_path, data), "--keep-query-strings"], tmp_path) as service:
        poll("the storm read", lambda: service.lines_read() == lines)
        (alert,) = service.get("/api/v1/alerts")["alerts"]
        assert alert["request"] == f"GET /cart?token={SECRET}&a=1 HTTP/1.1"
        assert f"?token={SECRET}&a=1" in alert["sample"]


# -- retrywatch config -------------------------------------------------------------------------
def test_config_masks_every_secret(tmp_path: Path) -> None:
    slack = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/XcCcCcCcCcCcCcCcCcCcCcCc"
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"receivers": [
        {"name": "slack", "url": slack, "format": "slack"},
        {"name": "hook", "url": "https://ops:pa55word@hooks.example.com/in/abc123?token=qwerty&x=1",
         "secret": "signing-key", "headers": {"Authorization": "Bearer hdr-secret"}},
        {"name": "am", "url": "https://am-user:am-pass@am.example.com:9093/prefix",
         "format": "alertmanager"},
    ]}))
    done = subprocess.run([sys.executable, "-m", "retrywatch", "config", "--config", str(config)],
                          check=False, capture_output=True, text=True, cwd=ROOT, timeout=30,
                          env=clean_env(RETRYWATCH_API_TOKEN=TOKEN))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for secret in ("T0AAAAAAA", "B0BBBBBBB", "XcCcCc", "ops", "pa55word", "abc123", "qwerty",
                   "signing-key", "hdr-secret", "am-user", "am-pass", TOKEN):
        assert secret not in out, secret
    data = json.loads(out)
    urls = [r["url"] for r in data["receivers"]]
    assert urls == ["https://hooks.slack.com/**********",
                    "https://**********@hooks.example.com/**********?token=**********&x=**********",
                    "https://**********@am.example.com:9093/prefix"]
    assert data["receivers"][1]["headers"] == {"Authorization": "**********"}
    assert data["api_token"] == "**********"


def test_the_schema_documents_the_bearer_token(guarded: Run) -> None:
    schema = guarded.get("/openapi.json")
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["security"] == [{"bearer": []}]
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/api/v1/alerts"]["get"]  # the global one
