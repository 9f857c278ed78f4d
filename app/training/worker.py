"""The worker: train one job, record its progress, publish its model.

`run_job` is a plain function that talks only to the stores in the data directory, so the
process executor runs it in a child process and a test can call it in-process. It resumes from
the job's checkpoint when there is one, which makes the result identical to an uninterrupted run.
When its `interrupt` event is set (the server is shutting down), it checkpoints at the next
iteration and returns without finishing the job, which resumes there on the next start.
"""

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.ids import new_id
from app.storage.datasets import FileDatasetStore
from app.storage.jobs import (
    EpochSummary,
    IterationCost,
    JobRecord,
    JobStatus,
    JobStore,
    SqliteJobStore,
    finite_or_none,
)
from app.storage.layout import DataLayout
from app.storage.models import FileModelStore, ModelMeta
from cnn_core import CNNError, History, Network
from cnn_core.datasets import Dataset

log = logging.getLogger("app.worker")

FLUSH_SECONDS = 0.5

# Test-only fault hook, inert unless set: "NAME:MB" makes jobs named NAME allocate MB megabytes
# before training, standing in for a job that needs more memory than a worker may use.
FAULT_ALLOCATE = "CNN_FAULT_WORKER_ALLOCATE"


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
    """The `fit` callback: writes iteration costs in small batches and each epoch's summary.

    It stops training when the job is no longer `running` (cancelled meanwhile), and after the
    current iteration once `interrupt` is set (fit then checkpoints that iteration).
    """

    def __init__(
        self, jobs: JobStore, job_id: str, interrupt: threading.Event | None = None
    ) -> None:
        self._jobs = jobs
        self._job_id = job_id
        self._interrupt = interrupt
        self._pending: list[IterationCost] = []
        self._last_flush = time.monotonic()
        self._started = False
        self.interrupted = False

    def _flush(self) -> bool:
        """Write pending costs; True when training should stop."""
        if self._pending:
            self._jobs.record_iterations(self._job_id, self._pending)
            self._pending = []
        self._last_flush = time.monotonic()
        job = self._jobs.get(self._job_id)
        return job is None or job.status is not JobStatus.running

    def __call__(self, event: dict[str, Any]) -> bool:
        if event["type"] == "iteration":
            if not self._started:
                self._jobs.start_run(
                    self._job_id, event["epoch"], event["iteration"], event["iterations_per_epoch"]
                )
                self._started = True
            self._pending.append(IterationCost(event["epoch"], event["iteration"], event["cost"]))
            if self._interrupt is not None and self._interrupt.is_set():
                self.interrupted = True
                self._flush()
                return True
            return time.monotonic() - self._last_flush >= FLUSH_SECONDS and self._flush()
        stop = self._flush()
        self._jobs.record_epoch(self._job_id, _summary(event))
        return stop


def _summary(event: dict[str, Any]) -> EpochSummary:
    """The record of an epoch event (the event is the record's fields plus its type)."""
    return EpochSummary(**{k: v for k, v in event.items() if k != "type"})


def fault_allocation(job: JobRecord) -> np.ndarray | None:
    """The test-only fault hook: the allocation `CNN_FAULT_WORKER_ALLOCATE` asks of `job`."""
    name, _, megabytes = os.environ.get(FAULT_ALLOCATE, "").rpartition(":")
    if not name or name != job.name:
        return None
    return np.empty(int(megabytes) * 2**20, dtype=np.uint8)


def train(
    job: JobRecord, data: Dataset, callback: ProgressRecorder, checkpoint: Path
) -> tuple[Network, History]:
    """Fit the job's network on its dataset, resuming from `checkpoint` if it exists."""
    fault_allocation(job)
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
    )
    return net, history


def record_history(jobs: JobStore, job_id: str, history: History) -> None:
    """Store the complete history, filling anything a crash kept from the database."""
    if history.iterations:
        jobs.record_iterations(job_id, history.iterations)
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


def run_job(job_id: str, data_dir: Path, interrupt: threading.Event | None = None) -> bool:
    """Train job `job_id` to its end: succeeded with a model, or failed with a reason.

    True when `interrupt` stopped it instead: the job is still `running`, checkpointed at the
    iteration it reached, and resumes from there when it runs again.
    """
    layout = DataLayout(data_dir)
    jobs = SqliteJobStore(layout.jobs_db)
    try:
        job = jobs.get(job_id)
        if job is not None and job.status is JobStatus.running:
            return _run(job, layout, jobs, interrupt)
        return False
    finally:
        jobs.close()


def _run(
    job: JobRecord, layout: DataLayout, jobs: SqliteJobStore, interrupt: threading.Event | None
) -> bool:
    checkpoint = layout.checkpoint(job.id)
    recorder = ProgressRecorder(jobs, job.id, interrupt)
    try:
        data = FileDatasetStore(layout.datasets).load(job.dataset_id)
        net, history = train(job, data, recorder, checkpoint)
    except CNNError as exc:  # divergence, or a dataset or checkpoint that cannot be used
        jobs.finish(job.id, JobStatus.failed, error=str(exc))
        checkpoint.unlink(missing_ok=True)
        return False
    except MemoryError:
        jobs.finish(
            job.id,
            JobStatus.failed,
            error="out of memory: use a smaller network, batch size or dataset",
        )
        checkpoint.unlink(missing_ok=True)
        return False
    except Exception:
        log.exception("job %s: training failed", job.id)
        jobs.finish(
            job.id,
            JobStatus.failed,
            error="internal error in the training worker (see the server log)",
        )
        checkpoint.unlink(missing_ok=True)
        return False
    record_history(jobs, job.id, history)
    if jobs.get(job.id).status is not JobStatus.running:
        return False  # cancelled while training: publish nothing
    if recorder.interrupted:
        return True  # checkpointed at the iteration it reached
    models = FileModelStore(layout.models)
    meta = model_meta(job, net, history, data)
    models.save(meta, net)
    if not jobs.finish(job.id, JobStatus.succeeded, model_id=meta.id):
        models.delete(meta.id)  # cancelled while publishing
    checkpoint.unlink(missing_ok=True)
    return False
