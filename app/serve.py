"""Serve the app on `CNN_HOST:CNN_PORT` (`python -m app.serve`: `make run` and the Docker image).

Once its graceful shutdown is done, uvicorn restores the signal handlers it found and raises
the signal it caught again, so under the `uvicorn` command a server stopped as asked ends
"killed by SIGTERM" (exit code 143 under `docker stop`), which supervisors report as a crash.
Here the handler it finds ends the process with exit code 0 instead; the shutdown itself
(connections drained, running jobs checkpointed, database closed) is uvicorn's and the app's,
and so is the protocol, with its header deadline.
"""

import logging
import os
import signal
import sys

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from app.limits import HeaderTimeoutH11Protocol
from app.settings import Settings

# Docker sends SIGKILL 10 s after SIGTERM: drain connections for 8 s at most, leaving time for
# the lifespan to checkpoint the running jobs.
GRACEFUL_SHUTDOWN_S = 8


# uvicorn's logging, plus the service's own INFO lines (each job's start and end) beside it.
LOG_CONFIG = {
    **LOGGING_CONFIG,
    "loggers": {
        **LOGGING_CONFIG["loggers"],
        "app": {"handlers": ["default"], "level": "INFO", "propagate": False},
    },
}


def _exit_cleanly(signum: int, frame: object) -> None:
    """A stop that was asked for (SIGTERM, or Ctrl+C) ends with exit code 0.

    Everything the service keeps is saved by then, so the interpreter is not torn down: freeing
    its heap takes seconds on a busy machine, as dying by the signal never did."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    settings = Settings()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        http=HeaderTimeoutH11Protocol,  # slow headers are cut off
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        log_config=LOG_CONFIG,
    )


if __name__ == "__main__":
    main()
