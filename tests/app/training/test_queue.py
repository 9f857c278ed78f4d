"""The server's side of many machines (`QueueRunner`), on a private Redis: what one reconcile
does with leases that ran out and with queued jobs Redis holds no call for."""

import time
from collections.abc import Iterator

import pytest

from app.main import build_runner
from app.settings import Settings
from app.storage.integrity import Problems
from app.storage.jobs import JobStatus
from app.training.queue import QueueRunner
from app.training.rq_worker import MAX_LEASE_LOSSES
from tests.app.conftest import add_job
from tests.support.servers import RedisServer, running


@pytest.fixture
def runner(settings: Settings) -> Iterator[QueueRunner]:
    with running(RedisServer()) as redis_server:
        queue_settings = settings.model_copy(update={"redis_url": redis_server.url})
        runner = build_runner(queue_settings, Problems())
        assert isinstance(runner, QueueRunner)
        try:
            yield runner
        finally:
            runner.shutdown()
            runner.jobs.close()


def reconcile(runner: QueueRunner) -> None:
    runner._next_reconcile = 0.0  # what the next round of the loop would do
    runner._tick()


def test_a_job_whose_workers_keep_dying_fails_with_the_reason(runner: QueueRunner) -> None:
    jobs = runner.jobs
    doomed, other = add_job(jobs), add_job(jobs)
    for lost in range(1, MAX_LEASE_LOSSES + 1):
        assert jobs.claim(f"host-{lost}", lease_seconds=0.05).job_id == doomed
        time.sleep(0.1)  # its worker vanished: the lease is not renewed
        reconcile(runner)
        record = jobs.get(doomed)
        if lost < MAX_LEASE_LOSSES:
            assert record.status is JobStatus.queued and record.queue_position == 1
        else:
            assert record.status is JobStatus.failed
            assert f"lost {MAX_LEASE_LOSSES} times" in record.error
    assert jobs.get(other).status is JobStatus.queued


def test_queued_jobs_get_their_calls_back_after_redis_lost_them(runner: QueueRunner) -> None:
    for _ in range(3):
        runner.submit(name=None, dataset_id="mnist-sample", architecture={}, training={})
    assert runner.queue.count == 3
    runner.queue.empty()  # a Redis restart without persistence
    reconcile(runner)
    assert runner.queue.count == 3
    reconcile(runner)
    assert runner.queue.count == 3  # one call per queued job, never more
