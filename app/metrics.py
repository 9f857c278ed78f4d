"""Prometheus metrics at `GET /metrics`, right however many server processes there are.

Two kinds, kept apart:
- Per-process events (requests and their latency per route, predictions and their latency) are
  prometheus-client counters and histograms. Several server processes on one host share a
  directory named by `PROMETHEUS_MULTIPROC_DIR`, and the scrape then adds up every process's
  file (prometheus-client's multiprocess mode); without it, this process's own numbers.
- The state of the service (the queue, running jobs, live workers, jobs by outcome, training
  images per second) is read from the job database at each scrape, so every replica answers the
  same figures for the whole deployment, never double-counted across processes.

Latency is not recorded for the server-sent events route: a stream lasts as long as its job.
"""

import os
import time
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.storage.jobs import JobStatus, JobStore

METRICS_URL = "/metrics"
STREAMING_ROUTES = {"/jobs/{job_id}/events"}

REQUESTS = Counter(
    "cnn_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "cnn_http_request_duration_seconds",
    "Time to answer an HTTP request (server-sent event streams excluded)",
    ["method", "route"],
)
PREDICTIONS = Histogram(
    "cnn_prediction_duration_seconds",
    "Time a model takes to predict one request's images",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class JobsCollector:
    """The service's state, from the job database at scrape time (see the module docstring)."""

    def __init__(self, jobs: JobStore, live_workers) -> None:
        self._jobs = jobs
        self._live_workers = live_workers  # () -> number of workers that can train now

    def collect(self) -> Iterable[Metric]:
        by_status = GaugeMetricFamily("cnn_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            by_status.add_metric([status.value], self._jobs.count(status))
        yield by_status
        yield GaugeMetricFamily(
            "cnn_queue_length",
            "Jobs waiting for a worker",
            value=self._jobs.count(JobStatus.queued),
        )
        running, _ = self._jobs.list_page(JobStatus.running, 500, 0)
        yield GaugeMetricFamily("cnn_running_jobs", "Jobs training now", value=len(running))
        yield GaugeMetricFamily(
            "cnn_live_workers", "Workers that can train jobs", value=self._live_workers()
        )
        yield GaugeMetricFamily(
            "cnn_training_images_per_second",
            "Images per second the running jobs train, in all (their current runs' pace)",
            value=sum(_images_per_second(job) for job in running),
        )


def _images_per_second(job) -> float:
    done = job.iteration - job.run_start_iteration
    if not job.run_started_at or done <= 0:
        return 0.0
    return done * job.training["batch_size"] / max(time.time() - job.run_started_at, 1e-6)


def scrape(collector: JobsCollector) -> tuple[bytes, str]:
    """The metrics in Prometheus's text format, and its content type."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        for metric in (REQUESTS, LATENCY, PREDICTIONS):
            registry.register(metric)
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class RequestMetrics:
    """ASGI middleware counting each request by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            if route not in STREAMING_ROUTES:
                LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)
