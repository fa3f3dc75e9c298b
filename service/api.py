"""The HTTP API: one FastAPI app, served by the ingress deployment.

The ingress validates each request (schemas.py), resolves its model in the registry (404 for an
unknown id, 400 for a task the model does not serve) and calls the model deployment through a
handle with the model id as the multiplexed id. Every error leaves in the one error body.
"""

# No `from __future__ import annotations` here: FastAPI must see the real types of the
# methods' parameters, and Serve's class-based ingress hides the module's globals from it.
import asyncio
import functools
import logging
import time
import urllib.request
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Form, Header, Query, Request, UploadFile
from fastapi import File as FormFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from service import auth, errors, jobs
from service import files as uploads
from service.auth import Principal
from service.batching import Batcher, Pending, QueueFull
from service.db import Database
from service.deployments import LATENCY_S, MAX_ITEM_TOKENS, bind_replica_grpc_to_node_ip
from service.errors import (
    InvalidRequest,
    LimitExceeded,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    ServiceError,
    TooLarge,
)
from service.registry import BASE_MODEL_ID, Registry, view
from service.runtime import approx_tokens
from service.schemas import (
    ERROR_RESPONSES,
    ApiKeyRequest,
    ClassifyRequest,
    ClassifyResponse,
    CreateJobRequest,
    ModelList,
    ModelView,
    QARequest,
    QAResponse,
)
from service.settings import replica_db_url

log = logging.getLogger("ray.serve")

READY_TIMEOUT_S = 30.0

