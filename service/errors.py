"""Domain errors: each class is one row of the table that gives an error its HTTP status and
its `type`. Every error a client sees has the shape ``{"error": {"type", "message", "param"}}``
(`error_body`), request validation (422) and malformed JSON (400) included, so a client needs
one parser; api/app.py installs the handlers that write it.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error with a meaning for the client. Subclasses set `status` and `type`."""

    status = 500
    type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] | None = None


class Unauthorized(ServiceError):
    """Authentication is on and the key is missing, unknown or revoked."""

    status = 401
    type = "invalid_api_key"

    def __init__(self, message: str):
        super().__init__(message)
        self.headers = {"WWW-Authenticate": 'Bearer realm="tuneserve"'}


class Forbidden(ServiceError):
    """A tenant's key where only the admin key may act."""

    status = 403
    type = "permission_denied"


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


class TimedOut(ServiceError):
    """The request ran past the service's limit on one request (uploads included)."""

    status = 408
    type = "request_timeout"


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
