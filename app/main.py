"""The FastAPI application: `create_app(settings)` builds it; uvicorn serves `app.main:app`."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from app import __version__
from app.docs import DOCS_URL, FAVICON_URL, REDOC_URL, mount_offline_docs
from app.errors import register_error_handlers
from app.inference import Predictor
from app.limits import BodyTimeout, ConcurrencyLimit
from app.methods import AllowedMethods
from app.metrics import RequestMetrics
from app.openapi import install as install_openapi
from app.openapi import operation_id
from app.routers import architectures, datasets, health, jobs, metrics, models
from app.schemas import error_responses
from app.security import ApiKeyGuard, HostGuard, OriginGuard, bearer, warn_if_exposed
from app.settings import Settings
from app.storage.files import sweep_temp_files
from app.storage.integrity import Problems
from app.storage.layout import DataLayout
from app.storage.lock import DataDirLock, DataDirLocked
from app.storage.stores import open_dataset_store, open_job_store, open_model_store
from app.training.executor import open_executor
from app.training.queue import QueueRunner
from app.training.runner import JobRunner, begin_shutdown_on_exit_signals
from app.ui import OPEN_PATHS as UI_PATHS
from app.ui import mount_dashboard

log = logging.getLogger("app")

DESCRIPTION = """
Train convolutional networks written from scratch in NumPy, follow their cost while they train,
and predict with the models they produce.

Try it: **POST /jobs** with the prefilled example (LeNet-5 on the built-in `mnist-sample`),
watch **GET /jobs/{job_id}** and **GET /jobs/{job_id}/costs.png**, then post a digit image to
**POST /models/{model_id}/predict**.
"""

TAGS = [
    {"name": "health", "description": "Liveness, version and worker status."},
    {"name": "architectures", "description": "Check a network before training it."},
    {"name": "datasets", "description": "Upload and inspect training data."},
    {"name": "jobs", "description": "Training jobs: submit, follow, cancel."},
    {"name": "models", "description": "Trained models: inspect, download, predict."},
]


def build_runner(settings: Settings, problems: Problems) -> JobRunner:
    """Open the stores on the data directory, repair it, and wire the job runner: the local
    one, or with `CNN_REDIS_URL` the one that leaves training to `make worker` processes.
    Unreadable records found on the way are reported in `problems`."""
    # Resolved once, so worker processes find the same directory whatever their working one.
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    layout = DataLayout(settings.data_dir)
    layout.create()
    dataset_store = open_dataset_store(settings, problems)
    model_store = open_model_store(settings, problems)
    if settings.redis_url:
        # The data directory is shared: workers on other hosts may be writing in it right now,
        # so no temp file or unpublished model is anyone's leftover here.
        dataset_store.list_all()  # finds the unreadable metadata files, for /health
        runner: JobRunner = QueueRunner(
            open_job_store(settings),
            dataset_store,
            model_store,
            layout,
            redis_url=settings.redis_url,
            max_queue=settings.max_queue,
            poll_interval=settings.poll_interval,
            train_threads=settings.train_threads,
        )
    else:
        for directory in (layout.datasets, layout.models, layout.checkpoints):
            sweep_temp_files(directory)
        dataset_store.quarantine_orphans()
        dataset_store.list_all()  # finds the unreadable metadata files, for /health
        model_store.quarantine_orphans()
        runner = JobRunner(
            open_job_store(settings),
            dataset_store,
            model_store,
            open_executor(settings),
            layout,
            workers=settings.workers,
            max_queue=settings.max_queue,
            poll_interval=settings.poll_interval,
            train_threads=settings.train_threads,
        )
    runner.recover()
    return runner


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Lock the data dir; create the stores, the runner and the predictor; stop the workers on
    shutdown."""
    settings: Settings = app.state.settings
    warn_if_exposed(settings)
    # Servers that hand training to RQ workers share the data directory by design; a server
    # with its own worker processes must have it to itself.
    lock = DataDirLock(settings.data_dir.resolve())
    try:
        if not settings.redis_url:
            lock.acquire()
    except DataDirLocked as exc:
        log.error("refusing to start: %s", exc)
        raise
    try:
        app.state.problems = Problems()
        runner = build_runner(settings, app.state.problems)
        app.state.runner = runner
        app.state.predictor = Predictor(
            runner.models,
            cache_size=settings.model_cache_size,
            concurrency=settings.predict_concurrency,
            max_image_pixels=settings.max_image_pixels,
            max_request_pixels=settings.max_request_pixels,
        )
        task = asyncio.create_task(runner.run())
        begin_shutdown_on_exit_signals(runner)
        try:
            yield
        finally:
            runner.stop_loop()
            await task
            await asyncio.to_thread(runner.shutdown)  # waits up to the workers' grace period
            await asyncio.to_thread(runner.jobs.close)
            app.state.predictor.close()
    finally:
        lock.release()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service, configured by `settings` (by default from the environment)."""
    settings = settings or Settings()
    app = FastAPI(
        title="cnn-service",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
        license_info={"name": "MIT", "identifier": "MIT"},
        servers=[{"url": "/", "description": "The server that serves this document"}],
    )
    app.state.settings = settings
    register_error_handlers(app)
    app.add_middleware(AllowedMethods)
    app.add_middleware(BodyTimeout, seconds=settings.body_timeout)
    app.add_middleware(
        ConcurrencyLimit,
        method="POST",
        path=datasets.router.prefix,
        limit=settings.max_concurrent_uploads,
        what="dataset uploads",
    )
    open_paths = (health.HEALTH_URL, app.openapi_url, DOCS_URL, REDOC_URL, FAVICON_URL, *UI_PATHS)
    app.add_middleware(ApiKeyGuard, api_key=settings.api_key, open_paths=open_paths)
    app.add_middleware(
        OriginGuard, api_key_set=settings.api_key is not None, allowed_hosts=settings.allowed_hosts
    )
    if settings.api_key is None:
        app.add_middleware(HostGuard, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(RequestMetrics)  # runs first: refused requests count too
    # The Bearer scheme is declared where the deployment requires it, and nowhere else.
    protected = (
        {"dependencies": [Depends(bearer)], "responses": error_responses(401)}
        if settings.api_key
        else {}
    )
    app.include_router(health.router)
    app.include_router(metrics.router, **protected)
    app.include_router(architectures.router, max_body_size=settings.max_json_bytes, **protected)
    app.include_router(datasets.router, max_body_size=settings.max_upload_bytes, **protected)
    app.include_router(jobs.router, max_body_size=settings.max_json_bytes, **protected)
    app.include_router(models.router, max_body_size=settings.max_predict_bytes, **protected)
    mount_offline_docs(app)
    mount_dashboard(app)
    install_openapi(app)
    return app


app = create_app()
