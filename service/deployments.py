"""The model deployment: replicas that hold ONNX Runtime models, multiplexed by model id.

A request names its model with `handle.options(multiplexed_model_id=...)`; Ray routes it to a
replica that already has that model loaded when one exists. Each replica keeps the most
recently used models (LRU, size from settings) and loads a missing one from its artifact.
Inference runs in a worker thread, so the replica's event loop keeps accepting requests while
a model loads or runs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from pathlib import Path

from ray import serve
from sqlalchemy.exc import OperationalError

from service import runtime
from service.batching import Batcher, Pending
from service.registry import BASE_MODEL_ID, Registry
from service.runtime import ClassifyItem, LoadedModel, approx_tokens, load_model

# a text's estimated tokens are capped here (truncation and QA windows bound the real ones)
MAX_ITEM_TOKENS = 1024

log = logging.getLogger("ray.serve")


def bind_replica_grpc_to_node_ip() -> None:
    """Make this replica's inter-deployment gRPC server listen on the node's address only.

    Ray Serve 2.60 binds it to ``[::]:0``, every interface, unauthenticated, with no setting to
    change it. Routers dial the replica at its node address, which is loopback on a local Ray
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) and the pod IP on a cluster, so binding exactly that
    address changes nothing for them. Call from a deployment's constructor: Serve starts that
    server after the constructor returns.
    """
    import ray
    from ray.serve._private import replica

    original = replica.add_port_to_grpc_server
    if getattr(original, "_tuneserve_bound", False):
        return
    node_ip = ray.util.get_node_ip_address()
    host = f"[{node_ip}]" if ":" in node_ip else node_ip

    def add_port(server, address: str):
        if address.startswith("[::]:"):
            address = f"{host}:{address.rsplit(':', 1)[1]}"
        return original(server, address)

    add_port._tuneserve_bound = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port


LATENCY_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]


class ReplicaMetrics:
    """Our metrics of a model replica. Ray Serve adds its own (requests, latency, and the
    multiplexed-model loads, unloads and lookups); all are exported by the node's Ray exporter
    with the prefix `ray_` and read at the ingress's /metrics."""

    def __init__(self):
        from ray.serve.metrics import Histogram

        keys = ("model", "endpoint")

        def hist(name: str, description: str, boundaries: list[float]) -> Histogram:
            return Histogram(name, description=description, boundaries=boundaries, tag_keys=keys)

        self.queue = hist(
            "tuneserve_queue_seconds", "time a request waited for its batch", LATENCY_S
        )
        self.tokenize = hist("tuneserve_tokenize_seconds", "tokenizing one batch", LATENCY_S)
        self.inference = hist(
            "tuneserve_inference_seconds", "ONNX Runtime time of one batch", LATENCY_S
        )
        self.batch_requests = hist(
            "tuneserve_batch_requests", "requests in one batch", [1, 2, 4, 8, 16, 32, 64]
        )
        self.batch_tokens = hist(
            "tuneserve_batch_tokens",
            "estimated tokens in one batch",
            [64, 256, 1024, 4096, 16384, 65536],
        )


