"""`Client.follow` (and `cnn jobs follow` on it) across dropped connections and a server restart:
every cost point and epoch summary arrives once, in order, and each reconnection resumes after
the last point seen (Last-Event-ID)."""

import json
import re
import signal
import threading
import time
from pathlib import Path

from cnn_client import Client, CostsEvent, EndEvent, ProgressEvent
from tests.client.conftest import Cnn
from tests.support.proxy import CuttingProxy
from tests.support.server import LiveServer

# LeNet-5 in batches of 8: 225 iterations per epoch, several of the worker's half-second flushes
# even on an idle machine, so the stream can be cut mid-job twice.
EPOCHS = 3
SLOW_TRAINING = {"epochs": EPOCHS, "batch_size": 8, "validation_split": 0.1, "seed": 1}
# Cut every connection after the first costs event, then after the first one on the new
# connection: each cut comes as early in the job as the server's flushes allow.
DROP_AT_EVENTS = (1, 2)


def test_follow_survives_dropped_connections_without_gaps_or_duplicates(
    server: LiveServer,
) -> None:
    proxy = CuttingProxy(server.port)
    try:
        with Client(proxy.url, reconnect_for=20) as client:
            job = client.submit_job("mnist-sample", "lenet5", SLOW_TRAINING)
            iterations, epochs, resumed_from, costs_events = [], [], [], 0
            last = None
            for event in client.follow(job.id):
                if isinstance(event, CostsEvent):
                    costs_events += 1
                    iterations += [point.iteration for point in event.data.iterations]
                    epochs += [summary.epoch for summary in event.data.epochs]
                    if costs_events in DROP_AT_EVENTS:
                        resumed_from.append(event.id)
                        proxy.cut()
                else:
                    assert isinstance(event, ProgressEvent | EndEvent)
                last = event
            full = client.job_costs(job.id)
    finally:
        proxy.close()

    assert isinstance(last, EndEvent) and last.data.status == "succeeded", last
    total = last.data.progress.total_iterations
    assert iterations == list(range(1, total + 1))  # no gap, no duplicate, in order
    assert iterations == [point.iteration for point in full.iterations]
    assert epochs == list(range(1, EPOCHS + 1))
    # Both cuts happened mid-job and each reconnection asked to resume after the last point.
    assert len(resumed_from) == len(DROP_AT_EVENTS) and resumed_from[-1] < total
    sent_ids = [
        int(found.group(1))
        for request in proxy.requests
        if (found := re.search(rb"(?i)\r\nlast-event-id: (\d+)\r\n", request))
    ]
    assert sent_ids == resumed_from


def test_follow_survives_a_server_restart_mid_job(tmp_path: Path) -> None:
    restarted = LiveServer(
        tmp_path / "data", tmp_path / "server.log", inherit_settings=False, CNN_POLL_INTERVAL="0.05"
    )

    def restart() -> None:
        """SIGTERM (running jobs checkpoint and stop), then start again on the same port."""
        restarted.process.send_signal(signal.SIGTERM)
        restarted.process.wait(timeout=30)
        restarted.start()

    try:
        restarted.start()
        first_pid = restarted.process.pid
        with Client(restarted.url, reconnect_for=60) as client:
            job = client.submit_job("mnist-sample", "lenet5", SLOW_TRAINING)
            iterations, epochs, stopped_at, statuses = [], [], None, []
            restarter = threading.Thread(target=restart)
            for event in client.follow(job.id):
                if isinstance(event, CostsEvent):
                    iterations += [point.iteration for point in event.data.iterations]
                    epochs += [summary.epoch for summary in event.data.epochs]
                    if stopped_at is None and iterations[-1] > 20:
                        stopped_at = iterations[-1]
                        restarter.start()
                else:
                    statuses.append(event.data.status)
            restarter.join()
            full = client.job_costs(job.id)
    finally:
        restarted.kill_group()

    assert restarted.process.pid != first_pid and stopped_at is not None
    assert statuses[-1] == "succeeded"
    total = event.data.progress.total_iterations
    assert stopped_at < total  # the restart came mid-job
    assert iterations == list(range(1, total + 1))
    assert iterations == [point.iteration for point in full.iterations]
    assert epochs == list(range(1, EPOCHS + 1))


def test_cnn_jobs_follow_json_survives_dropped_connections(
    server: LiveServer, client: Client, cnn: Cnn
) -> None:
    proxy = CuttingProxy(server.port)
    job = client.submit_job("mnist-sample", "lenet5", SLOW_TRAINING)
    total = EPOCHS * 225  # 1,800 training digits in batches of 8
    cuts: list[int] = []  # the iteration the job (asked directly) had reached at each cut

    def cut_twice() -> None:
        """Cut the follower's connections once a tenth of the job is done, then at half."""
        for fraction in (0.1, 0.5):
            while (state := client.get_job(job.id)).status.is_active:
                if state.progress.iteration >= fraction * total and proxy.cut():
                    cuts.append(state.progress.iteration)
                    break
                time.sleep(0.05)

    cutter = threading.Thread(target=cut_twice, daemon=True)
    try:
        cutter.start()
        result = cnn("jobs", "follow", job.id, "--json", url=proxy.url)
        cutter.join(timeout=30)
    finally:
        proxy.close()
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "succeeded"
    costs = [e["data"] for e in events if e["event"] == "costs"]
    assert [p["iteration"] for c in costs for p in c["iterations"]] == list(range(1, total + 1))
    assert [summary["epoch"] for c in costs for summary in c["epochs"]] == [1, 2, 3]
    assert len(cuts) == 2 and cuts[-1] < total, cuts  # both mid-job
    resumed = [r for r in proxy.requests if re.search(rb"(?i)\r\nlast-event-id: \d+\r\n", r)]
    assert len(resumed) >= 2  # each reconnection resumed after the last point it had
