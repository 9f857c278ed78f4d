"""Who may call the service and what a hostile request can reach: API key, request origin,
identifiers in paths, non-finite JSON numbers, and what a 500 reveals."""

import hmac
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import app.security
from app.deps import get_dataset_store
from app.main import create_app
from app.security import origin_refusal
from app.settings import Settings
from tests.app.hostile import assert_clean, raw_request, tree
from tests.support.builders import TINY_ARCHITECTURE, digits_npz

KEY = "correct horse battery staple"
AUTH = {"Authorization": f"Bearer {KEY}"}
SOME_ID = "0123456789abcdef" * 2
OPEN_PATHS = {
    "/health",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/docs/oauth2-redirect",
    "/favicon.ico",
}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# A browser's multipart "simple request": no preflight, so only the server can stop it.
BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
BROWSER_FORM = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
    f'filename="d.npz"\r\nContent-Type: application/octet-stream\r\n\r\n'
).encode()


def browser_upload(npz: bytes) -> tuple[dict[str, str], bytes]:
    """Headers and body of the upload a web page's <form enctype=multipart/form-data> sends."""
    body = BROWSER_FORM + npz + f"\r\n--{BOUNDARY}--\r\n".encode()
    return {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Origin": "http://evil.example",
        "Referer": "http://evil.example/page.html",
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "no-cors",
    }, body


