"""The live page at ``GET /`` (retrywatch/serve/page.py, retrywatch/serve/live/).

Its files as served: a strict Content-Security-Policy, nothing from another origin, data
only ever set as text. Then the page itself in headless Chromium, driven over the DevTools
protocol, against a real ``retrywatch run`` with an API token: it asks for the token, goes
live, and when the real storm sample is appended to the followed log the storm's alert
appears with its cause and fix, without a reload (a mark set in the page survives) and
without a single CSP violation; screenshots at desktop and phone widths, where nothing
overflows sideways.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from bounds_harness import Run, poll, running
from chromium_harness import Page, devtools, needs_chromium
from service_harness import STORM_FIRING_CID, new_engine, storm_bytes

from retrywatch import __version__
from retrywatch.serve.api import create_app
from retrywatch.serve.page import CSP

LIVE = Path(__file__).parent.parent / "retrywatch" / "serve" / "live"
TOKEN = "page-t0ken"
HTTPX_WARNING = ("ignore:Using `httpx` with `starlette.testclient` is deprecated"
                 ":starlette.exceptions.StarletteDeprecationWarning")


@pytest.fixture(scope="module")
def client() -> Any:
    from fastapi.testclient import TestClient  # late: it warns at import

    with TestClient(create_app(new_engine(), api_token=TOKEN)) as c:
        yield c


@pytest.mark.filterwarnings(HTTPX_WARNING)
@pytest.mark.parametrize(("path", "kind"), [("/", "text/html"), ("/ui/live.js", "text/javascript"),
                                            ("/ui/live.css", "text/css")])
def test_each_file_is_served_open_under_the_policy(client: Any, path: str, kind: str) -> None:
    r = client.get(path)  # no token: the files hold no data
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(kind)
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_the_policy_allows_this_origin_only_and_nothing_inline() -> None:
    rules = dict(rule.strip().split(" ", 1) for rule in CSP.split(";"))
    assert rules["default-src"] == "'none'"
    for kind in ("script-src", "style-src", "connect-src", "img-src"):
        assert rules[kind] == "'self'", kind
    assert rules["frame-ancestors"] == rules["base-uri"] == rules["form-action"] == "'none'"
    assert "unsafe" not in CSP


@pytest.mark.filterwarnings(HTTPX_WARNING)
def test_the_page_names_its_version_and_loads_only_its_own_files(client: Any) -> None:
    html = client.get("/").text
    assert f'<span class="version">{__version__}</span>' in html
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == [
        "/ui/live.css", "/ui/live.js", "/docs"]
    assert "<style" not in html and " style=" not in html  # (the policy would block them)
    assert not re.search(r"<script>[^<]", html)  # no inline script


@pytest.mark.parametrize("name", ["index.html", "live.js", "live.css"])
def test_nothing_comes_from_another_origin(name: str) -> None:
    text = (LIVE / name).read_text()
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
    assert "@import" not in text and "url(" not in text


def test_the_script_sets_data_as_text_only() -> None:
    """Log lines carry what clients sent to nginx: none may become markup or code."""
    js = (LIVE / "live.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", ".style", "setAttribute(\"style"):
        assert sink not in js, sink
    assert "textContent" in js


# -- in a browser -----------------------------------------------------------------------------
def page_text(page: Page) -> str:
    text: str = page.evaluate("document.body.innerText")
    return text


@needs_chromium
def test_the_page_goes_live_and_shows_the_storm_without_a_reload(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    config = tmp_path / "retrywatch.json"
    config.write_text(json.dumps({"api_token": TOKEN}))
    with running(["--log", str(log), "--from", "beginning", "--timezone", "UTC",
                  "--config", str(config)], tmp_path / "run") as svc, \
            devtools(tmp_path / "chromium") as page:
        url = f"http://127.0.0.1:{svc.port}/"
        # Every CSP violation the page would cause, recorded from the start.
        page.call("Page.addScriptToEvaluateOnNewDocument", source=(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"))
        page.size(1280, 900)
        page.goto(url)

        # No token yet: the API answers 401 and the page asks for it.
        page.wait("the token form", "!document.getElementById('token').hidden")
        assert page.evaluate("document.getElementById('status').textContent") == (
            "API token needed")
        page.evaluate(f"document.getElementById('token-input').value = {TOKEN!r};"
                      "document.querySelector('#token button').click(); true")
        page.wait("the stream live",
                  "document.getElementById('status').textContent === 'live'")
        assert "No alert firing." in page_text(page)
        assert page.evaluate("sessionStorage.getItem('retrywatch-token')") == TOKEN
        page.evaluate("window.__mark = 'before the storm'; true")

        # The storm reaches the log: its alert comes over the event stream.
        with log.open("ab") as f:
            f.write(storm_bytes())
        firing = poll("the storm's alert firing", lambda: next(
            (a for a in authed(svc, "/api/v1/alerts?state=firing")["alerts"]
             if a["cid"] == STORM_FIRING_CID), None))
        card = f"document.querySelector('article[data-id=\"{firing['id']}\"]')"
        page.wait("the storm's alert card", f"!!{card}")
        shown = page.evaluate(f"{card}.innerText")
        assert f"*{STORM_FIRING_CID} (pid {firing['pid']})" in shown
        assert page.evaluate(f"{card}.querySelector('.fix').textContent") == (
            firing["diagnosis"]["fix"])
        assert page.evaluate(f"{card}.querySelector('.cause').textContent") == (
            firing["diagnosis"]["cause"])
        # labelled by the style sheet (loaded under the policy): "Fix: " before it
        assert page.evaluate(f"getComputedStyle({card}.querySelector('.fix'), '::before')"
                             ".content") == '"Fix: "'
        assert firing["diagnosis"]["fix"].strip() in shown
        assert page.evaluate("window.__mark") == "before the storm", "the page reloaded"
        # The other views filled from the API: the hottest connection, its upstream, the
        # source caught up; the alerts that fired and resolved within the sample, listed.
        page.wait("the tables", "!!(document.querySelector('#connections tbody tr') &&"
                                " document.querySelector('#upstreams tbody tr') &&"
                                " document.querySelector('#sources tbody tr'))")
        text = page_text(page)
        assert str(log) in text and "caught up" in text
        assert "unix:" in page.evaluate("document.getElementById('upstreams').innerText")
        page.wait("a resolved alert listed",
                  "!!document.querySelector('#resolved li:not(.empty)')")
        assert page.evaluate("window.__violations") == []
        png = page.screenshot(tmp_path / "live-desktop.png")
        assert png.startswith(b"\x89PNG") and len(png) > 20_000

        # On a phone: one column, nothing wider than the screen.
        page.size(390, 844, mobile=True)
        page.wait("the phone layout", "document.documentElement.scrollWidth <= 390")
        assert page.evaluate("document.querySelector('.cards').getBoundingClientRect().width"
                             ) <= 390
        png = page.screenshot(tmp_path / "live-phone.png")
        assert png.startswith(b"\x89PNG")
        assert page.evaluate("window.__violations") == []


def authed(svc: Run, path: str) -> dict[str, Any]:
    r = svc.client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    r.raise_for_status()
    found: dict[str, Any] = r.json()
    return found
