"""RFC 9457 problem details (``application/problem+json``) for every error the API returns.

Routes raise :class:`Problem`; :func:`install_problem_handlers` turns it, FastAPI's validation errors
(``errors: [{field, message, type}]``, malformed JSON as 400), Starlette's HTTP errors (404, 405 with
its ``Allow`` header), an object-store outage (503 + ``Retry-After``) and unexpected exceptions (500,
no internals leaked) into the same shape:
``{"type", "title", "status", "detail", "instance", ...extensions}``. A body that is not UTF-8 is a 400
``malformed-body`` with ``errors``. The OpenAPI document says so: every 4xx/5xx response is declared
``application/problem+json`` with :class:`ProblemDetails` (FastAPI's default 422 is ``application/json``).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from sjc_service.store import StoreUnavailable

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:sjc:problem:"
STORE_RETRY_AFTER_S = 10
BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's detail when the body cannot be decoded
log = logging.getLogger("sjc.api")


class ProblemDetails(BaseModel):
    """The body of every error response (RFC 9457); extensions such as ``errors`` vary by type."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for routes that may answer with these problem statuses."""
    schema = ProblemDetails.model_json_schema()
    return {s: {"description": HTTPStatus(s).phrase, "content": {PROBLEM_JSON: {"schema": schema}}} for s in statuses}


class Problem(Exception):
    """An error response. ``slug`` names the problem type (``urn:sjc:problem:<slug>``).

    Args:
        status: HTTP status code.
        detail: a sentence for humans about this occurrence.
        slug: problem type; ``None`` uses ``about:blank`` (the title is then the status phrase).
        title: short summary of the type (default: the HTTP status phrase).
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``...).
        extra: extension members added to the body (``errors``, ``job_id``...).
    """

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title or str(status))
        self.status, self.detail, self.slug = status, detail, slug
        self.title = title or HTTPStatus(status).phrase
        self.headers, self.extra = headers or {}, extra


def field_error(field: str, message: str, status: int = 422) -> Problem:
    """A validation problem about one request field (named with dots: ``"outputs.0"``)."""
    return Problem(
        status, f"{field}: {message}", slug="validation-error", title="Invalid request",
        errors=[{"field": field, "message": message}],
    )


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + problem.slug if problem.slug else "about:blank",
        "title": problem.title,
        "status": problem.status,
    }
    if problem.detail:
        body["detail"] = problem.detail
    if request is not None:
        body["instance"] = request.url.path
    body.update(problem.extra)
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> tuple[str, str]:
    """(``"steps"``, ``"body"``) from FastAPI's ``("body", "steps")``."""
    parts = list(loc)
    where = str(parts.pop(0)) if parts and parts[0] in ("body", "query", "path", "header", "cookie") else "body"
    return (".".join(str(p) for p in parts) or where), where


def validation_problem(exc: RequestValidationError) -> Problem:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        return Problem(
            400, f"The request body is not valid JSON: {ctx.get('error', 'parse error')}",
            slug="malformed-json", title="Malformed JSON", errors=[{"field": "body", "message": "invalid JSON"}],
        )
    items = []
    for e in errors:
        field, where = _loc_to_field(e.get("loc", ()))
        items.append({"field": field, "in": where, "message": e.get("msg", "invalid"), "type": e.get("type")})
    detail = "; ".join(f"{i['field']}: {i['message']}" for i in items)
    return Problem(422, detail, slug="validation-error", title="Invalid request", errors=items)


def allowed_methods(request: Request) -> set[str]:
    """Every method some route accepts at the request's path (routers may be nested)."""
    methods: set[str] = set()
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            methods.add(method)
    return methods


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` a problem+json response."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_problem(exc), request)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            return problem_response(body_problem(exc.__cause__), request)
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != HTTPStatus(exc.status_code).phrase else None
        if exc.status_code == 404 and detail is None:
            detail = f"No resource at {request.url.path}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = ", ".join(sorted(allowed_methods(request)))
        return problem_response(Problem(exc.status_code, detail, headers=headers), request)

    async def on_store_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("object store unavailable on %s %s: %s", request.method, request.url.path, exc.__cause__ or exc)
        problem = Problem(503, "The object store is unavailable; try again shortly.", slug="store-unavailable",
                          title="Store unavailable", headers={"Retry-After": str(STORE_RETRY_AFTER_S)})
        return problem_response(problem, request)

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "An unexpected error occurred; it has been logged."), request)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(StoreUnavailable, on_store_down)
    app.add_exception_handler(Exception, on_crash)
    install_problem_openapi(app)


def body_problem(cause: BaseException | None) -> Problem:
    """400 for a body FastAPI could not decode (not UTF-8, or not JSON after decoding)."""
    if isinstance(cause, UnicodeDecodeError):
        message = f"the body is not UTF-8 (byte {cause.start}: {cause.reason})"
    else:
        message = "the body could not be decoded"
    return Problem(400, f"The request body cannot be read: {message}.", slug="malformed-body",
                   title="Malformed body", errors=[{"field": "body", "in": "body", "message": message}])


def problems_in_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    """Declare every 4xx/5xx response of ``spec`` as ``application/problem+json`` (in place; returns it)."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ProblemDetails", ProblemDetails.model_json_schema())
    ref = {"$ref": "#/components/schemas/ProblemDetails"}
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in (operation.get("responses") or {}).items():
                if status[:1] in ("4", "5"):
                    content = response.setdefault("content", {})
                    content.pop("application/json", None)
                    content[PROBLEM_JSON] = {"schema": ref}
    for name in ("HTTPValidationError", "ValidationError"):
        if not any(name in str(op) for item in spec.get("paths", {}).values() for op in item.values()):
            schemas.pop(name, None)
    return spec


def install_problem_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` declare problem+json for every error response."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = problems_in_openapi(spec)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
