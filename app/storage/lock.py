"""One server per data directory: an exclusive lock held for as long as the server runs.

Two servers on one data directory would each run start-up recovery on the other's state: the
second re-queues the first's running job (then trains it twice at once) and sweeps its
in-flight temp files. So, in the embedded mode (SQLite and local worker processes), the server
takes an exclusive `flock` on `<data dir>/server.lock` before touching anything and refuses to
start, naming the holder's pid, when another process holds it. The kernel releases the lock
when its holder exits, however it exits (kill -9 included), so a crash never leaves a stale
lock behind; the pid written in the file is only for the message. `flock` is local to one
machine (and unreliable on some network file systems): several servers sharing a volume need
a server database, whose own locks coordinate them.
"""

import fcntl
import os
from pathlib import Path

LOCK_NAME = "server.lock"


class DataDirLocked(RuntimeError):
    """Another server holds the data directory."""


class DataDirLock:
    """The exclusive lock on one data directory."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `DataDirLocked` with a message saying what to do."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"another cnn-service server (pid {holder}) is using the data directory "
                f"{self.path.parent}: stop it first, or start this one with another "
                f"CNN_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a new holder)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
