"""`python -m app.serve` and `python -m app.healthcheck`, the Docker image's command and
HEALTHCHECK, run here without Docker: both follow `CNN_PORT`, the server logs each job's start
and end, and a server stopped with SIGTERM exits with code 0 once it has shut down (the
`uvicorn` command ends killed by the signal)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.live_server import REPO, free_port, wait_for_health
from tests.support.server import submit, wait_for_job

STOP_DEADLINE_S = 9  # Docker kills the container 10 s after SIGTERM


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.healthcheck"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_takes_its_port_from_the_settings_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CNN_HOST": "127.0.0.1",
        "CNN_PORT": str(port),
        "CNN_DATA_DIR": str(tmp_path / "data"),
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "app.serve"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_health(
            f"http://127.0.0.1:{port}",
            lambda: server.poll() is None,
            lambda: f":\n{log.read_text()}",
        )
        assert healthcheck(env).returncode == 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            job = wait_for_job(client, submit(client, "mnist-sample", "tiny", epochs=1)["id"])
        assert job["status"] == "succeeded"
        logged_by = time.monotonic() + 30
        while f"job {job['id']} ended: " not in log.read_text():  # logged once it is reaped
            assert time.monotonic() < logged_by, log.read_text()
            time.sleep(0.1)
        output = log.read_text()
        assert f"INFO:     job {job['id']} started" in output
        assert f"job {job['id']} ended: succeeded after " in output
        assert f" s, model {job['model_id']}" in output

        started = time.monotonic()
        server.send_signal(signal.SIGTERM)  # what `docker stop` sends, through the init
        code = server.wait(timeout=STOP_DEADLINE_S)
        elapsed = time.monotonic() - started
        output = log.read_text()
        assert code == 0, f"exit code {code} after SIGTERM:\n{output}"
        assert "Application shutdown complete" in output and "Traceback" not in output, output
        assert elapsed < STOP_DEADLINE_S
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)

    refused = healthcheck(env)
    assert refused.returncode == 1 and "health check failed" in refused.stderr, refused
