"""Private Redis and PostgreSQL servers for the tests, on free loopback ports in temp dirs.

Each is a real server (Debian's `redis-server` and `postgresql` packages), started for the
test session and removed afterwards. A missing binary skips the tests that need it, naming the
apt command that installs it; under CI (`CI=true`) it fails them instead, so a CI run can never
pass by skipping them.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from benchmarks.live_server import free_port

# Debian's layout: /usr/lib/postgresql/<major>/bin; the newest installed is used.
POSTGRES_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"),
    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    default=Path("/usr/lib/postgresql/15/bin"),
)


def require(binary: Path | str, package: str) -> str:
    """The path of `binary`, or skip (fail under CI) with the command that installs it."""
    found = shutil.which(binary) if isinstance(binary, str) else str(binary)
    if found and os.access(found, os.X_OK):
        return found
    message = f"{binary} not found: apt-get install {package}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _wait(ready, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} did not start in {timeout} s"
        time.sleep(0.05)


class RedisServer:
    """`redis-server` on a free port, without persistence (a restart loses everything, which
    is what the tests of a Redis loss want)."""

    def __init__(self) -> None:
        self.binary = require("redis-server", "redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="cnn-redis-"))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)

        def ready() -> bool:
            with contextlib.suppress(redis.ConnectionError):
                return client.ping()
            return False

        _wait(ready, "redis-server")
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        """Kill the server and start an empty one on the same port: everything queued is lost."""
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL cluster (trust authentication, no fsync) on a free port; as root it is
    initialised and run as the `postgres` user, who must own its data directory."""

    def __init__(self) -> None:
        self.initdb = require(POSTGRES_BIN / "initdb", "postgresql")
        self.pg_ctl = require(POSTGRES_BIN / "pg_ctl", "postgresql")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cnn-postgres-"))
        self.data = self.dir / "data"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres")
        self.admin_url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start_again()

    def stop(self) -> None:
        """Stop the server, its committed data kept for `start_again` (a fast shutdown: with
        this cluster's synchronous_commit=off, an immediate one may lose the last commits)."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def start_again(self) -> None:
        """Start the server on its existing data and return once it accepts connections."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l",
                  str(self.dir / "log"), "-w", "start")  # fmt: skip
        engine = create_engine(self.admin_url)

        def ready() -> bool:
            with contextlib.suppress(Exception), engine.connect():
                return True
            return False

        _wait(ready, "postgres")
        engine.dispose()

    def new_database(self) -> str:
        """A new empty database; its URL as `CNN_DATABASE_URL` takes it."""
        name = f"t{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop")
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():  # pg_ctl failed: end the postmaster by its own pid
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(server: RedisServer | PostgresServer) -> Iterator[RedisServer | PostgresServer]:
    """`server` started, and removed on the way out."""
    try:
        server.start()
        yield server
    finally:
        server.remove()
