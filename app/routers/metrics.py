"""Prometheus metrics (see `app.metrics`)."""

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from app.deps import RunnerDep
from app.metrics import METRICS_URL, JobsCollector, scrape

router = APIRouter(tags=["health"])


@router.get(
    METRICS_URL,
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def read_metrics(runner: RunnerDep) -> Response:
    """Requests, latency, queue, running jobs, live workers, outcomes, training pace."""
    collector = JobsCollector(runner.jobs, lambda: runner.status().workers)
    body, content_type = await run_in_threadpool(scrape, collector)
    return Response(body, media_type=content_type)
