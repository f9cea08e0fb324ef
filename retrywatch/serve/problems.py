"""Every error of the HTTP service as one body: RFC 9457 problem details.

``application/problem+json`` with ``type`` (``about:blank``: the status says it all),
``title`` (the status phrase), ``status``, ``detail`` (what went wrong, for a person) and
``instance`` (the path asked for); a request that does not validate has ``errors`` too,
one per parameter. :func:`install` makes FastAPI answer so (404, 405, 422, 500), and
:func:`problem_response` is for the answers made outside the routes (401 for the token,
503 for the event stream's cap; serve/http.py's 400 and 503 too). :func:`declared`
declares them in the OpenAPI schema, where :func:`add_schemas` puts the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

__all__ = ["MEDIA_TYPE", "FieldError", "Problem", "add_schemas", "declared", "install",
           "problem_body", "problem_response"]

MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    """One parameter that did not validate."""

    loc: list[str | int] = Field(description="Where: ['query', 'limit'], ['path', ...].")
    msg: str
    type: str = Field(description="The kind of error (pydantic's error type).")


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = Field(default="about:blank",
                      description="about:blank: the status says what it is.")
    title: str = Field(description="The status phrase.")
    status: int
    detail: str = Field(description="What went wrong, for a person.")
    instance: str | None = Field(default=None, description=(
        "The path asked for (none: the request could not be read)."))
    errors: list[FieldError] | None = Field(default=None, description=(
        "Each parameter that did not validate (422 only)."))


def problem_body(status: int, detail: str, instance: str | None = None,
                 errors: list[FieldError] | None = None) -> bytes:
    """The problem document of ``status``, as JSON."""
    problem = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail,
                      instance=instance, errors=errors)
    return problem.model_dump_json(exclude_none=True).encode()


def problem_response(status: int, detail: str, instance: str, *,
                     headers: Mapping[str, str] | None = None,
                     errors: list[FieldError] | None = None) -> Response:
    """The problem document of ``status`` (an ASGI app: ``await it(scope, receive, send)``
    outside the routes)."""
    return Response(problem_body(status, detail, instance, errors), status_code=status,
                    headers=headers, media_type=MEDIA_TYPE)


def install(app: FastAPI) -> None:
    """Answer HTTP errors, invalid requests and uncaught exceptions with problems."""
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _server_error)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return problem_response(exc.status_code, str(exc.detail), request.url.path,
                            headers=exc.headers)


async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    errors = [FieldError(loc=list(e.get("loc", ())), msg=str(e.get("msg", "")),
                         type=str(e.get("type", ""))) for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(map(str, e.loc[1:] or e.loc))}: {e.msg}" for e in errors)
    return problem_response(422, detail or "the request is not valid", request.url.path,
                            errors=errors)


async def _server_error(request: Request, exc: Exception) -> Response:
    # The exception itself goes to the server's log (Starlette raises it again after).
    return problem_response(500, "the service failed to answer: see its log",
                            request.url.path)


def declared(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of an operation for ``statuses``, each a :class:`Problem`."""
    return {status: {"description": HTTPStatus(status).phrase,
                     "content": {MEDIA_TYPE: {"schema": {
                         "$ref": "#/components/schemas/Problem"}}}}
            for status in statuses}


def add_schemas(schema: dict[str, Any]) -> None:
    """Put :class:`Problem` (and what it refers to) among the schema's components."""
    found = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(found.pop("$defs", {}))
    schemas["Problem"] = found
