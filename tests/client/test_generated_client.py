"""A client generated from the live spec by openapi-python-client works unmodified: it uploads a
dataset, trains, follows the job's events, predicts, downloads the model and deletes it, against
a real server that requires an API key.

The generator reads every operation without a warning. Its one setting here maps `image/png`
to `application/octet-stream`: it knows no image types, and so returns a PNG as a `File` only
with that mapping. It has no server-sent events support either: the stream is read through the
generated client's own httpx client, and each event parsed into the generated event models
(`CostsEvent`, `ProgressEvent`, `EndEvent`), which the spec describes in its components.
"""

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from types import ModuleType

import pytest
from httpx_sse import EventSource

from cnn_core import Network
from tests.support.builders import TINY_ARCHITECTURE, TINY_TRAINING, digits_npz, holdout, png_bytes
from tests.support.server import LiveServer

KEY = "generated-client-key"
PACKAGE = "cnn_service_client"
GENERATOR_CONFIG = {"content_type_overrides": {"image/png": "application/octet-stream"}}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("generated")
    server = LiveServer(
        root / "data",
        root / "server.log",
        inherit_settings=False,
        CNN_API_KEY=KEY,
        CNN_POLL_INTERVAL="0.05",
    )
    try:
        server.start()
        yield server
    finally:
        server.kill_group()


def generate(url: str, folder: Path) -> str:
    """Generate the client package from the spec at `url` into `folder`; the generator's output."""
    config = folder / "config.json"
    config.write_text(json.dumps(GENERATOR_CONFIG))
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--url", url]
    command += ["--meta", "none", "--output-path", str(folder / PACKAGE), "--config", str(config)]
    # Its post-hooks run ruff, which sits beside this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": path}
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def generated(
    keyed_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleType]:
    """The generated package, imported (and forgotten again afterwards)."""
    folder = tmp_path_factory.mktemp("client")
    output = generate(f"{keyed_server.url}/openapi.json", folder)
    assert "Warning" not in output, output
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_the_spec_without_a_key_generates_without_warnings(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", tmp_path / "server.log", inherit_settings=False)
    try:
        server.start()
        output = generate(f"{server.url}/openapi.json", tmp_path)
    finally:
        server.kill_group()
    assert "Warning" not in output, output
    code = (tmp_path / PACKAGE / "api" / "jobs" / "list_jobs.py").read_text()
    assert "def sync(" in code


def follow(client: object, job_id: str, models: ModuleType) -> list[object]:
    """Every event of the job's stream, as the generated event models, until `end`."""
    kinds = {"costs": models.CostsEvent, "progress": models.ProgressEvent, "end": models.EndEvent}
    events = []
    http = client.get_httpx_client()
    with http.stream("GET", f"/jobs/{job_id}/events", timeout=120) as response:
        assert response.status_code == 200
        for sse in EventSource(response).iter_sse():
            fields = {"event": sse.event, "data": json.loads(sse.data)}
            if sse.id:
                fields["id"] = sse.id
            events.append(kinds[sse.event].from_dict(fields))
    return events


def load(name: str) -> ModuleType:
    """A module of the generated package, e.g. `api.jobs.create_job`."""
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_a_generated_client_trains_follows_predicts_downloads_and_deletes(
    generated: ModuleType, keyed_server: LiveServer, tmp_path: Path
) -> None:
    models, File = load("models"), load("types").File
    client = generated.AuthenticatedClient(base_url=keyed_server.url, token=KEY, timeout=60)

    upload = models.CreateDatasetBody(
        files=[File(payload=BytesIO(digits_npz()), file_name="digits.npz")], name="digits"
    )
    dataset = load("api.datasets.create_dataset").sync(client=client, body=upload)
    assert isinstance(dataset, models.Dataset), dataset
    assert dataset.n_samples == 300 and dataset.input_shape == [1, 28, 28]

    request = models.JobCreate(
        dataset_id=dataset.id,
        architecture=models.Architecture.from_dict(TINY_ARCHITECTURE),
        training=models.TrainingSettings.from_dict(TINY_TRAINING),
        name="generated",
    )
    created = load("api.jobs.create_job").sync_detailed(client=client, body=request)
    assert created.status_code == 202, created.content
    job = created.parsed
    assert created.headers["location"] == f"/jobs/{job.id}"

    events = follow(client, job.id, models)
    costs = [e for e in events if isinstance(e, models.CostsEvent)]
    assert costs and [int(e.id) for e in costs] == sorted({int(e.id) for e in costs})
    assert costs[-1].data.last_iteration == int(costs[-1].id)
    end = events[-1]
    assert isinstance(end, models.EndEvent), events
    assert end.data.status == models.JobStatus.SUCCEEDED, end.data.error
    model_id = end.data.model_id

    X, _ = holdout()
    unseen = X[300:304]
    images = [
        File(payload=BytesIO(png_bytes(x)), file_name=f"{i}.png") for i, x in enumerate(unseen)
    ]
    body = models.PredictFilesBody(files=images)
    answer = load("api.models.predict").sync(model_id, client=client, body=body)
    assert isinstance(answer, models.Predictions), answer
    assert [p.filename for p in answer.predictions] == ["0.png", "1.png", "2.png", "3.png"]
    assert all(0 <= p.label < 10 for p in answer.predictions)

    download = load("api.models.download_model").sync(model_id, client=client)
    assert isinstance(download, File), download
    path = tmp_path / "model.npz"
    path.write_bytes(download.payload.read())
    served = [p.label for p in answer.predictions]
    assert Network.load(path).predict(unseen[:, None] / 255.0).tolist() == served

    assert load("api.models.delete_model").sync_detailed(model_id, client=client).status_code == 204
    gone = load("api.models.read_model").sync(model_id, client=client)
    assert isinstance(gone, models.Error) and f"no model {model_id!r}" in gone.detail.lower()


def test_the_generated_client_needs_the_key(
    generated: ModuleType, keyed_server: LiveServer
) -> None:
    list_jobs, models = load("api.jobs.list_jobs"), load("models")
    refused = list_jobs.sync_detailed(client=generated.Client(base_url=keyed_server.url))
    assert refused.status_code == 401 and isinstance(refused.parsed, models.Error)
    assert refused.headers["www-authenticate"] == "Bearer"
    keyed = generated.AuthenticatedClient(base_url=keyed_server.url, token=KEY)
    assert isinstance(list_jobs.sync(client=keyed), models.JobList)
