"""The ``--html`` report: self-contained, escaped, and it really renders (headless Chromium)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from chromium_harness import headless, needs_chromium

from retrywatch.forensics.analysis import Analysis, analyze
from retrywatch.forensics.discover import discover
from retrywatch.forensics.html_report import DIAGNOSIS_COLORS, KIND_COLORS, PEER_COLORS, render_html

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_logs"
UTC = ZoneInfo("UTC")

#: The runaway connections of sample_logs (scenario-http-lua-storm, see its README).
RUNAWAY_CIDS = (73, 20137, 20302, 41557, 49447)
PLOT_IDS = ("plot-timeline", "plot-connections", "plot-upstreams")

#: Attributes whose value the browser may fetch.
URL_ATTRIBUTES = {"src", "href", "xlink:href", "srcset", "data", "poster", "action",
                  "formaction", "background", "manifest", "ping", "codebase", "longdesc",
                  "usemap", "icon", "archive", "lowsrc", "dynsrc"}


def _analyze(*paths: Path | str) -> Analysis:
    return analyze(discover([str(p) for p in paths]), tz=UTC)


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("html") / "report.html"
    render_html(_analyze(SAMPLES), path)
    return path, path.read_text(encoding="utf-8")


class _Resources(HTMLParser):
    """Collects everything in a page that could make the browser fetch something."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str]] = []
        self.css: list[str] = []
        self.tags: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if value is None:
                continue
            if name in URL_ATTRIBUTES:
                self.urls.append((tag, name, value.strip()))
            elif name == "style":
                self.css.append(value)
            elif tag == "meta" and name == "content" and re.search(r"url\s*=", value, re.I):
                self.urls.append((tag, name, value))
        self._in_style = tag == "style"

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.css.append(data)


def _plot(html: str, plot_id: str) -> str:
    """The element ``id="plot_id"`` up to the end of its first inline image."""
    start = html.find(f'id="{plot_id}"')
    assert start >= 0, f"no element with id {plot_id!r}"
    end = html.find("</svg>", start)
    return html[start:end if end >= 0 else len(html)]


# --------------------------------------------------------------------------- the page


