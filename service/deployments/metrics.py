"""Our Prometheus metrics, made in the process that records them (Ray exports them with the
prefix `ray_`, and the ingress's /metrics reads the node's exporter)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.inference.heads import HeadStats

# how often a replica sets its gauges again: under Ray's gauge TTL, two report intervals (2 s in
# the tests, where RAY_metrics_report_interval_ms is 1000; 20 s by default)
GAUGE_REFRESH_S = 0.5
LATENCY_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]


class ReplicaMetrics:
    """A model replica's: time waiting for a batch, tokenizing, in ONNX Runtime, and the size
    of each batch. Ray Serve adds its own (requests, latency, multiplexed-model loads, unloads
    and lookups)."""

    def __init__(self):
        from ray.serve.metrics import Counter, Gauge, Histogram

        keys = ("model", "endpoint")

        def hist(name: str, description: str, boundaries: list[float]) -> Histogram:
            return Histogram(name, description=description, boundaries=boundaries, tag_keys=keys)  # type: ignore[arg-type]  # Ray types tag_keys as a 1-tuple; any length works

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
        # one a batch: the requests for a base and for its head-only variants share it
        self.encoder_passes = Counter(
            "tuneserve_encoder_passes_total",
            description="encoder (model) passes, one a batch",
            tag_keys=keys,  # type: ignore[arg-type]  # as above
        )
        by_base = ("model",)
        self.head_applied = Counter(
            "tuneserve_heads_applied_total",
            description="head-only variant heads applied to a request's texts, by base",
            tag_keys=by_base,
        )
        self.head_hits = Counter(
            "tuneserve_head_cache_hits_total",
            description="heads found loaded in the replica's head cache, by base",
            tag_keys=by_base,
        )
        self.head_loads = Counter(
            "tuneserve_head_loads_total",
            description="heads loaded from their artifacts, by base",
            tag_keys=by_base,
        )
        self.heads_loaded = Gauge(
            "tuneserve_head_cache_heads", description="heads this replica holds loaded"
        )
        self.head_bytes = Gauge(
            "tuneserve_head_cache_bytes", description="bytes of the heads this replica holds"
        )

    def keep_head_gauges(self, snapshot: Callable[[], HeadStats]) -> asyncio.Task:
        """Sets the head cache's gauges from `snapshot()` (heads, bytes) every GAUGE_REFRESH_S
        for as long as the replica lives. Ray 2.60 forgets a gauge's value that was not set
        again within two report intervals, so a gauge set only when the cache changed would
        vanish from /metrics a few seconds after the last request."""

        async def refresh() -> None:
            while True:
                now = snapshot()
                self.heads_loaded.set(now.heads)
                self.head_bytes.set(now.bytes)
                await asyncio.sleep(GAUGE_REFRESH_S)

        return asyncio.get_running_loop().create_task(refresh())


class IngressMetrics:
    """The ingress's: API requests by route, model and status, and their latency."""

    def __init__(self):
        from ray.serve.metrics import Counter, Histogram

        self.requests = Counter(
            "tuneserve_requests_total",
            description="API requests by route, model and status",
            tag_keys=("route", "model", "status"),  # type: ignore[arg-type]  # as above
        )
        self.latency = Histogram(
            "tuneserve_request_seconds",
            description="API request latency at the ingress",
            boundaries=LATENCY_S,
            tag_keys=("route",),
        )
