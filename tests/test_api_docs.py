"""``/docs`` and ``/redoc`` work without internet access: they refer to nothing but this
service, whose assets are served, also with an API token (the pages, their assets and the
schema are open; the Authorize button takes the token). Headless Chromium, every other
host unreachable, renders both."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_harness import Run, clean_env, running
from chromium_harness import headless, needs_chromium
from service_harness import new_engine

from retrywatch.serve.api import create_app

TOKEN = "d0cs-t0ken"
CONTENT_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",),
                 ".png": ("image/png",)}
REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]*)"|\burl: '([^']*)'""")


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["open", "token"])
def client(request: pytest.FixtureRequest) -> Iterator[Any]:
    from fastapi.testclient import TestClient  # late: it warns at import (see test_api.py)

    with TestClient(create_app(new_engine(), api_token=request.param)) as c:
        yield c


def references(html: str) -> list[str]:
    """Every URL the page loads: src, href, Swagger UI's ``url:``, ReDoc's spec-url."""
    return [a or b for a, b in REFERENCE.findall(html)]


@pytest.mark.parametrize(("page", "wanted"), [
    ("/docs", {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css",
               "/docs/assets/favicon.png", "/openapi.json"}),
    ("/redoc", {"/docs/assets/redoc.standalone.js", "/docs/assets/favicon.png",
                "/openapi.json"})])
def test_the_page_refers_only_to_this_service(client: Any, page: str,
                                              wanted: set[str]) -> None:
    r = client.get(page)  # no token needed
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert not re.search(r"(?i)\b(?:https?:)?//", r.text), "a URL of another host"
    assert set(references(r.text)) == wanted
    for url in wanted:
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = Path(url).suffix or ".json"
        allowed = CONTENT_TYPES.get(suffix, ("application/json",))
        assert asset.headers["content-type"].split(";")[0] in allowed, url
        assert len(asset.content) > 1000, url


def test_swagger_ui_asks_no_validator_elsewhere(client: Any) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_only_the_documentation_and_the_page_are_open_with_a_token() -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(new_engine(), api_token=TOKEN)) as c:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css", "/",
                     "/ui/live.js"):
            assert c.get(path).status_code == 200, path
        for path in ("/api/v1/alerts", "/docs/assets/../../api/v1/alerts", "/ui/../metrics",
                     "/ui/x.js", "/docsx", "/openapi.json/x", "/index.html"):
            assert c.get(path).status_code == 401, path
        schema = c.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


# -- rendered, offline ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("docs")
    log = work / "error.log"
    log.write_bytes(b"")
    with running(["--log", str(log), "--from", "beginning", "--timezone", "UTC"], work,
                 env=clean_env(RETRYWATCH_API_TOKEN=TOKEN), token=TOKEN) as service:
        yield service


def rendered(url: str, tmp_path: Path) -> str:
    """The page's DOM once its scripts ran, every host but 127.0.0.1 unreachable."""
    return headless(["--virtual-time-budget=15000", "--dump-dom", url], tmp_path,
                    timeout=90, doing="render the page")


@needs_chromium
def test_swagger_ui_renders_offline_with_the_authorize_button(guarded: Run,
                                                             tmp_path: Path) -> None:
    dom = rendered(f"{guarded.url}/docs", tmp_path)
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert paths == {"/healthz", "/readyz", "/metrics", "/api/v1/alerts",
                     "/api/v1/alerts/stream", "/api/v1/alerts/{alert_id}",
                     "/api/v1/connections", "/api/v1/sources", "/api/v1/disk",
                     "/api/v1/upstreams"}
    assert 'class="btn authorize' in dom


@needs_chromium
def test_redoc_renders_offline(guarded: Run, tmp_path: Path) -> None:
    dom = rendered(f"{guarded.url}/redoc", tmp_path)
    assert set(re.findall(r'"operation/(\w+)"', dom)) >= {"listAlerts", "streamAlerts",
                                                          "getAlert", "listSources"}
