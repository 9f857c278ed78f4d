"""Executors run a job's worker somewhere and report when it has ended.

`JobExecutor` is the interface the runner needs; `ProcessExecutor` runs each job in its own
process. One process per job means a worker that dies (kill -9, out of memory) reports its exit
code and harms nothing else, unlike a process pool. Processes are forked from a fork server that
has imported NumPy and cnn_core once, so a job starts in milliseconds without inheriting any
thread, lock or connection of the server.

Workers never outlive the server: each holds the read end of a pipe whose only write end the
server holds, and exits when that pipe closes, which the kernel does however the server ends.
Workers run at a lower CPU priority, so the API stays responsive while they train, and under an
address-space limit, so a job that needs too much memory fails with MemoryError instead of
pushing the machine into the OOM killer. SIGTERM asks a worker to checkpoint at its next
iteration and exit with `EXIT_INTERRUPTED`; its job resumes from there.
"""

import logging
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Protocol

from app.training.worker import run_job

log = logging.getLogger("app.executor")

WORKER_NICENESS = 10
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: checkpointed on request, the job is to be resumed


class JobExecutor(Protocol):
    """Runs workers; the runner decides what runs when."""

    def start(self, job_id: str) -> None: ...
    def stop(self, job_id: str) -> None: ...
    def interrupt_all(self) -> None: ...
    def reap(self) -> list[tuple[str, int]]: ...
    def running(self) -> list[str]: ...
    def shutdown(self, deadline: float) -> list[tuple[str, int]]: ...


def _exit_with_server(server_alive: Connection) -> None:
    """Exit this process as soon as the server's end of `server_alive` closes."""

    def watch() -> None:
        wait([server_alive])
        os._exit(1)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space at `megabytes` (0: leave it as it is)."""
    if megabytes <= 0:
        return
    limit = megabytes * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _process_main(job_id: str, data_dir: str, server_alive: Connection, memory_mb: int) -> None:
    _exit_with_server(server_alive)
    interrupt = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the server's to handle
    signal.signal(signal.SIGTERM, lambda _signum, _frame: interrupt.set())
    os.nice(WORKER_NICENESS)
    limit_memory(memory_mb)
    if run_job(job_id, Path(data_dir), interrupt):
        sys.exit(EXIT_INTERRUPTED)


class ProcessExecutor:
    """One process per job, forked by a fork server that has the worker module loaded."""

    def __init__(self, data_dir: Path, *, memory_mb: int) -> None:
        self._data_dir = data_dir
        self._memory_mb = memory_mb
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["app.training.worker"])
        multiprocessing.forkserver.ensure_running()
        self._server_alive, self._keep_alive = self._context.Pipe(duplex=False)
        self._processes: dict[str, BaseProcess] = {}
        self._lock = threading.Lock()

    def start(self, job_id: str) -> None:
        """Start a worker process for `job_id`."""
        process = self._context.Process(
            target=_process_main,
            args=(job_id, str(self._data_dir), self._server_alive, self._memory_mb),
            name=f"cnn-job-{job_id}",
            daemon=True,
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

    def interrupt_all(self) -> None:
        """Ask every worker to checkpoint and exit (SIGTERM); the runner reaps them."""
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            if process.exitcode is None:
                process.terminate()

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

    def shutdown(self, deadline: float) -> list[tuple[str, int]]:
        """Wait until `deadline` (time.monotonic) for the workers to end, kill the rest; the
        (job id, exit code) of every worker not reaped before."""
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.warning("worker %s did not stop in time; killing it", process.name)
                process.kill()
                process.join(timeout=5)
        ended = self.reap()
        self._server_alive.close()
        self._keep_alive.close()
        return ended
