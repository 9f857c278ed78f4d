"""The API keeps its published contract, checked from outside as any client meets it: a real
uvicorn server, with and without an API key, whose /openapi.json openapi-spec-validator accepts
and schemathesis tests with its examples, coverage and fuzzing phases and every check (no
server error, every status, header and body as documented, invalid input refused, the key
enforced, OPTIONS and 405 answering `Allow`), for zero findings.

One check is left out, `positive_data_acceptance`: a schema cannot say that a kernel fits its
input or that the last layer is dense, so valid-looking requests are rightly refused with 422.
The server holds a dataset and a trained model, whose ids schemathesis uses for the path
parameters, so predict, evaluate and download are exercised past their 404.
"""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from openapi_spec_validator import validate

from tests.support.builders import TINY_ARCHITECTURE, TINY_TRAINING, digits_npz
from tests.support.server import LiveServer, submit, wait_for_job

KEY = "contract-test-key"
MAX_EXAMPLES = 15  # per operation and phase: about a minute per key mode on 2 busy cores
SEED = 20260601
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


class Served(NamedTuple):
    server: LiveServer
    headers: dict[str, str]  # what authenticates a request
    ids: dict[str, str]  # path parameter -> the id of a stored resource


@pytest.fixture(scope="module", params=[None, KEY], ids=["no-key", "key"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A live server (with KEY or none), its auth headers, a dataset, a job and its model."""
    root = tmp_path_factory.mktemp("contract")
    settings = {"CNN_POLL_INTERVAL": "0.05", "CNN_MAX_QUEUE": "2", "CNN_TRAIN_THREADS": "1"}
    if request.param:
        settings["CNN_API_KEY"] = request.param
    server = LiveServer(root / "data", root / "server.log", inherit_settings=False, **settings)
    headers = {"Authorization": f"Bearer {request.param}"} if request.param else {}
    try:
        server.start()
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            files = {"files": ("digits.npz", digits_npz(), "application/octet-stream")}
            dataset = client.post("/datasets", files=files).json()
            job = submit(client, dataset["id"], TINY_ARCHITECTURE, **TINY_TRAINING)
            model_id = wait_for_job(client, job["id"], timeout=120)["model_id"]
        yield Served(
            server,
            headers,
            {"dataset_id": dataset["id"], "job_id": job["id"], "model_id": model_id},
        )
    finally:
        server.kill_group()


def test_the_spec_is_valid_openapi(served: Served) -> None:
    spec = httpx.get(f"{served.server.url}/openapi.json", timeout=30).json()
    validate(spec)  # raises with the first violation
    assert spec["openapi"].startswith("3.1")


def test_api_conforms_to_its_openapi_schema(served: Served, tmp_path: Path) -> None:
    server = served.server
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'{k} = "{v}"\n' for k, v in served.ids.items()))
    command = [str(SCHEMATHESIS), "--config-file", str(config), "run"]
    command += [f"{server.url}/openapi.json", "--phases", "examples,coverage,fuzzing"]
    command += ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
    command += ["--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1"]
    command += ["--request-timeout", "20", "--generation-database", "none", "--no-color"]
    for name, value in served.headers.items():
        command += ["--header", f"{name}: {value}"]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20_000:] + server.tail()
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    assert f"Tested: {operations}" in " ".join(report.split()), report[-5_000:]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/datasets/{dataset_id}", "DELETE, GET, OPTIONS"),
        ("PUT", "/datasets/{dataset_id}", "DELETE, GET, OPTIONS"),
        ("OPTIONS", "/jobs", "GET, OPTIONS, POST"),
        ("PATCH", "/models/{model_id}", "DELETE, GET, OPTIONS"),
        ("DELETE", "/jobs/{job_id}/cancel", "OPTIONS, POST"),
    ],
)
def test_options_and_405_list_every_method_of_a_path(
    served: Served, method: str, path: str, allowed: str
) -> None:
    url = served.server.url + path.format(**served.ids)
    response = httpx.request(method, url, headers=served.headers, timeout=30)
    assert response.status_code == (204 if method == "OPTIONS" else 405), response.text
    assert response.headers["allow"] == allowed
    if served.headers:  # the key still guards them
        assert httpx.request(method, url, timeout=30).status_code == 401
