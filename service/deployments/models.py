"""The model deployment (replicas holding ONNX Runtime models, multiplexed by model id) and
`ModelClient`, how the ingress calls it.

A request names its model with `handle.options(multiplexed_model_id=...)`; Ray routes it to a
replica that already holds that model when one exists. Each replica keeps the most recently
used models (LRU, size from settings) and loads a missing one from its artifact, in a worker
thread, so the replica's event loop keeps accepting requests while a model loads or runs.

Batching happens twice (inference/batching.py): at the ingress, the requests for a model that
arrive while its calls are out travel together in the next call; in the replica, the calls
that arrive while a batch runs form the next batch.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Hashable
from pathlib import Path
from typing import cast

from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from service.deployments.metrics import ReplicaMetrics
from service.deployments.network import bind_replica_grpc_to_node_ip
from service.errors import ModelUnavailable, Overloaded, ServiceError
from service.inference import session as inference_session
from service.inference.batching import MAX_ITEM_TOKENS, Batcher, Pending, QueueFull
from service.inference.heads import HeadCache, HeadStats
from service.inference.models import LoadedModel, load_model
from service.inference.precision import Device
from service.inference.requests import Refused
from service.registry import BASE_MODEL_ID, Registry

log = logging.getLogger("ray.serve")

# what a call to a replica carries: requests, each with its estimated tokens
Call = list[tuple[object, int]]


@serve.deployment(name="models")
class ModelServer:
    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        home: str,
        base_model: str,
        *,
        threads: int = 1,
        tokenizer_threads: int | None = None,
        max_models: int = 4,
        max_heads: int = 10_000,
        max_head_bytes: int = 256 << 20,
        max_batch_tokens: int = 4096,
        batch_tokens: int = 65536,
        batch_wait_s: float = 0.0,
        device: Device = "auto",
        precision_budget: float = 1.0,
        min_encoder_cosine: float = 0.95,
    ):
        bind_replica_grpc_to_node_ip()
        # The fast tokenizer's Rust thread pool is as wide as the machine unless told; a
        # replica's share of the cores is its ONNX Runtime threads (read when the pool starts,
        # on the first batch encoded in this process). bench/request_cost.py measures it.
        os.environ["RAYON_NUM_THREADS"] = str(tokenizer_threads or threads)
        self.registry = Registry(Path(home), base_model)
        # which precision and device each model is served with (inference/precision.py)
        self.load_options = functools.partial(
            load_model,
            threads=threads,
            max_batch_tokens=max_batch_tokens,
            device=device,
            budget=precision_budget,
            min_cosine=min_encoder_cosine,
        )
        self._sizes: collections.deque[tuple[int, int]] = collections.deque(maxlen=1000)
        self._batches = 0  # batches run (monotonic)
        self._loads = 0  # model loads: more than the models used means the LRU evicted some
        self.metrics = ReplicaMetrics()
        self.heads = HeadCache(self.registry.resolve, max_heads=max_heads, max_bytes=max_head_bytes)
        self._reported = HeadStats()  # what the metrics have counted of self.heads.stats
        self._gauges = self.metrics.keep_head_gauges(self.heads.snapshot)  # held: not collected
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
        return await asyncio.to_thread(self.load_options, resolved.folder)

    async def ready(self) -> bool:
        """Load the request's model (the base, from /readyz) and say it is ready."""
        await self.get_model(serve.get_multiplexed_model_id())
        return True

    async def classify(self, call: Call) -> list[list[dict]]:
        """Classify each request, (texts, labels, template); one result list a request."""
        return await self._submit("classify", call)

    async def answer(self, call: Call) -> list[list[dict]]:
        """Answer each request, its (question, context) pairs; one result list a request."""
        return await self._submit("qa", call)

    async def embed(self, call: Call) -> list[dict]:
        """Embed each request's inputs; per request its vectors and tokens."""
        return await self._submit("embed", call)

    async def fill_mask(self, call: Call) -> list[list]:
        """Fill each request's masks; per request, per text, per mask its top tokens."""
        return await self._submit("fill_mask", call)

    async def _submit(self, endpoint: str, call: Call) -> list:
        model_id = serve.get_multiplexed_model_id()
        # load (or touch) the model before joining the queue: one batch runs at a time, and
        # a load inside it would hold up the models already loaded
        await self.get_model(model_id)
        requests = [item for item, _ in call]
        return await self._batcher.submit((model_id, endpoint), requests, sum(t for _, t in call))

    async def _run_batch(self, key: Hashable, batch: list[Pending]) -> list[list]:
        """One batch: the calls that arrived while the last one ran, for one model and
        endpoint, run in one worker thread; one result list per call."""
        model_id, endpoint = cast(tuple[str, str], key)
        model = await self.get_model(model_id)
        requests = [r for p in batch for r in p.item]
        self._observe(model_id, endpoint, batch, len(requests))
        if endpoint == "classify":
            fn = functools.partial(model.classify_many, heads=self.heads)
        elif endpoint == "embed":
            fn = model.embed_many
        elif endpoint == "fill_mask":
            fn = model.fill_mask_many
        else:
            fn = model.answer_many

        def timed():
            # through the module: Serve pickles this class by value, a thread-local it cannot
            t = inference_session.timings
            t.reset()
            return fn(requests), t.tokenize, t.inference

        try:
            out, tokenize_s, inference_s = await asyncio.to_thread(timed)
        finally:
            self._count_heads(model_id)
        tags = {"model": model_id, "endpoint": endpoint}
        self.metrics.encoder_passes.inc(tags=tags)
        self.metrics.tokenize.observe(tokenize_s, tags=tags)
        self.metrics.inference.observe(inference_s, tags=tags)
        per_call, i = [], 0
        for p in batch:
            per_call.append(out[i : i + len(p.item)])
            i += len(p.item)
        return per_call

    def _count_heads(self, base: str) -> None:
        """The head cache's counters since they were last reported, as metrics (its gauges are
        set by a loop: ReplicaMetrics.keep_head_gauges)."""
        now, was, tags = self.heads.snapshot(), self._reported, {"model": base}
        for name in ("hits", "loads", "applied"):
            if getattr(now, name) > getattr(was, name):
                getattr(self.metrics, f"head_{name}").inc(
                    getattr(now, name) - getattr(was, name), tags=tags
                )
        self._reported = now

    def _observe(self, model_id: str, endpoint: str, batch: list[Pending], n: int) -> None:
        tags = {"model": model_id, "endpoint": endpoint}
        start, tokens = time.perf_counter(), sum(p.tokens for p in batch)
        self._batches += 1
        self._sizes.append((n, tokens))
        for p in batch:
            self.metrics.queue.observe(start - p.arrived, tags=tags)
        self.metrics.batch_requests.observe(n, tags=tags)
        self.metrics.batch_tokens.observe(tokens, tags=tags)

    def stats(self) -> dict:
        """This replica's batches so far (a count) and the last ones (requests and estimated
        tokens in each), its model loads and resident memory."""
        with open("/proc/self/statm") as f:  # resident pages, now (not the peak)
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {
            "pid": os.getpid(),
            "loads": self._loads,
            "heads": dataclasses.asdict(self.heads.snapshot()),
            "rss_bytes": rss,
            "batches": self._batches,
            "recent": list(self._sizes),
        }


