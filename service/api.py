"""The HTTP API: one FastAPI app, served by the ingress deployment.

The ingress validates each request (schemas.py), resolves its model in the registry (404 for an
unknown id, 400 for a task the model does not serve) and calls the model deployment through a
handle with the model id as the multiplexed id. Every error leaves in the one error body.
"""

# No `from __future__ import annotations` here: FastAPI must see the real types of the
# methods' parameters, and Serve's class-based ingress hides the module's globals from it.
import asyncio
import logging
import time
import urllib.request
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from service import errors
from service.deployments import LATENCY_S, bind_replica_grpc_to_node_ip
from service.errors import InvalidRequest, ModelUnavailable, Overloaded, ServiceError
from service.registry import BASE_MODEL_ID, Registry, view
from service.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ModelList,
    ModelView,
    QARequest,
    QAResponse,
)

log = logging.getLogger("ray.serve")

READY_TIMEOUT_S = 30.0

app = FastAPI(
    title="tuneserve",
    version="0.1.0",
    summary="Classification and extractive QA with a base encoder or any fine-tuned variant",
)
errors.install(app)

# The ingress's metrics, made on first use in the replica process. (Not in Ingress.__init__:
# Serve pickles the class by value, so it would fill a copy of this dict.)
_metrics: dict = {}


def _ingress_metrics() -> dict:
    if not _metrics:
        from ray.serve.metrics import Counter, Histogram

        _metrics["requests"] = Counter(
            "tuneserve_requests_total",
            description="API requests by route, model and status",
            tag_keys=("route", "model", "status"),
        )
        _metrics["latency"] = Histogram(
            "tuneserve_request_seconds",
            description="API request latency at the ingress",
            boundaries=LATENCY_S,
            tag_keys=("route",),
        )
    return _metrics


@app.middleware("http")
async def _count_requests(request: Request, call_next):
    start = time.perf_counter()
    response = await call_next(request)
    if request.url.path.startswith("/v1/"):
        metrics = _ingress_metrics()
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        model = getattr(request.state, "model_id", "")
        tags = {"route": path, "model": model, "status": str(response.status_code)}
        metrics["requests"].inc(tags=tags)
        metrics["latency"].observe(time.perf_counter() - start, tags={"route": path})
    return response


# Named with hyphens: gateways and proxies drop headers with underscores.
ModelHeader = Annotated[
    str | None,
    Header(
        alias="serve-multiplexed-model-id",
        description="the model, when the body does not name it",
        max_length=128,
    ),
]


def _model_id(body_model: str | None, header_model: str | None) -> str:
    model_id = body_model or header_model
    if not model_id:
        raise InvalidRequest(
            'name the model: "model" in the body (e.g. "base") or the '
            "serve-multiplexed-model-id header",
            param="model",
        )
    return model_id


def _from_replica(exc: Exception, model_id: str) -> ServiceError:
    """Map what a model replica raised to what the client sees."""
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    if isinstance(cause, ServiceError):
        return cause
    if isinstance(cause, BackPressureError):
        return Overloaded(
            f"model {model_id!r} has more requests waiting than it queues; retry shortly",
            retry_after_s=getattr(cause, "retry_after_s", None) or 1.0,
            param="model",
        )
    log.error("model %s failed: %r", model_id, cause)
    return ModelUnavailable(
        f"model {model_id!r} could not serve this request: {type(cause).__name__}. "
        "Retry; if it persists, check the model's artifact",
        param="model",
    )


@serve.deployment(name="ingress")
@serve.ingress(app)
class Ingress:
    def __init__(self, models: DeploymentHandle, home: str, base_model: str):
        bind_replica_grpc_to_node_ip()
        self.models = models
        self.registry = Registry(Path(home), base_model)
        self._exporter: str | None = None

    async def _call(self, model_id: str, method: str, *args):
        handle = getattr(self.models.options(multiplexed_model_id=model_id), method)
        try:
            return await handle.remote(*args)
        except Exception as exc:  # whatever a replica or Serve raised: a 503 naming the model
            raise _from_replica(exc, model_id) from exc

    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["inference"])
    async def classify(
        self,
        request: Request,
        body: ClassifyRequest,
        serve_multiplexed_model_id: ModelHeader = None,
    ) -> ClassifyResponse:
        """Classify texts: with a fine-tuned classifier's own labels, or zero-shot with a
        base encoder and the candidate `labels` given in the request."""
        model_id = request.state.model_id = _model_id(body.model, serve_multiplexed_model_id)
        model = self.registry.for_endpoint(model_id, "text-classification", labels=body.labels)
        if body.template is not None and not model.zero_shot:
            raise InvalidRequest(
                "`template` is for zero-shot classification with a base encoder", param="template"
            )
        results = await self._call(model_id, "classify", body.texts(), body.labels, body.template)
        return ClassifyResponse(model=model_id, results=results)

    @app.post("/v1/qa", response_model=QAResponse, tags=["inference"])
    async def qa(
        self, request: Request, body: QARequest, serve_multiplexed_model_id: ModelHeader = None
    ) -> QAResponse:
        """Answer questions from a context: a token span with a fine-tuned QA model, or the
        sentence of the context closest to the question with a base encoder."""
        model_id = request.state.model_id = _model_id(body.model, serve_multiplexed_model_id)
        self.registry.for_endpoint(model_id, "extractive-qa")
        pairs = [(p.question, p.context) for p in body.pairs()]
        results = await self._call(model_id, "answer", pairs)
        return QAResponse(model=model_id, results=results)

    @app.get("/v1/models", response_model=ModelList, tags=["models"])
    async def list_models(self) -> ModelList:
        return ModelList(data=[view(m) for m in self.registry.list()])

    @app.get("/v1/models/{model_id}", response_model=ModelView, tags=["models"])
    async def get_model(self, model_id: str) -> ModelView:
        manifest = self.registry.resolve(model_id).manifest
        return view(manifest.model_copy(update={"id": model_id}))

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics(self) -> PlainTextResponse:
        """Prometheus metrics of this node: Ray Serve's, Ray's and ours (`ray_tuneserve_*`).
        On a cluster, scrape every node's exporter instead."""
        if self._exporter is None:
            import ray

            ip = ray.util.get_node_ip_address()
            port = next(
                n["MetricsExportPort"]
                for n in ray.nodes()
                if n["Alive"] and n["NodeManagerAddress"] == ip
            )
            host = f"[{ip}]" if ":" in ip else ip
            self._exporter = f"http://{host}:{port}/metrics"

        def scrape() -> str:
            with urllib.request.urlopen(self._exporter, timeout=10) as resp:
                return resp.read().decode()

        try:
            text = await asyncio.to_thread(scrape)
        except OSError as exc:
            raise ModelUnavailable(f"the node's metrics exporter did not answer: {exc}") from exc
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/healthz", tags=["health"])
    async def healthz(self) -> dict:
        """The ingress is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(self):
        """The base model is loaded in a replica and can serve."""
        try:
            await asyncio.wait_for(self._call(BASE_MODEL_ID, "ready"), timeout=READY_TIMEOUT_S)
        except (ServiceError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, ServiceError) else "timed out loading base"
            return JSONResponse(
                errors.error_body("not_ready", f"base model not ready: {reason}"), 503
            )
        return {"status": "ready", "base": self.registry.base_model}
