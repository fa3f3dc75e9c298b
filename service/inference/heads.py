"""Head-only variants, served through their base's encoder pass.

A head variant is a manifest and a `head.npz` of a few kilobytes (training/head_run.py). The
replica that holds the base encoder applies a variant's head to the pooled vectors of the
texts, after the one encoder pass their batch needs: a matrix product and a softmax. Heads are
loaded from their artifacts on first use and kept here, in an LRU bounded by count and by
bytes, apart from the encoders' LRU (Ray Serve's multiplexing); a head whose base graph is not
the one it was trained on is refused, naming it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from service.errors import Conflict, WrongTask
from training.artifacts import HEAD_FILE, Manifest
from training.heads import Head


class Found(Protocol):
    """A model found in the store (the registry's ResolvedModel)."""

    @property
    def folder(self) -> Path: ...

    @property
    def manifest(self) -> Manifest: ...


# a head variant's stored id -> where it is and its manifest (the replica's Registry.resolve)
FindHead = Callable[[str], Found]


@dataclass(frozen=True)
class LoadedHead:
    id: str
    labels: list[str]
    head: Head
    created_at: datetime  # of its manifest: a head replaced under the same id is reloaded
    base_sha256: str  # of the base graph it was checked against: another base is checked again

    @property
    def nbytes(self) -> int:
        return int(self.head.weight.nbytes + self.head.bias.nbytes)


@dataclass
class HeadStats:
    """Since the replica started (counters) and now (heads, bytes)."""

    hits: int = 0
    loads: int = 0
    applied: int = 0
    heads: int = 0
    bytes: int = 0


class HeadCache:
    """The heads a replica has loaded, most recently used last. Batches run in worker
    threads, so every change is under a lock."""

    def __init__(self, find: FindHead, *, max_heads: int = 10_000, max_bytes: int = 256 << 20):
        self.find, self.max_heads, self.max_bytes = find, max_heads, max_bytes
        self._heads: OrderedDict[str, LoadedHead] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = HeadStats()

    def get(self, head_id: str, base: Manifest, base_sha256: str) -> LoadedHead:
        """The head of variant `head_id`, checked against the base about to run it."""
        found = self.find(head_id)  # a stat: the registry caches by mtime
        folder, manifest = found.folder, found.manifest
        with self._lock:
            cached = self._heads.get(head_id)
            if (
                cached is not None
                and cached.created_at == manifest.created_at
                and cached.base_sha256 == base_sha256
            ):
                self._heads.move_to_end(head_id)
                self.stats.hits += 1
                return cached
        loaded = _load(head_id, folder, manifest, base, base_sha256)
        with self._lock:
            self._heads[head_id] = loaded
            self._heads.move_to_end(head_id)
            self.stats.loads += 1
            self._evict()
        return loaded

    def count_applied(self, n: int) -> None:
        with self._lock:
            self.stats.applied += n

    def snapshot(self) -> HeadStats:
        """The stats as they are now (a copy, taken under the lock)."""
        with self._lock:
            return dataclasses.replace(self.stats)

    def _evict(self) -> None:
        total = sum(h.nbytes for h in self._heads.values())
        while self._heads and (len(self._heads) > self.max_heads or total > self.max_bytes):
            _, gone = self._heads.popitem(last=False)
            total -= gone.nbytes
        self.stats.heads, self.stats.bytes = len(self._heads), total


def _load(
    head_id: str, folder: Path, manifest: Manifest, base: Manifest, base_sha256: str
) -> LoadedHead:
    if not manifest.head_only:
        raise WrongTask(f"model {head_id!r} is not a head-only variant", param="model")
    if manifest.base != base.id or (manifest.base_sha256 and manifest.base_sha256 != base_sha256):
        raise Conflict(
            f"model {head_id!r} is a head trained on another version of its base "
            f"{manifest.base!r}; train it again on the base as it is now",
            param="model",
        )
    head = Head.load(folder / manifest.files.get("head", HEAD_FILE))
    if head.weight.shape != (len(manifest.labels), base.hidden_size or head.weight.shape[1]):
        raise Conflict(f"model {head_id!r}: its head does not fit its base", param="model")
    return LoadedHead(head_id, list(manifest.labels), head, manifest.created_at, base_sha256)
