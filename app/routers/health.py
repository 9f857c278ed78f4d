"""Liveness, version and worker status."""

from fastapi import APIRouter

from app import __version__
from app.deps import ProblemsDep, RunnerDep, SettingsDep
from app.schemas import Health

router = APIRouter(tags=["health"])

HEALTH_URL = "/health"  # open even when an API key is required


@router.get(HEALTH_URL, response_model=Health)
def read_health(runner: RunnerDep, problems: ProblemsDep, settings: SettingsDep) -> Health:
    """Liveness and version, with the queue, the running jobs and the live workers, and the
    stored records that could not be read (skipped until fixed)."""
    return Health(
        status="ok",
        version=__version__,
        problems=problems.report(settings.data_dir.resolve()),
        jobs=runner.status(),
    )