@serve.deployment(name="models")
class ModelServer:
    async def __init__(
        self,
        home: str,
        base_model: str,
        *,
        threads: int = 1,
        max_models: int = 4,
        max_batch_tokens: int = 4096,
        batch_tokens: int = 65536,
        batch_wait_s: float = 0.0,
    ):
        bind_replica_grpc_to_node_ip()
        self.registry = Registry(Path(home), base_model)
        self.threads = threads
        self.max_batch_tokens = max_batch_tokens
        self._batches: collections.deque[tuple[int, int]] = collections.deque(maxlen=1000)
        self._loads = 0  # model loads: more than the models used means the LRU evicted some
        self.metrics = ReplicaMetrics()
        self._batcher = Batcher(
            self._run_batch, max_tokens=max(batch_tokens, MAX_ITEM_TOKENS), wait_s=batch_wait_s
        )

        # The LRU size comes from settings, so the multiplexed loader is wired up here rather
        # than with a decorator on the class (Ray detects it on the instance).
        async def load(model_id: str) -> LoadedModel:
            return await self._load(model_id)

        self.get_model = serve.multiplexed(max_num_models_per_replica=max_models)(load)
        # Load the base before taking traffic, so the first request does not pay for it. A
        # broken base must not stop the replica (other models still serve): /readyz says so.
        try:
            await self.get_model(BASE_MODEL_ID)
        except Exception as exc:
            log.error("could not preload the base model: %r", exc)

    async def _load(self, model_id: str) -> LoadedModel:
        resolved = self.registry.resolve(model_id)
        self._loads += 1
        log.info("loading model %s from %s", model_id, resolved.folder)
        return await asyncio.to_thread(
            load_model,
            resolved.folder,
            threads=self.threads,
            max_batch_tokens=self.max_batch_tokens,
        )

    async def _model(self) -> LoadedModel:
        return await self.get_model(serve.get_multiplexed_model_id())

    async def ready(self) -> bool:
        """Load the request's model (the base, from /readyz) and say it is ready."""
        await self._model()
        return True

    # Batching (service/batching.py): a call that finds the replica idle runs at once; calls
    # that arrive meanwhile form the next batch, per model and endpoint, bounded by estimated
    # tokens (the budget from settings; one call alone may exceed it). A call carries one or
    # more requests: the ingress sends together the requests that arrived while its earlier
    # calls for the model were out.
    async def _run_batch(self, key: tuple[str, str], batch: list[Pending]) -> list[list]:
        model_id, endpoint = key
        model = await self.get_model(model_id)
        requests = [r for p in batch for r in p.item]
        fn = model.classify_many if endpoint == "classify" else model.answer_many
        tags = {"model": model_id, "endpoint": endpoint}
        start = time.perf_counter()
        tokens = sum(p.tokens for p in batch)
        self._batches.append((len(requests), tokens))
        m = self.metrics
        for p in batch:
            m.queue.observe(start - p.arrived, tags=tags)
        m.batch_requests.observe(len(requests), tags=tags)
        m.batch_tokens.observe(tokens, tags=tags)

        def timed():
            # through the module: Serve pickles this class by value, a thread-local it cannot
            t = runtime.timings
            t.reset()
            out = fn(requests)
            return out, t.tokenize, t.inference

        out, tokenize_s, inference_s = await asyncio.to_thread(timed)
        m.tokenize.observe(tokenize_s, tags=tags)
        m.inference.observe(inference_s, tags=tags)
        per_call, i = [], 0
        for p in batch:
            per_call.append(out[i : i + len(p.item)])
            i += len(p.item)
        return per_call

    async def _submit(self, endpoint: str, requests: list, tokens: int) -> list:
        model_id = serve.get_multiplexed_model_id()
        # load (or touch) the model before joining the queue: one batch runs at a time, and
        # a load inside it would hold up the models already loaded
        await self.get_model(model_id)
        return await self._batcher.submit((model_id, endpoint), requests, tokens)

    async def classify(self, requests: list[ClassifyItem]) -> list[list[dict]]:
        """Classify each request: (texts, labels, template); one result list a request."""
        tokens = sum(approx_tokens(texts, MAX_ITEM_TOKENS) for texts, _, _ in requests)
        return await self._submit("classify", requests, tokens)

    async def answer(self, requests: list[list[tuple[str, str]]]) -> list[list[dict]]:
        """Answer each request: its (question, context) pairs; one result list a request."""
        tokens = sum(
            approx_tokens([q + c for q, c in pairs], MAX_ITEM_TOKENS) for pairs in requests
        )
        return await self._submit("qa", requests, tokens)

    def stats(self) -> dict:
        """This replica's recent batches (requests and estimated tokens in each)."""
        sizes = [n for n, _ in self._batches]
        with open("/proc/self/statm") as f:  # resident pages, now (not the peak)
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {
            "pid": os.getpid(),
            "loads": self._loads,
            "rss_bytes": rss,
            "batches": len(sizes),
            "max_requests": max(sizes, default=0),
            "recent": list(self._batches)[-20:],
        }


@serve.deployment(name="jobs", num_replicas=1, ray_actor_options={"num_cpus": 0})
class JobRunnerServer:
    """The one replica that moves jobs along (service.jobs.JobRunner) every `poll_s`.

    Serve restarts it if it dies, and a new one carries on from the database. Its health check
    fails when the loop has stopped, so a stuck runner is replaced too.
    """

    async def __init__(
        self, home: str, db_url: str, *, max_running: int, poll_s: float, address: str | None
    ):
        bind_replica_grpc_to_node_ip()
        from service.db import Database
        from service.jobs import JobRunner
        from service.settings import replica_db_url

        # the schema is brought up to date by the loop's first tick that reaches the database:
        # a database that is down when the service starts must not stop it starting (the API
        # answers 503 for what needs it, and inference serves)
        self.db = Database(replica_db_url(db_url))
        self._migrated = False
        self.runner = JobRunner(self.db, Path(home), max_running=max_running, address=address)
        self.poll_s = poll_s
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                if not self._migrated:
                    await asyncio.to_thread(self.db.upgrade)
                    self._migrated = True
                await asyncio.to_thread(self.runner.tick)
            except RuntimeError as exc:
                if "after shutdown" in str(exc):  # the replica is stopping
                    return
                log.exception("job runner tick failed")
            except OperationalError as exc:  # the database is away: try again next tick
                log.warning(
                    "job runner: the database cannot be reached (%s)", type(exc.orig).__name__
                )
            except Exception:
                log.exception("job runner tick failed")
            await asyncio.sleep(self.poll_s)

    async def check_health(self) -> None:
        if self._task.done():
            raise RuntimeError("the job loop has stopped")
