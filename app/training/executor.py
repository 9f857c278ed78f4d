"""Executors run a job's worker somewhere and report how each run ended, as an `Outcome`.

`JobExecutor` is the interface the runner needs; `open_executor` picks the one the settings
name. `ProcessExecutor` runs each job in its own process on this machine. One process per job
means a worker that dies (kill -9, out of memory) harms nothing else, unlike a process pool:
the worker sends its outcome back through a pipe, and a worker that ended without sending one
is reported as `died`, with its exit status in words. Processes are forked from a fork server that
has imported NumPy and cnn_core once, so a job starts in milliseconds without inheriting any
thread, lock or connection of the server.

Workers never outlive the server: each holds the read end of a pipe whose only write end the
server holds, and exits when that pipe closes, which the kernel does however the server ends.
Workers run at a lower CPU priority, so the API stays responsive while they train, and under an
address-space limit, so a job that needs too much memory fails with MemoryError instead of
pushing the machine into the OOM killer. They ignore SIGINT and SIGTERM: stopping is the
server's to decide, and it asks through the job store (`JobStore.request_stop`), which a worker
on any machine reads.
"""

import logging
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Protocol

from app.settings import Settings
from app.training.outcomes import Outcome, OutcomeKind
from app.training.worker import run_job

log = logging.getLogger("app.executor")

WORKER_NICENESS = 10


class JobExecutor(Protocol):
    """Runs workers; the runner decides what runs when."""

    def start(self, job_id: str) -> None:
        """Run the worker of `job_id`, which the runner has claimed."""

    def kill(self, job_id: str) -> None:
        """End the job's worker at once (its job was cancelled); `reap` reports it."""

    def reap(self) -> list[tuple[str, Outcome]]:
        """(job id, outcome) of each run that has ended since the last call."""

    def running(self) -> list[str]:
        """Ids of the jobs whose run has not been reaped."""

    def shutdown(self, deadline: float) -> list[tuple[str, Outcome]]:
        """Wait until `deadline` (time.monotonic) for the runs to end, end the rest; the
        outcomes not reaped before."""


def open_executor(settings: Settings) -> JobExecutor:
    """The executor of `settings`: worker processes on this machine."""
    return ProcessExecutor(settings)


def death_reason(exitcode: int) -> str:
    """Why a worker process that ended without reporting an outcome ended, in words."""
    if exitcode < 0:
        return f"worker process died (signal {-exitcode}, {signal.Signals(-exitcode).name})"
    if exitcode == 0:
        return "worker process exited without reporting a result"
    return f"worker process exited with code {exitcode}"


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


def _process_main(
    job_id: str, settings: Settings, server_alive: Connection, report: Connection
) -> None:
    _exit_with_server(server_alive)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the server's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # so is a stop: see the module docstring
    os.nice(WORKER_NICENESS)
    limit_memory(settings.worker_memory_mb)
    report.send(run_job(job_id, settings))


class _Run:
    """A worker process and the read end of the pipe it reports its outcome on."""

    def __init__(self, process: BaseProcess, report: Connection) -> None:
        self.process = process
        self.report = report

    def outcome(self) -> Outcome:
        """What the ended worker reported, or that it died and why; releases the run."""
        try:
            outcome = self.report.recv() if self.report.poll() else None
        except EOFError:  # ended without sending anything
            outcome = None
        if outcome is None:
            outcome = Outcome(OutcomeKind.died, death_reason(self.process.exitcode))
        self.report.close()
        self.process.close()
        return outcome


class ProcessExecutor:
    """One process per job, forked by a fork server that has the worker module loaded."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["app.training.worker"])
        multiprocessing.forkserver.ensure_running()
        self._server_alive, self._keep_alive = self._context.Pipe(duplex=False)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    def start(self, job_id: str) -> None:
        """Start a worker process for `job_id`."""
        report, child_end = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_process_main,
            args=(job_id, self._settings, self._server_alive, child_end),
            name=f"cnn-job-{job_id}",
            daemon=True,
        )
        process.start()
        child_end.close()  # the worker holds the only write end: EOF once it has ended
        with self._lock:
            self._runs[job_id] = _Run(process, report)

    def kill(self, job_id: str) -> None:
        """Kill the job's worker at once (SIGKILL); the runner reaps it."""
        with self._lock:
            run = self._runs.get(job_id)
        if run is not None and run.process.exitcode is None:
            run.process.kill()

    def reap(self) -> list[tuple[str, Outcome]]:
        """(job id, outcome) of each worker that has ended since the last call."""
        with self._lock:
            ended = [(i, run) for i, run in self._runs.items() if run.process.exitcode is not None]
            for job_id, _ in ended:
                del self._runs[job_id]
        return [(job_id, run.outcome()) for job_id, run in ended]

    def running(self) -> list[str]:
        """Ids of the jobs whose worker has not been reaped."""
        with self._lock:
            return list(self._runs)

    def shutdown(self, deadline: float) -> list[tuple[str, Outcome]]:
        """Wait until `deadline` (time.monotonic) for the workers to end, kill the rest; the
        (job id, outcome) of every worker not reaped before."""
        with self._lock:
            processes = [run.process for run in self._runs.values()]
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
