"""The costs cursor (`since`, the events' id) never passes an epoch whose summary is not stored
yet: a worker stores an epoch's last costs and its summary in two writes, and a reader between
them would otherwise skip that summary for good."""

from types import SimpleNamespace

from app.routers.jobs import cost_history
from app.storage.jobs import JobStatus
from cnn_core.history import EpochSummary, IterationCost

PER_EPOCH = 3


class Store:
    """Just what `cost_history` reads of a job store: costs after an iteration."""

    def __init__(self) -> None:
        self.iterations: list[IterationCost] = []
        self.epochs: list[EpochSummary] = []

    def costs(
        self, job_id: str, since: int, max_points: int | None = None, limit: int | None = None
    ) -> tuple[list[IterationCost], list[EpochSummary]]:
        return (
            [i for i in self.iterations if i.iteration > since],
            [e for e in self.epochs if e.last_iteration > since],
        )

    def add_iterations(self, first: int, last: int) -> None:
        self.iterations += [
            IterationCost((i - 1) // PER_EPOCH + 1, i, 1.0 / i) for i in range(first, last + 1)
        ]

    def end_epoch(self, epoch: int) -> None:
        self.epochs.append(EpochSummary(epoch, 0.5, 0.9, 0.6, 0.8, 1.0, epoch * PER_EPOCH))


def job(status: JobStatus) -> SimpleNamespace:
    return SimpleNamespace(id="j", status=status, iterations_per_epoch=PER_EPOCH)


def test_an_epochs_last_iteration_waits_for_its_summary() -> None:
    store = Store()
    store.add_iterations(1, 3)  # epoch 1's costs are stored, its summary not yet
    first = cost_history(store, job(JobStatus.running), 0)
    assert [i.iteration for i in first.iterations] == [1, 2] and first.epochs == []
    assert first.last_iteration == 2

    store.end_epoch(1)
    store.add_iterations(4, 5)
    second = cost_history(store, job(JobStatus.running), first.last_iteration)
    assert [i.iteration for i in second.iterations] == [3, 4, 5]
    assert [e.epoch for e in second.epochs] == [1] and second.last_iteration == 5


def test_a_finished_job_gets_everything_even_without_a_summary() -> None:
    store = Store()
    store.add_iterations(1, 3)  # e.g. it failed between the two writes
    history = cost_history(store, job(JobStatus.failed), 0)
    assert [i.iteration for i in history.iterations] == [1, 2, 3] and history.last_iteration == 3
