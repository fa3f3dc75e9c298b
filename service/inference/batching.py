"""Opportunistic batching for a model replica: no request waits for company.

A request that finds the replica idle runs at once, alone. Requests that arrive while a batch
runs queue up, and when it ends they go together as the next batch: all the queued requests
for the same model and endpoint, up to a budget of estimated tokens. Under light load every
request runs immediately; under heavy load batches grow to whatever arrived during the last
one, which is what keeps the replica busy. A fixed batch window (wait N ms for more) costs
every request at light load those N ms and, under heavy load, forms batches before the
previous one has finished, so they come out smaller than the queue.

One batch runs at a time per replica: a replica has one ONNX Runtime thread per core it owns,
and two batches at once would only share them. Pure asyncio; nothing here knows Ray.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

# a text's estimated tokens are capped here (truncation and QA windows bound the real ones)
MAX_ITEM_TOKENS = 1024


def approx_tokens(texts: Sequence[str], max_tokens: int = MAX_ITEM_TOKENS) -> int:
    """Tokens a request will take, estimated from characters (about 4 a token in English) and
    capped per text by truncation; cheap enough to run before tokenizing."""
    return sum(min(len(t) // 4 + 2, max_tokens) for t in texts)


@dataclass
class Pending:
    key: Hashable  # requests share a batch only with requests of the same key
    item: Any
    tokens: int
    arrived: float = field(default_factory=time.perf_counter)
    future: asyncio.Future = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


RunBatch = Callable[[Hashable, list[Pending]], Awaitable[list[Any]]]


class QueueFull(Exception):
    """More requests wait than the batcher may queue."""


class Batcher:
    """`await submit(key, item, tokens)` returns that item's result from `run(key, batch)`,
    which gets the batch's pending requests and returns one result each, in order.

    At most `concurrency` batches run at once (a model replica: 1; the ingress, calling many
    replicas: more); `max_queued` bounds the requests waiting (QueueFull beyond it)."""

    def __init__(
        self,
        run: RunBatch,
        *,
        max_tokens: int,
        wait_s: float = 0.0,
        concurrency: int = 1,
        max_queued: int | None = None,
    ):
        self.run, self.max_tokens, self.wait_s = run, max_tokens, wait_s
        self.concurrency, self.max_queued = concurrency, max_queued
        self._queue: collections.deque[Pending] = collections.deque()
        self._running = 0
        self._tasks: set[asyncio.Task] = set()
        self._kick_scheduled = False

    async def submit(self, key: Hashable, item: Any, tokens: int) -> Any:
        if self.max_queued is not None and len(self._queue) >= self.max_queued:
            raise QueueFull(f"{len(self._queue)} requests are waiting already")
        pending = Pending(key, item, tokens)
        self._queue.append(pending)
        if self.wait_s and self._running == 0:
            # idle: give the first request `wait_s` to find company
            if not self._kick_scheduled:
                self._kick_scheduled = True
                asyncio.get_running_loop().call_later(self.wait_s, self._scheduled_kick)
        else:
            self._kick()
        return await pending.future

    def take(self) -> list[Pending]:
        """The next batch: the oldest live request and every queued one with its key that
        fits the token budget (one request alone may exceed it). The rest keep their order."""
        batch: list[Pending] = []
        rest: collections.deque[Pending] = collections.deque()
        tokens = 0
        while self._queue:
            p = self._queue.popleft()
            if p.future.done():  # its caller went away
                continue
            if not batch or (p.key == batch[0].key and tokens + p.tokens <= self.max_tokens):
                batch.append(p)
                tokens += p.tokens
            else:
                rest.append(p)
        self._queue = rest
        return batch

    def _scheduled_kick(self) -> None:
        self._kick_scheduled = False
        self._kick()

    def _kick(self) -> None:
        while self._running < self.concurrency and self._queue:
            batch = self.take()
            if not batch:
                return
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)  # a reference, so the task is not collected mid-run
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Pending]) -> None:
        """Run one batch and answer every caller in it, whatever happens: when the batch fails,
        each request runs again alone, so that only the one that caused it gets the error."""
        try:
            await self._answer(batch, isolate=len(batch) > 1)
        finally:
            self._running -= 1
            self._kick()

    async def _answer(self, batch: list[Pending], *, isolate: bool) -> None:
        try:
            results = await self.run(batch[0].key, batch)
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except asyncio.CancelledError:
            _fail(batch, RuntimeError("the batch was cancelled: the replica is stopping"))
            raise
        except BaseException as exc:  # a tokenizer's panic is a BaseException: caught too
            if not isolate:
                _fail(batch, exc)
                return
            for p in batch:
                if not p.future.done():
                    await self._answer([p], isolate=False)
        else:
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)


def _fail(batch: list[Pending], exc: BaseException) -> None:
    # a future takes an Exception: anything else (a panic) is carried as one
    error = exc if isinstance(exc, Exception) else RuntimeError(f"{type(exc).__name__}: {exc}")
    for p in batch:
        if not p.future.done():
            p.future.set_exception(error)
