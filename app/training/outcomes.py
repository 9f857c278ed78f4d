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
