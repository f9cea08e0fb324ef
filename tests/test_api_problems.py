"""The API's contract (serve/problems.py and the schema of serve/api.py): every operation
tagged and named, every error a problem document (RFC 9457) declared in the schema, and
the errors really answered so, the ones made outside the routes too."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from service_harness import new_engine

from retrywatch.detect.engine import Engine
from retrywatch.serve.api import TAGS, create_app
from retrywatch.serve.http import BoundedServer, bounded_server
from retrywatch.serve.problems import Problem

TOKEN = "t0ken"
OPERATION_IDS = {
    ("/healthz", "get"): "getLiveness", ("/readyz", "get"): "getReadiness",
    ("/metrics", "get"): "getMetrics", ("/api/v1/alerts", "get"): "listAlerts",
    ("/api/v1/alerts/stream", "get"): "streamAlerts",
    ("/api/v1/alerts/{alert_id}", "get"): "getAlert",
    ("/api/v1/connections", "get"): "listConnections",
    ("/api/v1/sources", "get"): "listSources", ("/api/v1/disk", "get"): "getDisk",
    ("/api/v1/upstreams", "get"): "getUpstreams"}
PROBLEM = {"$ref": "#/components/schemas/Problem"}


def client(app: FastAPI, **kwargs: Any) -> Any:
    from fastapi.testclient import TestClient  # late: it warns at import (see test_api.py)

    return TestClient(app, **kwargs)


@pytest.fixture(params=[None, TOKEN], ids=["open", "token"])
def schema(request: pytest.FixtureRequest) -> dict[str, Any]:
    with client(create_app(new_engine(), api_token=request.param)) as c:
        found: dict[str, Any] = c.get("/openapi.json").json()
        return found


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_every_operation_is_tagged_and_named(schema: dict[str, Any]) -> None:
    names = {t["name"] for t in TAGS}
    assert [t["name"] for t in schema["tags"]] == [t["name"] for t in TAGS]
    found = {}
    for path, method, op in operations(schema):
        assert op["tags"] and set(op["tags"]) <= names, (path, op.get("tags"))
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)+", op["operationId"]), op["operationId"]
        found[path, method] = op["operationId"]
    assert found == OPERATION_IDS  # stable: clients generated from the schema use them


def test_every_error_is_a_problem_document(schema: dict[str, Any]) -> None:
    """Each 4xx and 5xx declared is application/problem+json with the Problem schema, but
    the probes' 503: their report, as their 200 (what they answer is not an error of the
    request)."""
    for path, _, op in operations(schema):
        errors = {int(code): r for code, r in op["responses"].items() if int(code) >= 400}
        assert 500 in errors, path
        for code, response in errors.items():
            if path in ("/healthz", "/readyz") and code == 503:
                assert response["content"] == {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Health"}}}
                continue
            assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}, (
                path, code)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    problem = schema["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == {"type", "title", "status", "detail", "instance",
                                          "errors"}


def test_the_token_and_its_401_are_declared(schema: dict[str, Any]) -> None:
    guarded = "bearer" in schema["components"].get("securitySchemes", {})
    for path, _, op in operations(schema):
        probe = path in ("/healthz", "/readyz")
        assert ("401" in op["responses"]) is (guarded and not probe), path
        if guarded and probe:
            assert op["security"] == []


def test_the_stream_declares_its_cap_and_resume(schema: dict[str, Any]) -> None:
    op = schema["paths"]["/api/v1/alerts/stream"]["get"]
    assert "Retry-After" in op["responses"]["503"]["headers"]
    assert {(p["in"], p["name"]) for p in op["parameters"]} == {
        ("header", "Last-Event-ID"), ("query", "last_event_id")}
    assert set(op["responses"]["200"]["content"]) == {"text/event-stream"}


# -- real errors, checked against the schema -------------------------------------------
@pytest.fixture(scope="module")
def engine() -> Engine:
    return new_engine()


def check(schema: dict[str, Any], response: Any, status: int, instance: str) -> dict[str, Any]:
    """The response is a problem of ``status`` for ``instance``, valid as declared."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    Draft202012Validator({**PROBLEM, "components": schema["components"]}).validate(body)
    assert (body["type"], body["status"], body["instance"]) == ("about:blank", status, instance)
    assert body["title"] and body["detail"]
    return body