app = FastAPI(
    title="tuneserve",
    version="0.1.0",
    summary="Classification and extractive QA with a base encoder or any fine-tuned variant",
    responses=ERROR_RESPONSES,
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


class _CountRequests:
    """Counts /v1/ requests by route, model and status, and times them. Plain ASGI rather than
    `@app.middleware("http")`, whose response streaming costs about a millisecond a request."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.inner(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.inner(scope, receive, send_status)
        finally:
            metrics = _ingress_metrics()
            path = getattr(scope.get("route"), "path", "unmatched")
            model = (scope.get("state") or {}).get("model_id", "")
            tags = {"route": path, "model": model, "status": str(status)}
            metrics["requests"].inc(tags=tags)
            metrics["latency"].observe(time.perf_counter() - start, tags={"route": path})


app.add_middleware(_CountRequests)

# Limits the ingress sets from its settings when it starts (Ingress.__init__). They live in
# the module, not on the app: Serve ships the app to the replica as a copy, while this
# module is imported there as itself.
REQUEST_LIMITS: dict[str, int | None] = {"max_bytes": None}
UPLOAD_PATH = "/v1/files"


class _LimitBody:
    """Refuses a request body over `max_bytes` with 413, by its Content-Length or, without
    one, as soon as the bytes read pass the limit (uploads have their own, larger limit)."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        limit = REQUEST_LIMITS["max_bytes"]
        if scope["type"] != "http" or limit is None or scope["path"].endswith(UPLOAD_PATH):
            return await self.inner(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            body = errors.error_body(
                "payload_too_large",
                f"the request body is {int(declared)} bytes; the limit is {limit} "
                "(setting TUNESERVE_MAX_REQUEST_BYTES)",
            )
            return await JSONResponse(body, 413)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise TooLarge(
                    f"the request body passed {limit} bytes, the limit "
                    "(setting TUNESERVE_MAX_REQUEST_BYTES)"
                )
            return message

        return await self.inner(scope, counted, send)


app.add_middleware(_LimitBody)


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


# The ingress of this replica, for the dependency below (set in Ingress.__init__ through the
# module itself: the class is shipped to the replica with a copy of these globals).
_INGRESS: dict = {}


async def _caller(request: Request) -> Principal:
    """Who calls, from the API key. A dependency, so that it runs before the body is
    validated: without a valid key a caller learns nothing, not even the schema's errors."""
    return await _INGRESS["self"]._who(request)


Caller = Annotated[Principal, Depends(_caller)]


def _require_admin(who: Principal) -> None:
    if not who.admin:
        raise auth.Forbidden("only the admin key (TUNESERVE_ADMIN_KEY) manages API keys")


def _too_many(param: str, what: str, setting: str) -> LimitExceeded:
    return LimitExceeded(f"{param}: {what} (setting {setting})", param=param)


def _page(data: list[dict], has_more: bool) -> dict:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@serve.deployment(name="ingress")
@serve.ingress(app)
class Ingress:
    def __init__(
        self, models: DeploymentHandle, runner: DeploymentHandle, home: str, settings: dict
    ):
        bind_replica_grpc_to_node_ip()
        self.models, self.runner = models, runner
        self.home = Path(home)
        self.registry = Registry(self.home, settings["base_model"])
        self.settings = settings
        self.db = Database(replica_db_url(settings["db_url"]))
        self._migrated = False
        self._exporter: str | None = None
        self._senders: dict[tuple[str, str], Batcher] = {}
        # the module itself, not the copy of its globals this class was shipped with
        import service.api as module

        module.REQUEST_LIMITS["max_bytes"] = settings.get("max_request_bytes")
        module._INGRESS["self"] = self
        self.auth = auth.Authenticator(self.db, settings.get("admin_key_sha256"))
        # model id -> (read at, owning tenant or None): a job's model belongs to the job's
        # tenant forever; an id no job made is everyone's (base, CLI-trained)
        self._owners: dict[str, tuple[float, str | None, bool]] = {}
        # enough calls per model to keep every replica that may hold it busy, and one more
        # each to cover the trip
        replicas = max(settings["model_replicas"], settings["autoscaling_max_replicas"])
        self._calls_in_flight = max(2, 2 * replicas)

    def _database(self) -> Database:
        """The database, migrated on first use (not at start: an unreachable database makes
        requests that need it fail with 503, and leaves inference serving)."""
        if not self._migrated:
            self.db.upgrade()
            self._migrated = True
        return self.db

    async def _in_db(self, fn, *args, **kwargs):
        def run():
            return fn(self._database(), *args, **kwargs)

        return await asyncio.to_thread(run)

    def _limit_inputs(self, texts: list[str], param: str, per: int = 1, single=False) -> None:
        """The settings' limits on a request's inputs (the schema's are the hard ceiling)."""
        most = self.settings["max_inputs"]
        if len(texts) > most * per:
            raise _too_many(param, f"at most {most} inputs a request", "TUNESERVE_MAX_INPUTS")
        chars = self.settings["max_text_chars"]
        for i, t in enumerate(texts):
            if len(t) > chars:
                where = param if single else f"{param}[{i // per}]"
                raise _too_many(
                    where, f"at most {chars} characters a text", "TUNESERVE_MAX_TEXT_CHARS"
                )

    async def _who(self, request: Request) -> Principal:
        """The caller, from its API key (401 without a valid one while auth is on)."""
        header = request.headers.get("authorization")
        who = self.auth.cached(header)  # a key seen in the last seconds: no database
        if who is None:

            def check():
                self._database()
                return self.auth.principal(header)

            who = await asyncio.to_thread(check)
        return who

    async def _owners_of(self, model_ids: list[str]) -> dict[str, str | None]:
        """The tenant each model belongs to (None: everyone's). Only ids jobs make (`ft:`)
        can belong to a tenant; what the database says about them is kept."""
        out: dict[str, str | None] = {}
        ask = []
        for mid in model_ids:
            cached = self._owners.get(mid)
            if not mid.startswith("ft:"):
                out[mid] = None
            elif cached and (cached[2] or time.monotonic() - cached[0] < auth.CACHE_S):
                out[mid] = cached[1]
            else:
                ask.append(mid)
        if ask:
            found = await self._in_db(jobs.model_owners, ask)
            for mid in ask:
                made_by_job = mid in found
                self._owners[mid] = (time.monotonic(), found.get(mid), made_by_job)
                out[mid] = found.get(mid)
        return out

    async def _visible(self, who: Principal, model_ids: list[str]) -> list[str]:
        if who.scope is None:
            return model_ids
        owners = await self._owners_of(model_ids)
        return [m for m in model_ids if owners[m] in (None, who.scope)]

    async def _check_model(self, who: Principal, model_id: str) -> None:
        """A model of another tenant does not exist for this caller."""
        if who.scope is None or await self._visible(who, [model_id]):
            return
        known = await self._visible(who, sorted(m.id for m in self.registry.list()))
        raise ModelNotFound(
            f"model {model_id!r} does not exist; available models: {', '.join(known) or 'none'} "
            "(GET /v1/models lists them)",
            param="model",
        )

    async def _call(self, model_id: str, method: str, request, tokens: int) -> list:
        """One request's results from the model replicas. Requests for a model that arrive
        while `calls_in_flight` calls for it are out go together in the next call, so under
        load a replica gets a few large calls instead of many small ones (and one hot model
        cannot take the calls of the others: each model has its own)."""
        sender = self._senders.get((model_id, method))
        if sender is None:
            sender = self._senders[(model_id, method)] = Batcher(
                functools.partial(self._send, method),
                max_tokens=self.settings["batch_tokens"],
                concurrency=self._calls_in_flight,
                max_queued=self.settings["model_max_queued"],
            )
        try:
            return await sender.submit(model_id, request, tokens)
        except QueueFull:
            raise Overloaded(
                f"model {model_id!r} has more requests waiting than it queues; retry shortly",
                retry_after_s=1.0,
                param="model",
            ) from None

    async def _ready(self, model_id: str) -> bool:
        try:
            return await self.models.options(multiplexed_model_id=model_id).ready.remote()
        except Exception as exc:
            raise _from_replica(exc, model_id) from exc

    async def _send(self, method: str, model_id: str, batch: list[Pending]) -> list:
        handle = getattr(self.models.options(multiplexed_model_id=model_id), method)
        try:
            return await handle.remote([p.item for p in batch])
        except Exception as exc:  # whatever a replica or Serve raised: a 503 naming the model
            raise _from_replica(exc, model_id) from exc

    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["inference"])
    async def classify(
        self,
        who: Caller,
        request: Request,
        body: ClassifyRequest,
        serve_multiplexed_model_id: ModelHeader = None,
    ) -> ClassifyResponse:
        """Classify texts: with a fine-tuned classifier's own labels, or zero-shot with a
        base encoder and the candidate `labels` given in the request."""
        model_id = request.state.model_id = _model_id(body.model, serve_multiplexed_model_id)
        await self._check_model(who, model_id)
        model = self.registry.for_endpoint(model_id, "text-classification", labels=body.labels)
        texts = body.texts()
        self._limit_inputs(texts, "inputs")
        limit = self.settings["max_labels"]
        if body.labels is not None and len(body.labels) > limit:
            raise _too_many("labels", f"at most {limit} labels", "TUNESERVE_MAX_LABELS")
        if body.template is not None and not model.zero_shot:
            raise InvalidRequest(
                "`template` is for zero-shot classification with a base encoder", param="template"
            )
        tokens = approx_tokens(texts, MAX_ITEM_TOKENS)
        results = await self._call(
            model_id, "classify", (texts, body.labels, body.template), tokens
        )
        # the replica's results are already the response's shape: skip re-validating them
        return JSONResponse({"model": model_id, "results": results})

    @app.post("/v1/qa", response_model=QAResponse, tags=["inference"])
    async def qa(
        self,
        who: Caller,
        request: Request,
        body: QARequest,
        serve_multiplexed_model_id: ModelHeader = None,
    ) -> QAResponse:
        """Answer questions from a context: a token span with a fine-tuned QA model, or the
        sentence of the context closest to the question with a base encoder."""
        model_id = request.state.model_id = _model_id(body.model, serve_multiplexed_model_id)
        await self._check_model(who, model_id)
        self.registry.for_endpoint(model_id, "extractive-qa")
        pairs = [(p.question, p.context) for p in body.pairs()]
        if body.inputs is not None:
            self._limit_inputs([t for pair in pairs for t in pair], "inputs", per=2)
        else:
            for name, value in (("question", body.question), ("context", body.context)):
                self._limit_inputs([value], name, single=True)
        tokens = approx_tokens([q + c for q, c in pairs], MAX_ITEM_TOKENS)
        results = await self._call(model_id, "answer", pairs, tokens)
        return JSONResponse({"model": model_id, "results": results})

    @app.get("/v1/models", response_model=ModelList, tags=["models"])
    async def list_models(self, who: Caller) -> ModelList:
        models = self.registry.list()
        shown = set(await self._visible(who, [m.id for m in models]))
        return ModelList(data=[view(m) for m in models if m.id in shown])

    @app.get("/v1/models/{model_id}", response_model=ModelView, tags=["models"])
    async def get_model(self, who: Caller, model_id: str) -> ModelView:
        await self._check_model(who, model_id)
        manifest = self.registry.resolve(model_id).manifest
        shown = view(manifest.model_copy(update={"id": model_id}))
        try:
            shown.job = await self._in_db(jobs.lineage, model_id)
        except Exception as exc:  # the model serves without its record; say nothing wrong
            log.warning("no lineage for %s: %s", model_id, type(exc).__name__)
        return shown

    # ------------------------------------------------------------------------ files

    @app.post("/v1/files", tags=["files"])
    async def upload_file(
        self,
        who: Caller,
        request: Request,
        file: Annotated[UploadFile, FormFile(description="the dataset")],
        purpose: Annotated[str, Form(description="`fine-tune` or `pretrain`")],
    ) -> dict:
        """Upload a dataset: classification JSON Lines or SQuAD JSON (purpose `fine-tune`), or
        text to pretrain on (purpose `pretrain`). It is checked whole before it is accepted."""
        limit = self.settings["max_upload_bytes"]
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit + 65536:  # the multipart envelope is a little larger than the file
            raise TooLarge(
                f"the upload is {declared} bytes; the limit is {limit} "
                "(setting TUNESERVE_MAX_UPLOAD_BYTES)",
                param="file",
            )
        record = await self._in_db(
            uploads.store,
            self.home,
            file.file,
            file.filename,
            purpose,
            max_bytes=limit,
            tenant=who.tenant,
        )
        return uploads.view(record)

    @app.get("/v1/files", tags=["files"])
    async def list_files(
        self,
        who: Caller,
        purpose: str | None = None,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> dict:
        rows, more = await self._in_db(
            uploads.listing, tenant=who.scope, purpose=purpose, after=after, limit=limit
        )
        return _page([uploads.view(f) for f in rows], more)

    @app.get("/v1/files/{file_id}", tags=["files"])
    async def get_file(self, who: Caller, file_id: str) -> dict:
        return uploads.view(await self._in_db(uploads.get, file_id, who.scope))

    @app.get("/v1/files/{file_id}/content", tags=["files"])
    async def file_content(self, who: Caller, file_id: str) -> FileResponse:
        f = await self._in_db(uploads.get, file_id, who.scope)
        return FileResponse(f.path, filename=f.filename, media_type="application/octet-stream")

    @app.delete("/v1/files/{file_id}", tags=["files"])
    async def delete_file(self, who: Caller, file_id: str) -> dict:
        await self._in_db(uploads.delete, file_id, who.scope)
        return {"id": file_id, "object": "file", "deleted": True}

    # ------------------------------------------------------------------------ jobs

    @app.post("/v1/fine_tuning/jobs", tags=["jobs"])
    async def create_job(self, who: Caller, body: CreateJobRequest) -> dict:
        """Fine-tune (or pretrain, with `task: masked-lm`) from an uploaded file. The job is
        queued at once and runs as a Ray Job; follow it with its events."""
        if body.model != "scratch":
            await self._check_model(who, body.model)
        job = await self._in_db(
            jobs.create,
            self.registry,
            body,
            tenant=who.scope,
            max_unfinished=self.settings.get("max_jobs_per_tenant") if who.scope else None,
            home=self.home,
            default_workers=self.settings["job_workers"],
            cpus_per_worker=self.settings["job_cpus_per_worker"],
            use_gpu=self.settings["job_use_gpu"],
        )
        return jobs.view(job)

    @app.get("/v1/fine_tuning/jobs", tags=["jobs"])
    async def list_jobs(
        self,
        who: Caller,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict:
        rows, more = await self._in_db(jobs.listing, tenant=who.scope, after=after, limit=limit)
        return _page([jobs.view(j) for j in rows], more)

    @app.get("/v1/fine_tuning/jobs/{job_id}", tags=["jobs"])
    async def get_job(self, who: Caller, job_id: str) -> dict:
        return jobs.view(await self._in_db(jobs.get, job_id, who.scope))

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel", tags=["jobs"])
    async def cancel_job(self, who: Caller, job_id: str) -> dict:
        return jobs.view(await self._in_db(jobs.cancel, job_id, who.scope))

    @app.get("/v1/fine_tuning/jobs/{job_id}/events", tags=["jobs"])
    async def job_events(
        self,
        who: Caller,
        job_id: str,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    ) -> dict:

        def read(db):
            job = jobs.get(db, job_id, who.scope)
            return jobs.events(db, job, after=after, limit=limit)

        rows, more = await self._in_db(read)
        return _page([jobs.event_view(e) for e in rows], more)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints", tags=["jobs"])
    async def job_checkpoints(
        self,
        who: Caller,
        job_id: str,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> dict:

        def read(db):
            job = jobs.get(db, job_id, who.scope)
            return job, *jobs.checkpoints(db, job, after=after, limit=limit)

        job, rows, more = await self._in_db(read)
        return _page([jobs.checkpoint_view(c, job) for c in rows], more)

    # ------------------------------------------------------------------------ API keys

    @app.post("/v1/admin/keys", tags=["admin"])
    async def create_key(self, who: Caller, body: ApiKeyRequest) -> dict:
        """A new API key for a tenant (admin key only). The key is in this response only."""
        _require_admin(who)
        row, key = await self._in_db(auth.create_key, body.tenant)
        self.auth.forget()
        log.info("API key %s created for tenant %s", row.id, row.tenant)
        return {**auth.view(row), "key": key}

    @app.get("/v1/admin/keys", tags=["admin"])
    async def list_keys(
        self,
        who: Caller,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict:
        _require_admin(who)
        rows, more = await self._in_db(auth.list_keys, after=after, limit=limit)
        return _page([auth.view(r) for r in rows], more)

    @app.delete("/v1/admin/keys/{key_id}", tags=["admin"])
    async def revoke_key(self, who: Caller, key_id: str) -> dict:
        """Revoke a key: it stops working at once."""
        _require_admin(who)
        row = await self._in_db(auth.revoke_key, key_id)
        self.auth.forget()
        log.info("API key %s of tenant %s revoked", row.id, row.tenant)
        return {**auth.view(row), "deleted": True}

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
            await asyncio.wait_for(self._ready(BASE_MODEL_ID), timeout=READY_TIMEOUT_S)
        except (ServiceError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, ServiceError) else "timed out loading base"
            return JSONResponse(
                errors.error_body("not_ready", f"base model not ready: {reason}"), 503
            )
        try:
            await asyncio.wait_for(asyncio.to_thread(lambda: self._database().ping()), 10)
        except Exception as exc:
            return JSONResponse(
                errors.error_body(
                    "not_ready", f"the database cannot be reached: {type(exc).__name__}"
                ),
                503,
            )
        return {"status": "ready", "base": self.registry.base_model}
