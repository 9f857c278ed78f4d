"""Liveness, version and worker status."""

from fastapi import APIRouter

from app import __version__
from app.deps import RunnerDep
from app.schemas import Health, WorkerStatus
from app.storage.jobs import JobStatus

router = APIRouter(tags=["health"])

HEALTH_URL = "/health"  # open even when an API key is required


@router.get(HEALTH_URL, response_model=Health)
def read_health(runner: RunnerDep) -> Health:
    """Liveness and version, with how many jobs run and wait."""
    return Health(
        status="ok",
        version=__version__,
        jobs=WorkerStatus(
            workers=runner.workers,
            running=len(runner.executor.running()),
            queued=runner.jobs.count(JobStatus.queued),
        ),
    )
