"""/healthz, /readyz and /metrics: for probes and scrapers, without an API key."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from service.api.deps import Ctx
from service.errors import ModelUnavailable, ServiceError, error_body
from service.registry import BASE_MODEL_ID

router = APIRouter(tags=["health"])
READY_TIMEOUT_S = 30.0


class Alive(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    base: str = Field(description="the stored id of the encoder that `base` names")


@router.get("/healthz", response_model=Alive)
async def healthz() -> dict:
    """The ingress is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready)
async def readyz(ctx: Ctx):
    """The base model is loaded in a replica and can serve, and the database answers."""
    assert ctx.models is not None
    try:
        await asyncio.wait_for(ctx.models.ready(BASE_MODEL_ID), timeout=READY_TIMEOUT_S)
    except (ServiceError, TimeoutError) as exc:
        reason = exc.message if isinstance(exc, ServiceError) else "timed out loading base"
        return JSONResponse(error_body("not_ready", f"base model not ready: {reason}"), 503)
    try:
        await asyncio.wait_for(asyncio.to_thread(lambda: ctx.db.ready().ping()), 10)
    except Exception as exc:
        message = f"the database cannot be reached: {type(exc).__name__}"
        return JSONResponse(error_body("not_ready", message), 503)
    return {"status": "ready", "base": ctx.registry.base_model}


_exporter: dict[str, str] = {}


def _exporter_url() -> str:
    """This node's Ray metrics exporter (found once)."""
    if "url" not in _exporter:
        import ray

        ip = ray.util.get_node_ip_address()
        port = next(
            n["MetricsExportPort"]
            for n in ray.nodes()
            if n["Alive"] and n["NodeManagerAddress"] == ip
        )
        host = f"[{ip}]" if ":" in ip else ip
        _exporter["url"] = f"http://{host}:{port}/metrics"
    return _exporter["url"]


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics() -> PlainTextResponse:
    """Prometheus metrics of this node: Ray Serve's, Ray's and ours (`ray_tuneserve_*`).
    On a cluster, scrape every node's exporter instead."""

    def scrape() -> str:
        with urllib.request.urlopen(_exporter_url(), timeout=10) as resp:
            return resp.read().decode()

    try:
        text = await asyncio.to_thread(scrape)
    except OSError as exc:
        raise ModelUnavailable(f"the node's metrics exporter did not answer: {exc}") from exc
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
