"""Fixtures for the client and `cnn` tests: one real uvicorn server for the whole session (an
in-process ASGI transport would buffer the endless event stream), a dataset and a model on it,
and a runner of the `cnn` command that keeps stdout and stderr apart."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from cnn_client import Client
from cnn_client.cli import app
from tests.support.builders import TINY_ARCHITECTURE, TINY_TRAINING, digits_npz
from tests.support.server import LiveServer

Cnn = Callable[..., Result]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server with fast polling, shared by every test here."""
    root = tmp_path_factory.mktemp("client-server")
    live = LiveServer(
        root / "data", root / "server.log", inherit_settings=False, CNN_POLL_INTERVAL="0.05"
    )
    try:
        live.start()
        yield live
    finally:
        live.kill_group()


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url) as api:
        yield api


@pytest.fixture
def cnn(server: LiveServer) -> Cnn:
    """Run `cnn ARGS...` against the live server (`env`: more environment variables); the
    result has `.stdout` and `.stderr`."""

    def run(*args: str, url: str | None = None, **env: str) -> Result:
        env = {"CNN_URL": url or server.url, "CNN_API_KEY": "", **env}
        return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)

    return run


@pytest.fixture(scope="session")
def spec(server: LiveServer) -> dict:
    """The live server's OpenAPI document."""
    return httpx.get(f"{server.url}/openapi.json", timeout=30).json()


@pytest.fixture(scope="session")
def digits_id(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An uploaded dataset of 300 real digits."""
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    path.write_bytes(digits_npz())
    with Client(server.url) as api:
        return api.upload_dataset([path], name="digits").id


@pytest.fixture(scope="session")
def model_id(server: LiveServer, digits_id: str) -> str:
    """A model trained (quickly) on `digits_id`."""
    with Client(server.url) as api:
        job = api.submit_job(digits_id, TINY_ARCHITECTURE, TINY_TRAINING)
        final = api.wait(job.id, timeout=120)
    assert final.status == "succeeded", final.error
    assert final.model_id is not None
    return final.model_id


def write_architecture(folder: Path, config: dict) -> Path:
    """`config` saved as a FILE.json for `cnn train --architecture`."""
    path = folder / "architecture.json"
    path.write_text(json.dumps(config))
    return path
