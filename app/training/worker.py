"""The worker: train one job, record its progress, publish its model.

`run_job` is a plain function that talks only to the stores the settings name, so an executor
runs it wherever it runs workers and a test can call it in-process; it returns the `Outcome`.
It resumes from the job's checkpoint when there is one, which makes the result identical to an
uninterrupted run. It reads the job's record every `FLUSH_SECONDS` while it trains: once the
job is cancelled it stops, and once a stop is requested (the server is shutting down) it
checkpoints at that iteration and reports `interrupted`, leaving the job to resume there.

Each run belongs to the attempt that claimed the job (`JobRecord.attempt`): its writes name it,
and once another claim has taken the job over they change nothing and the run stops, reporting
`superseded`. It checkpoints to a file of its own attempt and resumes from the latest one.
"""

import logging
import math
import threading
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
from cnn_core import CNNError, History, Network, gemm
from cnn_core.datasets import Dataset

log = logging.getLogger("app.worker")

FLUSH_SECONDS = 0.5
OUT_OF_MEMORY = "out of memory: use a smaller network, batch size or dataset"

# Loaded here, in the fork server that preloads this module, before any job caps its address space.
gemm.preload()


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

    def __init__(
        self,
        jobs: JobStore,
        job_id: str,
        attempt: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self._jobs = jobs
        self._job_id = job_id
        self._attempt = attempt
        self._stop = stop  # a stop request from this process (its worker is shutting down)
        self._pending: list[IterationCost] = []
        self._last_flush = -math.inf
        self._started = False
        self._stop_requested = False
        self.interrupted = False
        self.superseded = False

    def _write_pending(self) -> bool:
        """Write pending costs; False when this run no longer holds the job."""
        if not self._pending:
            return True
        written = self._jobs.record_iterations(self._job_id, self._pending, self._attempt)
        self._pending = []
        return written is not False

    def _flush(self) -> bool:
        """Write pending costs and read the job's requests; True when it was cancelled or
        taken over (`superseded` then)."""
        if not self._write_pending():
            return self._lost()
        self._last_flush = time.monotonic()
        job = self._jobs.get(self._job_id)
        if job is None or job.status is not JobStatus.running:
            return True
        if self._attempt is not None and job.attempt != self._attempt:
            return self._lost()
        self._stop_requested = job.stop_requested or self._stopping_here()
        return False

    def _stopping_here(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _lost(self) -> bool:
        """This run no longer holds the job; True (stop), and `superseded` when another
        attempt has it (rather than a cancel or a finish)."""
        job = self._jobs.get(self._job_id)
        self.superseded = job is not None and job.attempt != self._attempt
        return True

    def __call__(self, event: dict[str, Any]) -> bool:
        if event["type"] == "iteration":
            if not self._started:
                self._started = True
                started = self._jobs.start_run(
                    self._job_id,
                    event["epoch"],
                    event["iteration"],
                    event["iterations_per_epoch"],
                    self._attempt,
                )
                if started is False:
                    return self._lost()
            self._pending.append(IterationCost(event["epoch"], event["iteration"], event["cost"]))
            # An epoch's last costs are written before fit checkpoints the epoch (the
            # checkpoint keeps no iterations): a crash after the checkpoint loses none. Its
            # requests are left to the epoch event that follows at once, so that a stop never
            # lands between an epoch's last batch and its summary.
            if event["iteration"] % event["iterations_per_epoch"] == 0:
                return False if self._write_pending() else self._lost()
            due = time.monotonic() - self._last_flush >= FLUSH_SECONDS
            if not (due or self._stop_requested or self._stopping_here()):
                return False
            if self._flush():
                return True
            self.interrupted = self._stop_requested
            return self.interrupted
        if self._flush():
            return True
        if self._jobs.record_epoch(self._job_id, _summary(event), self._attempt) is False:
            return self._lost()
        return False


def _summary(event: dict[str, Any]) -> EpochSummary:
    """The record of an epoch event (the event is the record's fields plus its type)."""
    return EpochSummary(**{k: v for k, v in event.items() if k != "type"})


TrainingInputs = tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]


def training_inputs(data: Dataset, settings: dict[str, Any]) -> TrainingInputs:
    """The float32 training images and labels of a job, and its validation pair (or None): a
    seeded split, each part converted from the stored pixels alone, so that once the dataset
    is dropped one float copy of it is left in all."""
    train_idx, val_idx = split_indices(
        data.n_samples, settings["validation_split"], settings["seed"]
    )
    validation = (data.inputs(val_idx), data.y[val_idx]) if len(val_idx) else None
    return data.inputs(train_idx), data.y[train_idx], validation


def train(
    job: JobRecord,
    inputs: TrainingInputs,
    callback: ProgressRecorder,
    checkpoint: Path,
    resume_from: Path | None = None,
) -> tuple[Network, History]:
    """Fit the job's network on its `training_inputs`, checkpointing to `checkpoint`, resuming
    from `resume_from` when given."""
    settings = job.training
    seed = settings["seed"]
    X, y, validation = inputs
    net = Network.from_config(job.architecture, seed=seed)
    history = net.fit(
        X,
        y,
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        optimizer=settings["optimizer"],
        validation_data=validation,
        callback=callback,
        seed=seed,
        early_stopping=settings["early_stopping"],
        lr_schedule=settings.get("lr_schedule"),
        augmentation=settings.get("augmentation"),
        checkpoint_path=checkpoint,
        resume_from=resume_from,
        threads=job.threads,
        keep_iterations=False,  # the job store has them: checkpoints stay small
    )
    return net, history


def record_history(
    jobs: JobStore, job_id: str, history: History, attempt: int | None = None
) -> bool:
    """Store the epoch summaries the checkpoint kept, filling any a crash kept from the
    database (one written between the checkpoint and the epoch event); the iterations are in
    the database already (`ProgressRecorder` writes them before each epoch ends). False when
    `attempt` no longer holds the job (nothing more is written)."""
    return all(jobs.record_epoch(job_id, epoch, attempt) is not False for epoch in history.epochs)


def model_meta(
    job: JobRecord, net: Network, history: History, classes: list[str], preprocessing: dict
) -> ModelMeta:
    """What the model store keeps about the model a job trained on a dataset of `classes`,
    preprocessed as `preprocessing` says."""
    last = history.epochs[-1]
    return ModelMeta(
        id=new_id(),
        job_id=job.id,
        name=job.name,
        dataset_id=job.dataset_id,
        created_at=time.time(),
        architecture=net.config,
        input_shape=list(net.input_shape),
        classes=list(classes),
        param_count=net.param_count,
        macs=net.macs,
        layers=net.summary(),
        preprocessing=dict(preprocessing),
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


def run_job(
    job_id: str,
    settings: Settings,
    attempt: int | None = None,
    stop: threading.Event | None = None,
) -> Outcome:
    """Train job `job_id`, which must be `running` (in `attempt`, by default the latest
    claim's), until it ends, a stop is requested (in the store, or by setting `stop`) or another
    claim takes it over."""
    jobs = open_job_store(settings)
    try:
        job = jobs.get(job_id)
        if job is None or job.status is not JobStatus.running:
            return Outcome(OutcomeKind.cancelled)
        attempt = job.attempt if attempt is None else attempt
        if job.attempt != attempt:
            return Outcome(OutcomeKind.superseded)
        return _run(job, attempt, settings, jobs, stop)
    finally:
        jobs.close()


def _fail(jobs: JobStore, job: JobRecord, attempt: int, layout: DataLayout, reason: str) -> Outcome:
    if not jobs.finish(job.id, JobStatus.failed, error=reason, attempt=attempt):
        return _not_held(jobs, job.id, attempt)
    layout.remove_checkpoints(job.id)
    return Outcome(OutcomeKind.failed, reason)


def _not_held(jobs: JobStore, job_id: str, attempt: int) -> Outcome:
    """The outcome of a run that found its job no longer its own."""
    job = jobs.get(job_id)
    superseded = job is not None and job.attempt != attempt
    return Outcome(OutcomeKind.superseded if superseded else OutcomeKind.cancelled)


def _run(
    job: JobRecord,
    attempt: int,
    settings: Settings,
    jobs: JobStore,
    stop: threading.Event | None = None,
) -> Outcome:
    layout = DataLayout(settings.data_dir)
    recorder = ProgressRecorder(jobs, job.id, attempt, stop)
    try:
        datasets = open_dataset_store(settings, Problems())
        data = datasets.load(job.dataset_id)
        inputs = training_inputs(data, job.training)
        classes, preprocessing = data.class_names, data.preprocessing
        del data  # its stored pixels: training needs only the converted splits
        resume_from = layout.latest_checkpoint(job.id)
        net, history = train(job, inputs, recorder, layout.checkpoint(job.id, attempt), resume_from)
    except CNNError as exc:  # divergence, or a dataset or checkpoint that cannot be used
        return _fail(jobs, job, attempt, layout, str(exc))
    except MemoryError:
        return _fail(jobs, job, attempt, layout, OUT_OF_MEMORY)
    except Exception:
        log.exception("job %s: training failed", job.id)
        return _fail(
            jobs, job, attempt, layout, "internal error in the training worker (see its log)"
        )
    if recorder.superseded or not record_history(jobs, job.id, history, attempt):
        return _not_held(jobs, job.id, attempt)
    current = jobs.get(job.id)
    if current.status is not JobStatus.running or current.attempt != attempt:
        return _not_held(jobs, job.id, attempt)  # cancelled or taken over: publish nothing
    if recorder.interrupted:
        return Outcome(OutcomeKind.interrupted)  # checkpointed at the iteration it reached
    models = open_model_store(settings, Problems())
    meta = model_meta(job, net, history, classes, preprocessing)
    models.save(meta, net)
    if not jobs.finish(job.id, JobStatus.succeeded, model_id=meta.id, attempt=attempt):
        models.delete(meta.id)  # cancelled or taken over while publishing
        return _not_held(jobs, job.id, attempt)
    layout.remove_checkpoints(job.id)
    return Outcome(OutcomeKind.succeeded)