class ModelClient:
    """How the ingress calls the model replicas. Requests for a model that arrive while
    `calls_in_flight` calls for it are out go together in the next call, so under load a
    replica gets a few large calls instead of many small ones, and one hot model cannot take
    the calls of the others (each model and endpoint has its own). What a replica raises
    becomes an error the client can act on."""

    def __init__(
        self,
        handle: DeploymentHandle,
        *,
        calls_in_flight: int,
        batch_tokens: int,
        max_queued: int,
        timeout_s: float = 60.0,
    ):
        self.handle, self.timeout_s = handle, timeout_s
        self.calls_in_flight, self.batch_tokens = calls_in_flight, batch_tokens
        self.max_queued = max_queued
        self._senders: dict[tuple[str, str], Batcher] = {}

    async def call(self, model_id: str, method: str, request: object, tokens: int) -> list:
        """One request's results from the replicas (`method`: classify or answer)."""
        sender = self._senders.get((model_id, method))
        if sender is None:
            sender = self._senders[(model_id, method)] = Batcher(
                functools.partial(self._send, method),
                max_tokens=self.batch_tokens,
                concurrency=self.calls_in_flight,
                max_queued=self.max_queued,
            )
        try:
            call = sender.submit(model_id, (request, tokens), tokens)
            result = await asyncio.wait_for(call, self.timeout_s)
        except TimeoutError:
            raise ModelUnavailable(
                f"model {model_id!r} did not answer within {self.timeout_s:g} s "
                "(setting TUNESERVE_MODEL_CALL_TIMEOUT_S); retry",
                param="model",
            ) from None
        except QueueFull:
            raise Overloaded(
                f"model {model_id!r} has more requests waiting than it queues; retry shortly",
                retry_after_s=1.0,
                param="model",
            ) from None
        if isinstance(result, Refused):
            raise result.error()
        return result

    async def ready(self, model_id: str) -> bool:
        try:
            return await self.handle.options(multiplexed_model_id=model_id).ready.remote()
        except Exception as exc:
            raise from_replica(exc, model_id) from exc

    async def _send(self, method: str, model_id: str, batch: list[Pending]) -> list:
        handle = getattr(self.handle.options(multiplexed_model_id=model_id), method)
        try:
            return await handle.remote([p.item for p in batch])
        except Exception as exc:  # whatever a replica or Serve raised: a 503 naming the model
            raise from_replica(exc, model_id) from exc


def from_replica(exc: Exception, model_id: str) -> ServiceError:
    """What a model replica (or Serve on the way) raised, as the client sees it."""
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
