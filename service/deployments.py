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
from pathlib import Path

from ray import serve

from service.registry import BASE_MODEL_ID, Registry
from service.runtime import ClassifyItem, LoadedModel, approx_tokens, load_model

# a text's estimated tokens are capped here (truncation and QA windows bound the real ones)
MAX_ITEM_TOKENS = 1024

log = logging.getLogger("ray.serve")


def bind_replica_grpc_to_node_ip() -> None:
    """Make this replica's inter-deployment gRPC server listen on the node's address only.

    Ray Serve 2.60 binds it to ``[::]:0``, every interface, unauthenticated, with no setting to
    change it. Routers dial the replica at its node address, which is 127.0.0.1 on a local Ray
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
        batch_wait_s: float = 0.01,
    ):
        bind_replica_grpc_to_node_ip()
        self.registry = Registry(Path(home), base_model)
        self.threads = threads
        self.max_batch_tokens = max_batch_tokens
        self._batches: collections.deque[tuple[int, int]] = collections.deque(maxlen=1000)
        self._loads = 0  # model loads: more than the models used means the LRU evicted some
        for handler in (self._classify_batch, self._answer_batch):
            handler.set_max_batch_size(max(batch_tokens, MAX_ITEM_TOKENS * 64))
            handler.set_batch_wait_timeout_s(batch_wait_s)

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

    # Requests for one model that arrive together run as one batch (Ray splits batches by
    # multiplexed model id). The batch is bounded by tokens, not requests: batch_size_fn
    # estimates each request's tokens, and max_batch_size (set from settings in __init__) is
    # the budget. One request must fit: the budget default covers 64 texts of max length.
    @serve.batch(
        max_batch_size=MAX_ITEM_TOKENS * 64,
        batch_wait_timeout_s=0.01,
        batch_size_fn=lambda items: sum(approx_tokens(i[0], MAX_ITEM_TOKENS) for i in items),
    )
    async def _classify_batch(self, items: list[ClassifyItem]) -> list[list[dict]]:
        model = await self._model()
        self._record_batch(items, [t for texts, _, _ in items for t in texts])
        return await asyncio.to_thread(model.classify_many, items)

    @serve.batch(
        max_batch_size=MAX_ITEM_TOKENS * 64,
        batch_wait_timeout_s=0.01,
        batch_size_fn=lambda items: sum(
            approx_tokens([q + c for q, c in i], MAX_ITEM_TOKENS) for i in items
        ),
    )
    async def _answer_batch(self, items: list[list[tuple[str, str]]]) -> list[list[dict]]:
        model = await self._model()
        self._record_batch(items, [q + c for pairs in items for q, c in pairs])
        return await asyncio.to_thread(model.answer_many, items)

    def _record_batch(self, items: list, texts: list[str]) -> None:
        self._batches.append((len(items), approx_tokens(texts, MAX_ITEM_TOKENS)))

    async def classify(
        self, texts: list[str], labels: list[str] | None, template: str | None
    ) -> list[dict]:
        return await self._classify_batch((texts, labels, template))

    async def answer(self, pairs: list[tuple[str, str]]) -> list[dict]:
        return await self._answer_batch(pairs)

    def stats(self) -> dict:
        """This replica's recent batches (requests and estimated tokens in each)."""
        sizes = [n for n, _ in self._batches]
        return {
            "loads": self._loads,
            "batches": len(sizes),
            "max_requests": max(sizes, default=0),
            "recent": list(self._batches)[-20:],
        }
