"""The live page: ``GET /``, the page an operator opens after ``kubectl port-forward``.

Three files of the package (``retrywatch/serve/live/``), served as they are, read once:
the page holds no data, so it is answered without the API token; its script reads the
REST API and the event stream with the token the operator gives it (kept in the tab's
``sessionStorage``). Nothing is loaded from elsewhere: the Content-Security-Policy allows
this origin's script, style and connections only (no inline script or style, no frames,
no form posts), and the script puts whatever it reads in the page as text.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

from retrywatch import __version__

__all__ = ["CSP", "PAGE_PATHS", "add_page"]

#: The policy of the page and its files: this origin only, nothing inline.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: What the page is made of (answered without the token: no data in them).
PAGE_PATHS = frozenset({"/", "/ui/live.js", "/ui/live.css"})
_TYPES = {"live.js": "text/javascript; charset=utf-8", "live.css": "text/css; charset=utf-8"}
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def _read(name: str) -> bytes:
    return (files("retrywatch.serve") / "live" / name).read_bytes()


def add_page(app: FastAPI) -> None:
    """``GET /`` and ``GET /ui/{name}`` on ``app``."""
    index = _read("index.html").decode().replace("{version}", __version__).encode()
    assets = {name: _read(name) for name in _TYPES}

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers=_HEADERS)

    @app.get("/ui/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, f"no file {name}")
        return Response(assets[name], media_type=_TYPES[name], headers=_HEADERS)
