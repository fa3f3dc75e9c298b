"""Plain ASGI middleware, outermost first: request metrics, the deadline, the API key, the
body limit.

Plain ASGI rather than `@app.middleware("http")`, whose response streaming costs about a
millisecond a request; and because the key and the size must be checked before any body is
read, which a FastAPI dependency cannot do (FastAPI reads a form body before dependencies).
"""

from __future__ import annotations

import asyncio
import time

from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from service.deployments.metrics import IngressMetrics
from service.errors import ServiceError, TimedOut, TooLarge, Unavailable, error_body

# the API's paths: ours, and the Hugging Face Inference API's (routes/hf.py)
API_PREFIXES = ("/v1/", "/hf/")


def api_path(scope) -> str | None:
    """The path of an HTTP request within the app (without Serve's route prefix, the
    `root_path`), when it is one of the API's (/v1/..., /hf/...); None for anything else."""
    if scope["type"] != "http":
        return None
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path if path.startswith(API_PREFIXES) else None


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.type, exc.message, exc.param), exc.status, headers=exc.headers
    )


class RequestMetrics:
    """Counts API requests by route, model and status, and times them."""

    def __init__(self, app):
        self.app = app
        self._metrics: IngressMetrics | None = None  # made in the replica, on first use

    async def __call__(self, scope, receive, send):
        if api_path(scope) is None:
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if self._metrics is None:
                self._metrics = IngressMetrics()
            path = getattr(scope.get("route"), "path", "unmatched")
            model = (scope.get("state") or {}).get("model_id", "")
            self._metrics.requests.inc(tags={"route": path, "model": model, "status": str(status)})
            self._metrics.latency.observe(time.perf_counter() - start, tags={"route": path})


def deadline_s(request_timeout_s: float) -> float:
    """Our limit on one request: a few seconds inside Serve's (REQUEST_TIMEOUT_S), so that ours
    answers first."""
    return request_timeout_s - min(5.0, request_timeout_s / 10)


class Deadline:
    """Answers a request that runs past `seconds` with the API's JSON error (408), before
    Serve's own request limit cuts it with a plain-text 408 that no client can parse as ours.
    A slow upload and a slow answer alike. Once the answer has begun it cannot be replaced:
    the request is cut, as Serve would."""

    def __init__(self, app, *, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.seconds) as limit:
                return await self.app(scope, receive, watched)
        except TimeoutError:
            if started or not limit.expired():
                raise
        late = TimedOut(
            f"the request took longer than {self.seconds:g} s, the service's limit on one "
            "request (setting TUNESERVE_REQUEST_TIMEOUT_S)"
        )
        await error_response(late)(scope, receive, send)


class Authenticate:
    """Who calls, from the API key, before anything else is done for the request: without a
    valid key a caller learns nothing, not even the schema's errors, and no body is read."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if api_path(scope) is None:
            return await self.app(scope, receive, send)
        auth = scope["app"].state.context.auth
        header = dict(scope.get("headers") or []).get(b"authorization")
        header = header.decode("latin-1") if header is not None else None
        try:
            who = auth.cached(header)  # a key seen in the last seconds: no database
            if who is None:
                who = await asyncio.to_thread(auth.principal, header)
        except ServiceError as exc:
            return await error_response(exc)(scope, receive, send)
        except OperationalError:
            down = Unavailable("the database cannot be reached; retry shortly")
            down.headers = {"Retry-After": "5"}
            return await error_response(down)(scope, receive, send)
        scope.setdefault("state", {})["caller"] = who
        return await self.app(scope, receive, send)


class LimitBody:
    """Refuses a request body over its limit with 413: by its Content-Length before reading,
    or as soon as the bytes read pass the limit. Uploads have their own, larger limit."""

    def __init__(self, app, *, max_bytes: int, upload_path: str, max_upload_bytes: int):
        self.app = app
        self.max_bytes, self.upload_path, self.max_upload_bytes = (
            max_bytes,
            upload_path,
            max_upload_bytes,
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = api_path(scope) == self.upload_path
        # the multipart envelope around an upload is a little larger than the file
        limit = self.max_upload_bytes + 65536 if upload else self.max_bytes
        setting = "TUNESERVE_MAX_UPLOAD_BYTES" if upload else "TUNESERVE_MAX_REQUEST_BYTES"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            too_large = TooLarge(
                f"the request body is {int(declared)} bytes; the limit is "
                f"{self.max_upload_bytes if upload else limit} (setting {setting})",
                param="file" if upload else None,
            )
            return await error_response(too_large)(scope, receive, send)
        seen, passed, answered = 0, None, False

        async def counted():
            nonlocal seen, passed
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                passed = TooLarge(
                    f"the request body passed {limit} bytes, the limit (setting {setting})",
                    param="file" if upload else None,
                )
                raise passed
            return message

        async def guarded(message):
            # once the body passed its limit, the app's answer (FastAPI turns an error while
            # it reads a JSON body into a 400) gives way to the 413 sent below
            nonlocal answered
            if passed is None or answered:
                answered = True
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if passed is None or answered:
                raise
        if passed is not None and not answered:
            await error_response(passed)(scope, receive, send)