@pytest.mark.parametrize("path", ["/api/v1/alerts/0123456789abcdef", "/no/such/path"])
def test_404(engine: Engine, path: str) -> None:
    with client(create_app(engine)) as c:
        body = check(c.get("/openapi.json").json(), c.get(path), 404, path)
    assert body["title"] == "Not Found"


def test_422_lists_each_parameter(engine: Engine) -> None:
    with client(create_app(engine)) as c:
        schema = c.get("/openapi.json").json()
        r = c.get("/api/v1/alerts", params={"limit": 0, "state": "open", "offset": 2})
        body = check(schema, r, 422, "/api/v1/alerts")
        assert [(e["loc"], e["type"]) for e in body["errors"]] == [
            (["query", "state"], "literal_error"), (["query", "limit"], "greater_than_equal")]
        assert body["detail"].startswith("state: ")
        assert "limit: " in body["detail"]
        r = c.get("/api/v1/connections", params={"limit": "x"})
        assert check(schema, r, 422, "/api/v1/connections")["errors"][0]["loc"] == [
            "query", "limit"]


def test_401_without_the_token(engine: Engine) -> None:
    with client(create_app(engine, api_token=TOKEN)) as c:
        schema = c.get("/openapi.json").json()  # open: the documentation reads it
        r = c.get("/api/v1/alerts")
        check(schema, r, 401, "/api/v1/alerts")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in r.text


def test_503_at_the_stream_cap(engine: Engine) -> None:
    with client(create_app(engine, max_stream_clients=0)) as c:
        schema = c.get("/openapi.json").json()
        r = c.get("/api/v1/alerts/stream")
        body = check(schema, r, 503, "/api/v1/alerts/stream")
        assert r.headers["retry-after"] == "5"
        assert "max_stream_clients" in body["detail"]


def test_500_on_a_bug(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    app = create_app(engine)
    monkeypatch.setattr(engine, "source_stats", broken)
    with client(app, raise_server_exceptions=False) as c:
        schema = c.get("/openapi.json").json()
        body = check(schema, c.get("/api/v1/sources"), 500, "/api/v1/sources")
    assert "a bug" not in body["detail"]  # the log has it, not the client


def test_405_keeps_allow(engine: Engine) -> None:
    with client(create_app(engine)) as c:
        r = c.post("/api/v1/alerts")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET"
        assert r.headers["content-type"] == "application/problem+json"


# -- the server's own answers (serve/http.py) ---------------------------------------------
@pytest.fixture
def bounded() -> Iterator[BoundedServer]:
    server = bounded_server(create_app(new_engine()), "127.0.0.1", 0, max_connections=8,
                            header_timeout=10)
    thread = threading.Thread(target=server.run, name="bounded", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{server.port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.02)
        yield server
    finally:
        server.should_exit = True
        thread.join(10)
        server.close()


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of what the server answers ``request`` (then closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *fields = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return int(status.split()[1]), headers, body


@pytest.mark.parametrize("request_", [b"NOT HTTP AT ALL\r\n\r\n",
                                      b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"],
                         ids=["malformed", "head-too-long"])
def test_400_from_the_server_is_a_problem(bounded: BoundedServer, request_: bytes) -> None:
    status, headers, body = raw(bounded.port, request_)
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    problem = Problem.model_validate_json(body)
    assert (problem.status, problem.title, problem.instance) == (400, "Bad Request", None)


def test_503_past_the_concurrency_backstop_is_a_problem() -> None:
    from fastapi.testclient import TestClient

    from retrywatch.serve.http import _backstop

    busy: set[Any] = {object(), object()}
    app = _backstop(create_app(new_engine()), busy, set(), 2)
    with TestClient(app) as c:
        r = c.get("/healthz")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        assert Problem.model_validate_json(r.content).instance == "/healthz"
        busy.pop()
        assert c.get("/healthz").status_code == 200