def api_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path with ids filled in) of every API route of the app."""
    routes = []
    for path, operations in client.app.openapi()["paths"].items():
        filled = (
            path.replace("{dataset_id}", SOME_ID)
            .replace("{job_id}", SOME_ID)
            .replace("{model_id}", SOME_ID)
        )
        routes += [(method.upper(), filled) for method in operations]
    return routes


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    """A client of an app that requires KEY."""
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", api_key=KEY))) as client:
        yield client


# ------------------------------------------------------------------------------------------
# API key


def test_every_route_but_health_and_docs_requires_the_api_key(
    keyed: TestClient, tmp_path: Path
) -> None:
    routes = api_routes(keyed)
    assert len(routes) >= 14
    for method, path in routes:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {KEY}"},
            {"Authorization": f"Bearer {KEY}x"},
            {"Authorization": KEY},
        ):
            response = keyed.request(method, path, headers=headers)
            if path in OPEN_PATHS:
                assert response.status_code == 200, path
                continue
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json() == {"detail": "Missing or invalid API key"}
    for path in OPEN_PATHS - {"/favicon.ico", "/docs/oauth2-redirect"}:
        assert keyed.get(path).status_code == 200, path
    assert keyed.get("/datasets", headers=AUTH).status_code == 200
    assert keyed.get("/jobs", headers=AUTH).json()["count"] == 0
    assert list((tmp_path / "data" / "datasets").iterdir()) == []


def test_unauthenticated_upload_and_job_submission_change_nothing(
    keyed: TestClient, tmp_path: Path
) -> None:
    upload = keyed.post("/datasets", files={"files": ("d.npz", digits_npz(60))})
    job = keyed.post("/jobs", json={"dataset_id": "mnist-sample", "architecture": "lenet5"})
    assert (upload.status_code, job.status_code) == (401, 401)
    assert list((tmp_path / "data" / "datasets").iterdir()) == []
    assert keyed.get("/jobs", headers=AUTH).json()["count"] == 0
    assert (
        keyed.post(
            "/datasets", files={"files": ("d.npz", digits_npz(60))}, headers=AUTH
        ).status_code
        == 201
    )


def test_unauthenticated_upload_is_refused_before_its_body_is_read(keyed: TestClient) -> None:
    headers, body = browser_upload(digits_npz(60))
    del headers["Origin"]  # not a browser: only the key stands in the way
    status, content, reads = raw_request(keyed.app, "POST", "/datasets", headers, body)
    assert (status, reads) == (401, 0)
    assert content == b'{"detail":"Missing or invalid API key"}'


def test_api_key_is_compared_in_constant_time(
    keyed: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    compare = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        calls.append((given, expected))
        return compare(given, expected)

    monkeypatch.setattr(app.security.hmac, "compare_digest", spy)
    assert keyed.get("/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert keyed.get("/models", headers=AUTH).status_code == 200
    assert calls == [(b"nope", KEY.encode()), (KEY.encode(), KEY.encode())]


def test_empty_api_key_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNN_API_KEY", "")
    settings = Settings(data_dir=tmp_path)
    assert settings.api_key is None
    with TestClient(create_app(settings)) as client:
        assert client.get("/models").status_code == 200


def test_openapi_offers_bearer_auth_on_protected_routes_only(keyed: TestClient) -> None:
    spec = keyed.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "The value of CNN_API_KEY.",
        }
    }
    assert spec["paths"]["/health"]["get"]["security"] == []  # open, and says so
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path != "/health":
                assert operation["security"] == [{"HTTPBearer": []}], (method, path)
                assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]
            if method.upper() in STATE_CHANGING:
                assert "403" in operation["responses"], (method, path)


def test_openapi_declares_no_security_when_no_key_is_set(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "securitySchemes" not in spec["components"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [], (method, path)
            assert "401" not in operation["responses"], (method, path)


def test_default_bind_address_is_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNN_HOST", raising=False)
    monkeypatch.delenv("CNN_API_KEY", raising=False)
    settings = Settings()
    assert settings.host == "127.0.0.1" and settings.api_key is None


@pytest.mark.parametrize(
    ("host", "api_key", "warned"),
    [
        ("0.0.0.0", None, True),
        ("192.168.1.5", None, True),
        ("::", None, True),
        ("example.org", None, True),
        ("0.0.0.0", KEY, False),
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
    ],
)
def test_startup_warns_when_exposed_beyond_loopback_without_a_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, api_key: str | None, warned: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="app")
    with TestClient(create_app(Settings(data_dir=tmp_path, host=host, api_key=api_key))):
        pass
    warnings = [r for r in caplog.records if "CNN_API_KEY is not set" in r.getMessage()]
    assert bool(warnings) == warned
    assert all(r.levelno == logging.WARNING for r in warnings)


# ------------------------------------------------------------------------------------------
# Request origin


def test_browser_form_upload_from_a_foreign_page_is_refused_before_the_body_is_read(
    client: TestClient, settings: Settings
) -> None:
    headers, body = browser_upload(digits_npz(60))
    status, content, reads = raw_request(client.app, "POST", "/datasets", headers, body)
    assert status == 403 and reads == 0
    assert "Cross-origin request refused" in content.decode()
    assert_clean(content.decode())
    assert list((settings.data_dir / "datasets").iterdir()) == []
    # The same bytes without the browser's Origin (curl, a script) are an ordinary upload.
    del headers["Origin"]
    status, _, _ = raw_request(client.app, "POST", "/datasets", headers, body)
    assert status == 201


FOREIGN_ORIGINS = [
    "http://evil.example",
    "https://evil.example:8000",
    "null",
    "http://127.0.0.1:9999",
    "http://localhost",
    "http://127.0.0.1.evil.example:8000",
    "file://",
    "http://127.0.0.1:8000/path",
    "http://user@127.0.0.1:8000",
    "http://[::1]:8001",
    "http://0.0.0.0:8000",
    "chrome-extension://abc",
    "http://127.0.0.1:99999",
    "http://%31%32%37.0.0.1:8000",
]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_foreign_origin_is_refused_on_every_state_changing_route(
    client: TestClient, settings: Settings, origin: str
) -> None:
    dataset = client.post("/datasets", files={"files": ("d.npz", digits_npz(60))}).json()
    before = tree(settings.data_dir / "datasets")
    jobs_before = client.get("/jobs").json()["count"]
    refused = 0
    for method, path in api_routes(client):
        if method not in STATE_CHANGING:
            continue
        path = path.replace(SOME_ID, dataset["id"])
        response = client.request(
            method, path, headers={"Origin": origin, "Host": "127.0.0.1:8000"}
        )
        assert response.status_code == 403, (method, path)
        assert response.json()["detail"].startswith("Cross-origin request refused")
        refused += 1
    assert refused >= 6
    assert tree(settings.data_dir / "datasets") == before
    assert client.get("/jobs").json()["count"] == jobs_before
    assert client.get(f"/datasets/{dataset['id']}").status_code == 200


def test_reads_from_a_foreign_origin_are_not_refused_by_the_origin_rule(client: TestClient) -> None:
    response = client.get("/datasets", headers={"Origin": "http://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers  # no CORS: the page can't read


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000"),  # the service's own /docs page
        ("http://localhost:8000", "127.0.0.1:8000"),  # loopback alias, same port
        ("http://[::1]:8000", "localhost:8000"),
        ("http://127.0.0.2:8000", "127.0.0.1:8000"),
        ("https://10.0.0.7", "10.0.0.7"),  # by IP, behind a TLS proxy
    ],
)
def test_same_origin_and_loopback_pages_may_post(
    client: TestClient, origin: str, host: str
) -> None:
    response = client.post(
        "/architectures/validate",
        json={"architecture": TINY_ARCHITECTURE},
        headers={"Origin": origin, "Host": host},
    )
    assert response.status_code == 200, response.text


def test_dns_rebound_page_is_refused_unless_an_api_key_guards_the_service(
    tmp_path: Path, keyed: TestClient
) -> None:
    rebound = {"Origin": "http://attacker.example:8000", "Host": "attacker.example:8000"}
    body = {"dataset_id": "mnist-sample", "architecture": "lenet5"}
    # an unkeyed server of its own: one server per data dir
    with TestClient(create_app(Settings(data_dir=tmp_path / "unkeyed"))) as client:
        response = client.post("/jobs", json=body, headers=rebound)
        assert response.status_code == 403 and "DNS-rebinding" in response.json()["detail"]
        assert client.get("/jobs").json()["count"] == 0
    # With a key, a page on the service's own name (e.g. behind a proxy) may post.
    named = {"Origin": "https://cnn.example.org", "Host": "cnn.example.org", **AUTH}
    response = keyed.post(
        "/architectures/validate", json={"architecture": TINY_ARCHITECTURE}, headers=named
    )
    assert response.status_code == 200


def test_origin_rule_as_a_function() -> None:
    assert origin_refusal("http://127.0.0.1:8000", "127.0.0.1:8000", "http", False) is None
    assert origin_refusal("http://localhost", "127.0.0.1:80", "http", False) is None
    assert origin_refusal("https://localhost", "127.0.0.1", "https", False) is None
    assert origin_refusal("http://localhost:8000", "127.0.0.1:8001", "http", False)
    assert origin_refusal("http://evil.example", "", "http", True)
    assert origin_refusal("http://[::1", "127.0.0.1", "http", True)


# ------------------------------------------------------------------------------------------
# Identifiers in paths

HOSTILE_IDS = [
    "..",
    "%2e%2e",
    "%2E%2e",
    "%252e%252e",
    ".%2e",
    "a%00b",
    "%00",
    "..%5c..%5cetc%5cpasswd",
    "..\\..\\etc",
    "0" * 33,
    "0" * 5000,
    "MNIST-SAMPLE",
    "mnist-sample%00",
    "mnist-sample.json",
    SOME_ID.upper(),
    f"{SOME_ID}.json",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "~root",
    "%20",
    "%ff%fe",
    "%u002e%u002e",
    f"{SOME_ID[:-1]}g",
    "-1",
    "*",
    "datasets",
]
ID_ROUTES = [
    ("GET", "/datasets/{}"),
    ("DELETE", "/datasets/{}"),
    ("GET", "/jobs/{}"),
    ("GET", "/jobs/{}/costs"),
    ("GET", "/jobs/{}/costs.png"),
    ("GET", "/jobs/{}/events"),
    ("POST", "/jobs/{}/cancel"),
    ("GET", "/models/{}"),
    ("GET", "/models/{}/download"),
    ("DELETE", "/models/{}"),
    ("POST", "/models/{}/predict"),
]


@pytest.fixture
def opened_paths() -> Iterator[list[str]]:
    """Every path this process opens while the test runs (an audit hook cannot be removed,
    so it records only while the fixture is active)."""
    paths: list[str] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if active[0] and event == "open" and isinstance(args[0], (str, bytes, Path)):
            paths.append(str(args[0]))

    sys.addaudithook(hook)
    yield paths
    active[0] = False


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_hostile_ids_are_404_without_touching_the_file_system(
    client: TestClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    opened_paths: list[str],
    hostile: str,
) -> None:
    runner = client.app.state.runner
    asked = []
    for store in (runner.jobs, runner.datasets, runner.models):
        for name in ("get", "load", "delete", "file_path"):
            if hasattr(store, name):
                monkeypatch.setattr(store, name, lambda *a, _n=name: asked.append((_n, a)))
    before = tree(settings.data_dir)
    for method, template in ID_ROUTES:
        status, body, _ = raw_request(client.app, method, template.format(hostile))
        assert status == 404, (method, template, hostile, status)
        assert_clean(body.decode())
    assert asked == []
    stores = (str(settings.data_dir / "datasets"), str(settings.data_dir / "models"))
    assert [p for p in opened_paths if "passwd" in p or ".." in p] == []
    assert [p for p in opened_paths if p.startswith(stores)] == []
    assert tree(settings.data_dir) == before


def test_hostile_dataset_id_in_a_job_body_is_404_and_creates_no_job(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = []
    monkeypatch.setattr(client.app.state.runner.datasets, "get", lambda *a: asked.append(a))
    for hostile in ("../../etc/passwd", "..", "mnist-sample/../x", "a\x00b", "0" * 4000):
        response = client.post("/jobs", json={"dataset_id": hostile, "architecture": "lenet5"})
        assert response.status_code == 404
        assert_clean(response.text)
    assert asked == []
    assert client.get("/jobs").json()["count"] == 0


# ------------------------------------------------------------------------------------------
# Non-finite numbers in JSON

PRESET_JOB = b'{"dataset_id": "mnist-sample", "architecture": "lenet5", "training": %s}'
NON_FINITE_TRAINING = [
    b'{"optimizer": {"name": "adam", "learning_rate": NaN}}',
    b'{"optimizer": {"name": "sgd", "learning_rate": Infinity}}',
    b'{"optimizer": {"name": "momentum", "beta": -Infinity}}',
    b'{"optimizer": {"name": "rmsprop", "epsilon": 1e999}}',
    b'{"epochs": NaN}',
    b'{"seed": 1e999}',
    b'{"validation_split": -1e999}',
    b'{"early_stopping": {"min_delta": Infinity}}',
]
NON_FINITE_JOB_BODIES = [PRESET_JOB % training for training in NON_FINITE_TRAINING] + [
    b'{"dataset_id": NaN, "architecture": "lenet5"}',
    (
        b'{"dataset_id": "mnist-sample", "architecture": {"input_shape": [1, NaN, 28], '
        b'"layers": [{"type": "dense", "units": 10}]}}'
    ),
    (
        b'{"dataset_id": "mnist-sample", "architecture": {"input_shape": [1, 28, 28], '
        b'"layers": [{"type": "dense", "units": 1e999}]}}'
    ),
    b'{"dataset_id": "mnist-sample", "architecture": "lenet5", "name": Infinity}',
    b'{"NaN": NaN, "dataset_id": "mnist-sample", "architecture": "lenet5"}',
]


@pytest.mark.parametrize("body", NON_FINITE_JOB_BODIES)
def test_nan_and_infinity_in_a_job_are_422_never_500(client: TestClient, body: bytes) -> None:
    response = client.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert_clean(response.text)
    assert client.get("/jobs").json()["count"] == 0


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_nan_and_infinity_in_an_architecture_check_are_422(
    client: TestClient, literal: bytes
) -> None:
    body = (
        b'{"architecture": {"input_shape": [1, 28, 28], "layers": [{"type": "conv", '
        b'"filters": ' + literal + b', "kernel_size": 3}]}}'
    )
    response = client.post(
        "/architectures/validate", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert_clean(response.text)


# ------------------------------------------------------------------------------------------
# Unexpected errors


def test_unexpected_error_is_a_bare_500_with_a_request_id_that_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app_ = create_app(Settings(data_dir=tmp_path))

    def broken_store() -> None:
        raise RuntimeError(f"disk on fire at {tmp_path}/secret.db")

    app_.dependency_overrides[get_dataset_store] = broken_store
    caplog.set_level(logging.ERROR, logger="app")
    with TestClient(app_, raise_server_exceptions=False) as client:
        response = client.get("/datasets")
        assert response.status_code == 500
        body = response.json()
        assert set(body) == {"detail", "request_id"}
        assert body["detail"] == "Internal server error" and len(body["request_id"]) == 32
        assert_clean(response.text)
        assert "disk on fire" not in response.text and "RuntimeError" not in response.text
        logged = [r for r in caplog.records if body["request_id"] in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info[0] is RuntimeError
        assert client.get("/health").status_code == 200
        assert client.get("/models").status_code == 200
