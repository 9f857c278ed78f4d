"""How a worker's run of a job ended: what an executor reports and the runner acts on.

A worker reports `succeeded`, `failed`, `cancelled` or `interrupted` itself, after recording the
job's new state in the job store (all but `interrupted`, which leaves the job `running` for the
runner to re-queue). `died` is the executor's word for a worker that ended without reporting
(killed, out of memory in the kernel's eyes, lost with its machine); the runner then fails the
job with the reason. `superseded` is a worker's word for a run whose job another worker took
over (its lease had run out): the job is that worker's now, so nothing is to be done.
"""

from dataclasses import dataclass
from enum import StrEnum

from app.storage.jobs import JobRecord


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


def end_line(job_id: str, outcome: Outcome, seconds: float, job: JobRecord | None) -> str:
    """The log's one line for the end of a run: outcome, duration, and the model it published
    or the reason it failed (`job` is the record as the run left it)."""
    line = f"job {job_id} ended: {outcome.kind} after {seconds:.1f} s"
    if outcome.kind is OutcomeKind.succeeded and job is not None and job.model_id:
        line += f", model {job.model_id}"
    if outcome.kind is OutcomeKind.interrupted:
        line += ", checkpointed to resume"
    error = job.error if job is not None and outcome.kind is OutcomeKind.failed else None
    reason = outcome.reason or error
    return f"{line}: {reason}" if reason else line
