"""A real uvicorn process serving the app, started the way `make run` starts it, for the tests
that need signals, worker processes and real sockets."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from cnn_core import Network
from tests.app.conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn app.main:app on a free loopback port, a data dir and extra `CNN_*` settings."""

    def __init__(self, data_dir: Path, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {**os.environ, "CNN_DATA_DIR": str(data_dir), **env}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "app.main:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--timeout-graceful-shutdown",
                    "8",
                    "--http",
                    "app.limits:HeaderTimeoutH11Protocol",
                ],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def kill_group(self) -> None:
        """SIGKILL the server and everything it started."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@contextlib.contextmanager
def live_server(data_dir: Path, log: Path, **env: str) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """A started `LiveServer` and a client of it; the process group is killed on the way out."""
    server = LiveServer(data_dir, log, **env)
    try:
        server.start()
        with server.client() as client:
            yield server, client
    finally:
        server.kill_group()


def model_params(client: httpx.Client, model_id: str, tmp_path: Path) -> dict[str, np.ndarray]:
    """The parameters of a model as the server's download serves it."""
    path = tmp_path / f"{model_id}.npz"
    path.write_bytes(client.get(f"/models/{model_id}/download").content)
    return Network.load(path).params
