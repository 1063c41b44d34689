"""The server's Prometheus metrics (``GET /metrics``): requests by endpoint and status, latency, images by outcome,
batch sizes and forward-pass time, and gauges of what the server holds against each of its limits."""

from __future__ import annotations

import time
from typing import Any

from .batching import Batcher, Budget


class Metrics:
    """The Prometheus metrics of one app, in a registry of its own (two apps in one process do not mix)."""

    def __init__(self, batcher: Batcher, bodies: Budget, explaining: Budget, decoding: Budget) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "alexnet_http_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "alexnet_http_request_duration_seconds",
            "time from a request's arrival to its answer",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.images = Counter(
            "alexnet_images", "images answered, by outcome (ok, or the refusal's status)", ["outcome"], registry=r
        )
        self.batch_size = Histogram(
            "alexnet_batch_size_images",
            "images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
            registry=r,
        )
        self.forward = Histogram(
            "alexnet_forward_duration_seconds",
            "time of one forward pass",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        Gauge("alexnet_queue_depth_images", "images waiting for a forward pass", registry=r).set_function(
            lambda: batcher.waiting
        )
        Gauge(
            "alexnet_images_in_flight", "images admitted and not yet answered (at most --queue)", registry=r
        ).set_function(lambda: batcher.admitted)
        Gauge(
            "alexnet_request_body_bytes_held", "bytes of request bodies held (at most --max-queued-mb)", registry=r
        ).set_function(lambda: bodies.held)
        Gauge(
            "alexnet_explain_images_in_flight",
            "images admitted to POST /explain and not yet explained (at most --explain-max-images)",
            registry=r,
        ).set_function(lambda: explaining.held)
        Gauge(
            "alexnet_decoding_bytes_held",
            "estimated bytes of the large images decoding now, from their headers (at most --max-decoded-mb)",
            registry=r,
        ).set_function(lambda: decoding.held)

    def on_batch(self, images: int, seconds: float) -> None:
        self.batch_size.observe(images)
        self.forward.observe(seconds)


class Observe:
    """ASGI middleware: counts every response by endpoint (the route's template, never the raw path) and status,
    times it, and adds ``X-Content-Type-Options: nosniff`` (browsers must not guess a type from a body)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        self.fixed_paths: set[str] | None = None

    def endpoint(self, scope: dict) -> str:
        """The label of the route that answered: FastAPI's routes name themselves in the scope; the plain ones it
        adds (``/openapi.json``, ``/docs``) do not, and are known by their fixed path; anything else ``unmatched``
        (a raw path as a label would let clients make labels without end)."""
        route = scope.get("route")
        if route is not None:
            return route.path
        if self.fixed_paths is None:
            routes = getattr(scope.get("app"), "routes", [])
            self.fixed_paths = {r.path for r in routes if "{" not in getattr(r, "path", "{")}
        return scope["path"] if "endpoint" in scope and scope["path"] in self.fixed_paths else "unmatched"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-content-type-options", b"nosniff"))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            endpoint = self.endpoint(scope)
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
