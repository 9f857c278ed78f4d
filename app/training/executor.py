"""Executors run a job's worker somewhere and report when it has ended.

`JobExecutor` is the interface the runner needs; `ProcessExecutor` runs each job in its own
process. One process per job means a worker that dies (kill -9, out of memory) reports its exit
code and harms nothing else, unlike a process pool. Processes are forked from a fork server that
has imported NumPy and cnn_core once, so a job starts in milliseconds without inheriting any
thread, lock or connection of the server.

Workers never outlive the server: each holds the read end of a pipe whose only write end the
server holds, and exits when that pipe closes, which the kernel does however the server ends.
Workers also run at a lower CPU priority, so the API stays responsive while they train.
"""

import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Protocol

from app.training.worker import run_job

log = logging.getLogger("app.executor")

WORKER_NICENESS = 10


class JobExecutor(Protocol):
    """Runs workers; the runner decides what runs when."""

    def start(self, job_id: str) -> None: ...
    def stop(self, job_id: str) -> None: ...
    def reap(self) -> list[tuple[str, int]]: ...
    def running(self) -> list[str]: ...
    def shutdown(self) -> None: ...


def _exit_with_server(server_alive: Connection) -> None:
    """Exit this process as soon as the server's end of `server_alive` closes."""
    def watch() -> None:
        wait([server_alive])
        os._exit(1)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()


def _process_main(job_id: str, data_dir: str, server_alive: Connection) -> None:
    _exit_with_server(server_alive)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the server's to handle
    os.nice(WORKER_NICENESS)
    run_job(job_id, Path(data_dir))


class ProcessExecutor:
    """One process per job, forked by a fork server that has the worker module loaded."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["app.training.worker"])
        multiprocessing.forkserver.ensure_running()
        self._server_alive, self._keep_alive = self._context.Pipe(duplex=False)
        self._processes: dict[str, BaseProcess] = {}
        self._lock = threading.Lock()

    def start(self, job_id: str) -> None:
        """Start a worker process for `job_id`."""
        process = self._context.Process(
            target=_process_main, args=(job_id, str(self._data_dir), self._server_alive),
            name=f"cnn-job-{job_id}", daemon=True,
        )
        process.start()
        with self._lock:
            self._processes[job_id] = process

    def stop(self, job_id: str) -> None:
        """Kill the job's worker at once (SIGKILL); the runner reaps it."""
        with self._lock:
            process = self._processes.get(job_id)
        if process is not None and process.exitcode is None:
            process.kill()

    def reap(self) -> list[tuple[str, int]]:
        """(job id, exit code) of each worker that has ended since the last call."""
        with self._lock:
            ended = [(job_id, p) for job_id, p in self._processes.items() if p.exitcode is not None]
            for job_id, _ in ended:
                del self._processes[job_id]
        results = [(job_id, process.exitcode) for job_id, process in ended]
        for _, process in ended:
            process.close()
        return results

    def running(self) -> list[str]:
        """Ids of the jobs whose worker has not been reaped."""
        with self._lock:
            return list(self._processes)

    def shutdown(self) -> None:
        """Kill every worker and wait for it; their jobs resume on the next start."""
        with self._lock:
            processes, self._processes = list(self._processes.values()), {}
        for process in processes:
            if process.exitcode is None:
                process.kill()
        for process in processes:
            process.join(timeout=5)
        self._server_alive.close()
        self._keep_alive.close()
