"""A real uvicorn process serving the app, started the way `make run` starts it.

The one copy of "start uvicorn on a free loopback port and wait for /health": the benchmarks
import it as `live_server`, the tests through `tests.support.server`; `wait_for_health` also
waits for the servers the tests start otherwise (`python -m app.serve`, a container).
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(
    url: str, running: Callable[[], bool], output: Callable[[], str], timeout: float = 60
) -> None:
    """Poll `url`/health until it answers 200. An AssertionError that ends with `output()`
    (the server's log, say) at once if `running()` turns false, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        assert running(), f"the server exited before answering /health{output()}"
        assert time.monotonic() < deadline, f"no /health at {url} in {timeout} s{output()}"
        time.sleep(0.05)


class LiveServer:
    """uvicorn app.main:app on a free loopback port, a data dir and extra `CNN_*` settings.

    `log`: a file that collects the server's output; None leaves it on this terminal, warnings
    only. `inherit_settings=False` drops the `CNN_*` variables of this process's environment
    (a developer's CNN_API_KEY, say), so only `settings` configure the server.
    """

    def __init__(
        self,
        data_dir: Path,
        log: Path | None = None,
        *,
        inherit_settings: bool = True,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        inherited = {
            key: value
            for key, value in os.environ.items()
            if inherit_settings or not key.startswith("CNN_")
        }
        self.env = {**inherited, "CNN_DATA_DIR": str(data_dir), **settings}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        """Start the server and return once /health answers 200."""
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--timeout-graceful-shutdown", "8"]
        command += ["--http", "app.limits:HeaderTimeoutH11Protocol"]
        with contextlib.ExitStack() as stack:
            if self.log is None:
                command += ["--log-level", "warning"]
                output = None
            else:
                output = stack.enter_context(open(self.log, "ab"))
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
            )
        try:
            wait_for_health(self.url, lambda: self.process.poll() is None, self.tail, timeout)
        except AssertionError:
            self.kill_group()
            raise

    def tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages ('' without a log file)."""
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace")
        return "\n--- server log:\n" + "\n".join(text.splitlines()[-lines:])

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def kill_group(self) -> None:
        """SIGKILL the server and everything it started."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@contextlib.contextmanager
def live_server(
    data_dir: Path, log: Path | None = None, **settings: str
) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """A started `LiveServer` and a client of it; the process group is killed on the way out."""
    server = LiveServer(data_dir, log, **settings)
    try:
        server.start()
        with server.client() as client:
            yield server, client
    finally:
        server.kill_group()
