"""Builds the FastAPI app: its middleware, its error handlers (every error in the one body,
service/errors.py), its routers. Called in each ingress replica with its Context, and with
none to read the OpenAPI schema."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from service.api import middleware
from service.api.deps import Context
from service.api.routes import (
    admin,
    console,
    embeddings,
    files,
    fill_mask,
    health,
    hf,
    inference,
    jobs,
    models,
)
from service.errors import ServiceError, error_body
from service.schemas.errors import ERROR_RESPONSES
from service.settings import Settings

log = logging.getLogger("ray.serve")


def create_app(context: Context | None = None) -> FastAPI:
    app = FastAPI(
        title="tuneserve",
        version="0.1.0",
        summary="Classification and extractive QA with a base encoder or any fine-tuned variant",
        responses=ERROR_RESPONSES,
    )
    app.state.context = context
    for router in (
        inference.router,
        embeddings.router,
        fill_mask.router,
        hf.router,
        models.router,
        files.router,
        jobs.router,
        admin.router,
        health.router,
    ):
        app.include_router(router)
    console.mount(app)
    _install_error_handlers(app)
    if context is not None:
        s = context.settings
        _limits_in_schema(app, s)
        # added innermost first: the metrics see every answer (a late one too), the key is
        # checked before the body is read
        app.add_middleware(
            middleware.LimitBody,
            max_bytes=s.max_request_bytes,
            upload_path=files.UPLOAD_PATH,
            max_upload_bytes=s.max_upload_bytes,
        )
        app.add_middleware(middleware.Authenticate)
        app.add_middleware(middleware.Deadline, seconds=middleware.deadline_s(s.request_timeout_s))
        app.add_middleware(middleware.RequestMetrics)
    return app


def _limits_in_schema(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI schema states this deployment's limits (the settings), not only the request
    models' hard ceilings: a client, and a schema fuzzer, learns what the server enforces."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()  # FastAPI keeps it as app.openapi_schema: changed here, once
            models = schema["components"]["schemas"]
            texts = {"maxLength": settings.max_text_chars}
            inputs = models["ClassifyRequest"]["properties"]["inputs"]["anyOf"]
            inputs[0].update(texts)
            inputs[1].update(maxItems=settings.max_inputs)
            inputs[1]["items"].update(texts)
            labels = models["ClassifyRequest"]["properties"]["labels"]["anyOf"][0]
            labels["maxItems"] = settings.max_labels
            models["QARequest"]["properties"]["inputs"]["maxItems"] = settings.max_inputs
            for name in ("question", "context"):
                models["QARequest"]["properties"][name].update(texts)
                models["QAPair"]["properties"][name].update(texts)
                models["QAInputs"]["properties"][name].update(texts)
            for model, field in (("EmbeddingsRequest", "input"), ("HFRequest", "inputs")):
                one, many = models[model]["properties"][field]["anyOf"][:2]
                one.update(texts)
                many.update(maxItems=settings.max_inputs)
                many["items"].update(texts)
            models["EmbeddingsRequest"]["properties"]["input"]["anyOf"][3].update(
                maxItems=settings.max_inputs
            )
            candidates = models["HFParameters"]["properties"]["candidate_labels"]["anyOf"][0]
            candidates["maxItems"] = settings.max_labels
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _allowed_methods(request: Request) -> str:
    """The methods the OpenAPI schema documents for the request's path. (Starlette's own 405
    names only the first route it matched, and FastAPI makes a route per method.)"""
    path, root = request.scope["path"], request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            return ", ".join(sorted(m.upper() for m in operations))
    return ""


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
    msg = str(first.get("msg", "invalid value"))
    message = f"{param}: {msg}" if param else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return JSONResponse(error_body("validation_error", message, param), 422)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return middleware.error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: Allow lists every method the path takes
            headers["Allow"] = _allowed_methods(request)
        return JSONResponse(error_body(kind, str(exc.detail)), exc.status_code, headers=headers)

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