def test_report_loads_nothing_from_the_network(sample_report: tuple[Path, str]) -> None:
    _path, html = sample_report
    page = _Resources()
    page.feed(html)
    page.close()
    external = [(tag, name, value) for tag, name, value in page.urls
                if not value.startswith(("#", "data:"))]
    assert external == []
    for css in page.css:
        assert "@import" not in css
        for target in re.findall(r"url\(\s*['\"]?([^'\")]*)", css):
            assert target.startswith(("#", "data:")), target
    # No scripts, stylesheets or fonts to fetch, and none referenced by absolute URL.
    assert "script" not in page.tags
    assert "link" not in page.tags
    assert "@font-face" not in html
    assert not re.search(r"""(?:src|href|srcset|poster|action)\s*=\s*["']?\s*(?:https?:)?//""",
                         html, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(?:https?:)?//""", html, re.I)
    # And the browser is told to fetch nothing at all.
    csp = r"""<meta http-equiv="Content-Security-Policy"\s+content="default-src 'none';"""
    assert re.search(csp, html)


def test_report_names_every_runaway_connection(sample_report: tuple[Path, str]) -> None:
    _path, html = sample_report
    table = html[html.index('id="connections-table"'):]
    table = table[:table.index("</table>")]
    for cid in RUNAWAY_CIDS:
        assert f"*{cid} " in table or f"*{cid}<" in table, cid
    assert table.count('class="conn"') == len(RUNAWAY_CIDS)
    # The fix is spelled out, and the one connection still failing at the end is firing.
    assert "proxy_next_upstream_tries 3;" in table
    assert table.count('badge firing">firing<') == 1
    # how sure, and why: the real storms are confirmed by what the log shows
    assert table.count('class="confidence confirmed">confirmed<') == len(RUNAWAY_CIDS)
    assert table.count("more than its requests can make") >= 1


def test_report_has_the_three_plots(sample_report: tuple[Path, str]) -> None:
    _path, html = sample_report
    for plot_id in PLOT_IDS:
        plot = _plot(html, plot_id)
        assert "<svg" in plot or '<img src="data:image/png;base64,' in plot, plot_id
    # Inlined SVG: no XML prolog or DOCTYPE inside the page, and element ids stay unique.
    assert "<?xml" not in html
    assert html.count("<!DOCTYPE") == 1
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_report_summary_and_tables(sample_report: tuple[Path, str]) -> None:
    _path, html = sample_report
    assert "Connect failures per second" in html  # ten seconds of logs: full resolution
    assert "58,552" in html  # connect failures
    assert "111: Connection refused" in html and "110: Connection timed out" in html
    assert "no live upstreams" in html
    for table in ("servers-table", "upstreams-table", "kinds-table", "errno-table",
                  "files-table"):
        assert f'id="{table}"' in html
    assert "storm.test" in html[html.index('id="servers-table"'):]
    assert "scenario-stream-multi.error.log.gz" in html


# --------------------------------------------------------------------------- edge cases

_FAILURE = ('{ts} [error] 2454#2454: *{cid} connect() failed (111: Connection refused) while '
            'connecting to upstream, client: 10.0.0.7, server: {server}, request: "{request}", '
            'upstream: "http://{peer}/", host: "{server}"')


def _stamp(t: datetime) -> str:
    return t.strftime("%Y/%m/%d %H:%M:%S")


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_empty_analysis_renders_without_plots(tmp_path: Path) -> None:
    log = _write(tmp_path / "quiet.error.log", [
        '2026/11/25 17:33:41 [notice] 100#100: using the "epoll" event method',
        "2026/11/25 17:33:41 [notice] 100#100: nginx/1.22.1",
    ])
    analysis = _analyze(log)
    assert analysis.summary["connect_failures"] == 0 and analysis.alerts == []
    out = tmp_path / "empty.html"
    render_html(analysis, str(out))  # a str path is fine too
    html = out.read_text(encoding="utf-8")
    assert "<svg" not in html and "data:image" not in html
    for plot_id in PLOT_IDS:
        assert f'id="{plot_id}"' not in html
    assert "No connect failures in these logs" in html
    assert "No runaway connections" in html
    assert "quiet.error.log" in html


def test_failures_without_storms_plot_timeline_but_no_connections(tmp_path: Path) -> None:
    analysis = _analyze(SAMPLES / "scenario-http-normal.error.log.gz")
    assert analysis.summary["connect_failures"] > 0 and analysis.alerts == []
    out = tmp_path / "normal.html"
    render_html(analysis, out)
    html = out.read_text(encoding="utf-8")
    assert "<svg" in _plot(html, "plot-timeline")
    assert "<svg" in _plot(html, "plot-upstreams")
    assert 'id="plot-connections"' not in html
    assert "No runaway connections" in html


def test_log_text_and_title_are_escaped(tmp_path: Path) -> None:
    start = datetime(2026, 11, 25, 17, 0, 0)
    request = 'GET /x?a=1&b=<script>alert("x")</script> HTTP/1.1'
    lines = [_FAILURE.format(ts=_stamp(start + timedelta(seconds=i // 20)), cid=777,
                             server="evil.test", request=request,
                             peer=f"10.0.0.{i % 2}:80")
             for i in range(60)]
    analysis = _analyze(_write(tmp_path / "evil.error.log", lines))
    assert [a.cid for a in analysis.alerts] == [777]
    out = tmp_path / "evil.html"
    render_html(analysis, out, title='<img src=x onerror="alert(1)"> report')
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html
    assert "&lt;img src=x onerror=" in html


@pytest.mark.parametrize(("span", "word"), [
    (timedelta(hours=3), "minute"),
    (timedelta(days=8), "hour"),
])
def test_long_ranges_are_resampled(tmp_path: Path, span: timedelta, word: str) -> None:
    start = datetime(2026, 11, 20, 8, 0, 0)
    lines = [_FAILURE.format(ts=_stamp(t), cid=n, server="a.test", request="GET / HTTP/1.1",
                             peer="10.0.0.1:80")
             for n, t in enumerate((start, start + span / 2, start + span), start=1)]
    out = tmp_path / "long.html"
    render_html(_analyze(_write(tmp_path / "long.error.log", lines)), out)
    html = out.read_text(encoding="utf-8")
    assert f'aria-label="Connect failures per {word}"' in html
    assert f"Connect failures per {word}" in _plot(html, "plot-timeline")


# --------------------------------------------------------------------------- Chromium


def _rgb(png: Path) -> np.ndarray[Any, Any]:
    """The screenshot as an (height, width, 3) uint8 array."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        import matplotlib.image

        floats = matplotlib.image.imread(str(png))
        return np.asarray(np.round(floats[..., :3] * 255), dtype=np.uint8)
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _near(pixels: np.ndarray[Any, Any], color: str, tolerance: int = 10) -> int:
    target = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(pixels.astype(np.int16) - target) <= tolerance).all(axis=2).sum())


@needs_chromium
def test_report_renders_in_headless_chromium(sample_report: tuple[Path, str],
                                             tmp_path: Path) -> None:
    report, _html = sample_report
    shot = tmp_path / "shot.png"
    headless(["--window-size=1400,3000", f"--screenshot={shot}", report.as_uri()],
             tmp_path / "profile", timeout=60, doing="finish its screenshot")
    assert shot.is_file() and shot.stat().st_size > 0

    pixels = _rgb(shot)
    assert pixels.shape == (3000, 1400, 3)
    # Not blank: a good part of the page is ink (text, plots, bars), not white or the
    # light page background.
    ink = (pixels.astype(np.int16).max(axis=2) < 200).mean()
    assert ink > 0.03, f"only {ink:.1%} of the screenshot is drawn"
    # Many colours, not a blank or a single-colour error page.
    quantized = (pixels >> 4).astype(np.int32)
    codes = (quantized[..., 0] << 8) | (quantized[..., 1] << 4) | quantized[..., 2]
    counts = np.bincount(codes.ravel(), minlength=4096)
    assert int((counts >= 200).sum()) >= 8
    # The plots are drawn: the timeline's kinds, the connection bars by diagnosis, and the
    # upstream peers each cover a visible area in their own colour.
    for color in (KIND_COLORS["connect_failed"], KIND_COLORS["connect_to_failed"],
                  DIAGNOSIS_COLORS["http_retry_loop"], DIAGNOSIS_COLORS["synchronous_loop"],
                  PEER_COLORS[0], PEER_COLORS[1]):
        assert _near(pixels, color) >= 400, color
