"""Domain errors and the one table that gives each its HTTP status and error body.

Every error a client sees has the shape ``{"error": {"type", "message", "param"}}``, request
validation (422) and malformed JSON (400) included, so a client needs one parser.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with a meaning for the client. Subclasses set `status` and `type`."""

    status = 500
    type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(ServiceError):
    status = 400
    type = "invalid_request_error"


class ModelNotFound(ServiceError):
    status = 404
    type = "model_not_found"


class WrongTask(ServiceError):
    status = 400
    type = "wrong_task"


class NotFound(ServiceError):
    """A file or job that does not exist (or is not the caller's)."""

    status = 404
    type = "not_found"


class Conflict(ServiceError):
    """The request is valid but the object's state forbids it now (cancel a finished job)."""

    status = 409
    type = "conflict"


class LimitExceeded(ServiceError):
    """A request over a limit the settings set (inputs, characters, labels): the schema's
    own validation errors have the same status and type."""

    status = 422
    type = "validation_error"


class RetryLater(ServiceError):
    """An error that says when to come back, in a `Retry-After` header."""

    retry_after_default_s = 1.0

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, param: str | None = None
    ):
        super().__init__(message, param=param)
        seconds = self.retry_after_default_s if retry_after_s is None else retry_after_s
        self.headers = {"Retry-After": str(max(1, round(seconds)))}


class TooLarge(ServiceError):
    status = 413
    type = "payload_too_large"


class RateLimited(RetryLater):
    """A per-tenant limit is reached (unfinished jobs): retry when some finish."""

    status = 429
    type = "rate_limit_exceeded"
    retry_after_default_s = 30.0


class Unavailable(ServiceError):
    """A dependency (the database, Ray Jobs) cannot be reached: retry later."""

    status = 503
    type = "service_unavailable"


class ModelUnavailable(ServiceError):
    """The model exists but cannot serve now (failed to load, replica gone)."""

    status = 503
    type = "model_unavailable"


class Overloaded(RetryLater):
    """More requests are waiting than the model replicas queue: come back shortly."""

    status = 503
    type = "overloaded"


def error_body(type_: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "param": param}}


def _param(loc: tuple) -> str | None:
    # ("body", "inputs", 3) -> "inputs[3]"; the leading "body"/"query" says nothing useful
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        return JSONResponse(
            error_body("invalid_json", f"the body is not valid JSON: {first.get('msg')}"), 400
        )
    param = _param(tuple(first.get("loc", ())))
    msg = first.get("msg", "invalid value")
    message = f"{param}: {msg}" if param else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return JSONResponse(error_body("validation_error", message, param), 422)


def install(app: FastAPI) -> None:
    """Route every exception the app can raise through the one error body."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.type, exc.message, exc.param),
            exc.status,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(kind, str(exc.detail)), exc.status_code)

    @app.exception_handler(OperationalError)
    async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error: %s", type(exc.orig).__name__ if exc.orig else exc)
        return JSONResponse(
            error_body("service_unavailable", "the database cannot be reached; retry shortly"),
            503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            error_body("internal_error", "the server failed to handle this request"), 500
        )
