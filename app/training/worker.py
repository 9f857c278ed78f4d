"""The worker: train one job, record its progress, publish its model.

`run_job` is a plain function that talks only to the stores the settings name, so an executor
runs it wherever it runs workers and a test can call it in-process; it returns the `Outcome`.
It resumes from the job's checkpoint when there is one, which makes the result identical to an
uninterrupted run. It reads the job's record every `FLUSH_SECONDS` while it trains: once the
job is cancelled it stops, and once a stop is requested (the server is shutting down) it
checkpoints at that iteration and reports `interrupted`, leaving the job to resume there.
"""

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.ids import new_id
from app.settings import Settings
from app.storage.integrity import Problems
from app.storage.jobs import (
    EpochSummary,
    IterationCost,
    JobRecord,
    JobStatus,
    JobStore,
    finite_or_none,
)
from app.storage.layout import DataLayout
from app.storage.models import ModelMeta
from app.storage.stores import open_dataset_store, open_job_store, open_model_store
from app.training.outcomes import Outcome, OutcomeKind
from cnn_core import CNNError, History, Network
from cnn_core.datasets import Dataset

log = logging.getLogger("app.worker")

FLUSH_SECONDS = 0.5
OUT_OF_MEMORY = "out of memory: use a smaller network, batch size or dataset"


def validation_count(n_samples: int, validation_split: float) -> int:
    """How many samples the validation split holds out."""
    return round(n_samples * validation_split)


