"""Test-only fault injection for a server started with this folder first on PYTHONPATH.

Python imports `sitecustomize` in every process it starts, the fork server of the training
workers included, so the wrapper below is in place wherever jobs train: a job named
`GREEDY_NAME` allocates `GREEDY_MB` before it trains. It stands in for a job that needs more
memory than a worker may use, although its architecture passed admission.
"""

GREEDY_NAME = "greedy"
GREEDY_MB = 2048


def _allocate_first_for_greedy_jobs() -> None:
    import numpy as np

    from app.training import worker

    train = worker.train

    def greedy_train(job, *args, **kwargs):
        if job.name == GREEDY_NAME:
            np.empty(GREEDY_MB * 2**20, dtype=np.uint8)  # address space is what the limit caps
        return train(job, *args, **kwargs)

    worker.train = greedy_train


_allocate_first_for_greedy_jobs()
