"""How a worker's run of a job ended: what an executor reports and the runner acts on.

A worker reports `succeeded`, `failed`, `cancelled` or `interrupted` itself, after recording the
job's new state in the job store (all but `interrupted`, which leaves the job `running` for the
runner to re-queue). `died` is the executor's word for a worker that ended without reporting
(killed, out of memory in the kernel's eyes, lost with its machine); the runner then fails the
job with the reason. `superseded` is a worker's word for a run whose job another worker took
over (its lease had run out): the job is that worker's now, so nothing is to be done.
"""

import logging
from dataclasses import dataclass
from enum import StrEnum

from app.storage.jobs import JobRecord, JobStatus


class OutcomeKind(StrEnum):
    succeeded = "succeeded"  # the model is published
    failed = "failed"  # the job failed, for `reason`
    cancelled = "cancelled"  # the job was cancelled while the worker had it; nothing published
    interrupted = "interrupted"  # checkpointed on a stop request: the job is to be resumed
    died = "died"  # the worker ended without reporting, for `reason`
    superseded = "superseded"  # another claim took the job over; this run published nothing


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    reason: str | None = None


QUIET_ENDS = (OutcomeKind.succeeded, OutcomeKind.cancelled, OutcomeKind.interrupted)


def log_end(
    log: logging.Logger, job_id: str, outcome: Outcome, seconds: float, job: JobRecord | None
) -> None:
    """Log the one line for the end of a run, at INFO or, for a failure or a death, WARNING:
    outcome, duration, and the model it published or the reason it failed (`job` is the record
    as the run left it). A run killed because its job was cancelled ends `died` in the
    executor's eyes, but cancelled is what happened."""
    kind = outcome.kind
    if job is not None and job.status is JobStatus.cancelled:
        kind = OutcomeKind.cancelled
    line = f"job {job_id} ended: {kind} after {seconds:.1f} s"
    if kind is OutcomeKind.succeeded and job is not None and job.model_id:
        line += f", model {job.model_id}"
    if kind is OutcomeKind.interrupted:
        line += ", checkpointed to resume"
    error = job.error if job is not None and kind is OutcomeKind.failed else None
    reason = None if kind is OutcomeKind.cancelled else outcome.reason or error
    log.log(
        logging.INFO if kind in QUIET_ENDS else logging.WARNING,
        f"{line}: {reason}" if reason else line,
    )