def split_indices(
    n_samples: int, validation_split: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sample indices: a seeded shuffle, the first part held out."""
    order = np.random.default_rng(seed).permutation(n_samples)
    n_val = validation_count(n_samples, validation_split)
    return order[n_val:], order[:n_val]


class ProgressRecorder:
    """The `fit` callback: writes iteration costs in small batches (and at each epoch's last
    iteration) and each epoch's summary, and reads the job's record with each write (the
    first iteration's included).

    It stops training when the job is no longer `running` (cancelled meanwhile). A stop request
    stops it at an iteration, never at an epoch end, so `fit` checkpoints the iteration reached
    (one seen at an epoch end stops the next iteration); `interrupted` then tells so.
    """

    def __init__(self, jobs: JobStore, job_id: str) -> None:
        self._jobs = jobs
        self._job_id = job_id
        self._pending: list[IterationCost] = []
        self._last_flush = -math.inf
        self._started = False
        self._stop_requested = False
        self.interrupted = False

    def _write_pending(self) -> None:
        if self._pending:
            self._jobs.record_iterations(self._job_id, self._pending)
            self._pending = []

    def _flush(self) -> bool:
        """Write pending costs and read the job's requests; True when it was cancelled."""
        self._write_pending()
        self._last_flush = time.monotonic()
        job = self._jobs.get(self._job_id)
        if job is None or job.status is not JobStatus.running:
            return True
        self._stop_requested = job.stop_requested
        return False

    def __call__(self, event: dict[str, Any]) -> bool:
        if event["type"] == "iteration":
            if not self._started:
                self._jobs.start_run(
                    self._job_id, event["epoch"], event["iteration"], event["iterations_per_epoch"]
                )
                self._started = True
            self._pending.append(IterationCost(event["epoch"], event["iteration"], event["cost"]))
            if event["iteration"] % event["iterations_per_epoch"] == 0:
                # written before fit checkpoints the epoch (the checkpoint keeps no
                # iterations): a crash after the checkpoint loses none
                self._write_pending()
            due = time.monotonic() - self._last_flush >= FLUSH_SECONDS
            if not (due or self._stop_requested):
                return False
            if self._flush():
                return True
            self.interrupted = self._stop_requested
            return self.interrupted
        cancelled = self._flush()
        self._jobs.record_epoch(self._job_id, _summary(event))
        return cancelled


def _summary(event: dict[str, Any]) -> EpochSummary:
    """The record of an epoch event (the event is the record's fields plus its type)."""
    return EpochSummary(**{k: v for k, v in event.items() if k != "type"})


def train(
    job: JobRecord, data: Dataset, callback: ProgressRecorder, checkpoint: Path
) -> tuple[Network, History]:
    """Fit the job's network on its dataset, resuming from `checkpoint` if it exists."""
    settings = job.training
    seed = settings["seed"]
    train_idx, val_idx = split_indices(data.n_samples, settings["validation_split"], seed)
    validation = (data.X[val_idx], data.y[val_idx]) if len(val_idx) else None
    net = Network.from_config(job.architecture, seed=seed)
    history = net.fit(
        data.X[train_idx],
        data.y[train_idx],
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        optimizer=settings["optimizer"],
        validation_data=validation,
        callback=callback,
        seed=seed,
        early_stopping=settings["early_stopping"],
        checkpoint_path=checkpoint,
        resume_from=checkpoint if checkpoint.exists() else None,
        threads=job.threads,
        keep_iterations=False,  # the job store has them: checkpoints stay small
    )
    return net, history


def record_history(jobs: JobStore, job_id: str, history: History) -> None:
    """Store the epoch summaries the checkpoint kept, filling any a crash kept from the
    database (one written between the checkpoint and the epoch event); the iterations are in
    the database already (`ProgressRecorder` writes them before each epoch ends)."""
    for epoch in history.epochs:
        jobs.record_epoch(job_id, epoch)


def model_meta(job: JobRecord, net: Network, history: History, data: Dataset) -> ModelMeta:
    """What the model store keeps about the model a job trained."""
    last = history.epochs[-1]
    return ModelMeta(
        id=new_id(),
        job_id=job.id,
        name=job.name,
        dataset_id=job.dataset_id,
        created_at=time.time(),
        architecture=net.config,
        input_shape=list(net.input_shape),
        classes=list(data.class_names),
        param_count=net.param_count,
        macs=net.macs,
        layers=net.summary(),
        preprocessing=dict(data.preprocessing),
        training=job.training,
        metrics={
            "epochs_trained": len(history.epochs),
            "stopped_early": history.stopped_early,
            **{
                key: finite_or_none(getattr(last, key))
                for key in ("cost", "train_accuracy", "val_cost", "val_accuracy")
            },
        },
    )


def run_job(job_id: str, settings: Settings) -> Outcome:
    """Train job `job_id`, which must be `running`, until it ends or a stop is requested."""
    jobs = open_job_store(settings)
    try:
        job = jobs.get(job_id)
        if job is None or job.status is not JobStatus.running:
            return Outcome(OutcomeKind.cancelled)
        return _run(job, settings, jobs)
    finally:
        jobs.close()


def _fail(jobs: JobStore, job: JobRecord, checkpoint: Path, reason: str) -> Outcome:
    jobs.finish(job.id, JobStatus.failed, error=reason)
    checkpoint.unlink(missing_ok=True)
    return Outcome(OutcomeKind.failed, reason)


def _run(job: JobRecord, settings: Settings, jobs: JobStore) -> Outcome:
    checkpoint = DataLayout(settings.data_dir).checkpoint(job.id)
    recorder = ProgressRecorder(jobs, job.id)
    try:
        datasets = open_dataset_store(settings, Problems())
        data = datasets.load(job.dataset_id)
        net, history = train(job, data, recorder, checkpoint)
    except CNNError as exc:  # divergence, or a dataset or checkpoint that cannot be used
        return _fail(jobs, job, checkpoint, str(exc))
    except MemoryError:
        return _fail(jobs, job, checkpoint, OUT_OF_MEMORY)
    except Exception:
        log.exception("job %s: training failed", job.id)
        return _fail(
            jobs, job, checkpoint, "internal error in the training worker (see the server log)"
        )
    record_history(jobs, job.id, history)
    if jobs.get(job.id).status is not JobStatus.running:
        return Outcome(OutcomeKind.cancelled)  # cancelled while training: publish nothing
    if recorder.interrupted:
        return Outcome(OutcomeKind.interrupted)  # checkpointed at the iteration it reached
    models = open_model_store(settings, Problems())
    meta = model_meta(job, net, history, data)
    models.save(meta, net)
    published = jobs.finish(job.id, JobStatus.succeeded, model_id=meta.id)
    if not published:
        models.delete(meta.id)  # cancelled while publishing
    checkpoint.unlink(missing_ok=True)
    return Outcome(OutcomeKind.succeeded if published else OutcomeKind.cancelled)
