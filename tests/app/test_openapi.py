"""The OpenAPI document says what generated clients and fuzzers need to know (app/openapi.py):
readable names, binary files, events without OpenAPI 3.2 keywords, every error with its schema
and headers, and every integer bounded by what the server can store."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.routers.jobs import router as jobs_router
from app.schemas import MAX_POSITION
from app.settings import Settings

KEY = "openapi-test-key"


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every dict in `value`, depth first."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from nodes(item)
    elif isinstance(value, list):
        for item in value:
            yield from nodes(item)


def test_operation_ids_are_the_route_functions_names(spec: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert len(ids) == len(set(ids))
    assert {"list_jobs", "read_job_cost_plot", "create_dataset", "predict"} <= set(ids)
    assert {route.name for route in jobs_router.routes} <= set(ids)


def test_schema_names_are_readable_and_refs_resolve(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert not [name for name in schemas if name.startswith("Body_") or "-" in name]
    assert "CreateDatasetBody" in schemas
    assert "HTTPValidationError" not in schemas  # one 422 shape: InvalidInput
    refs = {node["$ref"] for node in nodes(spec) if "$ref" in node}
    assert {ref.rsplit("/", 1)[-1] for ref in refs} <= set(schemas)


def test_uploads_are_binary_and_nothing_is_openapi_3_2(spec: dict[str, Any]) -> None:
    upload = spec["components"]["schemas"]["CreateDatasetBody"]["properties"]["files"]
    assert upload["items"] == {"type": "string", "format": "binary"}
    assert not [node for node in nodes(spec) if "itemSchema" in node]
    text_media = [n["contentMediaType"] for n in nodes(spec) if "contentMediaType" in n]
    assert set(text_media) == {"application/json"}  # only the events' JSON data


def test_binary_responses_have_a_binary_schema(spec: dict[str, Any]) -> None:
    found = []
    for _, path, operation in operations(spec):
        for response in operation["responses"].values():
            for media_type, body in response.get("content", {}).items():
                if media_type in ("image/png", "application/octet-stream"):
                    assert body["schema"] == {"type": "string", "format": "binary"}, path
                    found.append(path)
    assert {
        "/models/{model_id}/download",
        "/jobs/{job_id}/costs.png",
        "/models/{model_id}/evaluate",
        "/datasets/{dataset_id}/samples",
    } <= set(found)


def test_the_event_stream_describes_each_event_as_sent(spec: dict[str, Any]) -> None:
    events = spec["paths"]["/jobs/{job_id}/events"]["get"]
    header = next(p for p in events["parameters"] if p["name"].lower() == "last-event-id")
    assert header["schema"]["anyOf"][0]["type"] == "string"
    sent = events["responses"]["200"]["content"]["text/event-stream"]["schema"]["oneOf"]
    names = {variant["properties"]["event"]["const"] for variant in sent}
    assert names == {"costs", "progress", "end"}
    for variant in sent:
        assert variant["properties"]["data"]["type"] == "string"  # JSON text on the wire
    decoded = spec["components"]["schemas"]["JobEvent"]["discriminator"]["mapping"]
    assert set(decoded) == names


def test_errors_are_documented_with_their_schemas_and_headers(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        responses = operation["responses"]
        body = operation.get("requestBody", {}).get("content", {})
        if {"application/json", "multipart/form-data"} & set(body):
            assert {"400", "413"} <= set(responses), (method, path)
        if method in ("post", "delete"):
            assert "403" in responses, (method, path)
        if "422" in responses:
            schema = responses["422"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/InvalidInput"}, (method, path)
        for status in ("429", "503"):
            if status in responses:
                assert "Retry-After" in responses[status]["headers"], (method, path)
    for path, status in (("/jobs", "202"), ("/datasets", "201")):
        assert "Location" in spec["paths"][path]["post"]["responses"][status]["headers"]


def test_info_has_a_licence_and_servers(spec: dict[str, Any]) -> None:
    assert spec["info"]["license"] == {"name": "MIT", "identifier": "MIT"}
    assert spec["servers"][0]["url"] == "/"


def test_every_integer_is_bounded_within_what_the_server_stores(spec: dict[str, Any]) -> None:
    integers = []
    for method, path, operation in operations(spec):
        for parameter in operation.get("parameters", []):
            integers += [(method, path, parameter["name"], n) for n in nodes(parameter["schema"])]
    for name, schema in spec["components"]["schemas"].items():
        if name in request_schemas(spec):
            integers += [("body", name, "", node) for node in nodes(schema)]
    integers = [entry for entry in integers if entry[-1].get("type") == "integer"]
    assert len(integers) > 20
    for *where, schema in integers:
        assert "minimum" in schema and "maximum" in schema, where
        assert -MAX_POSITION <= schema["minimum"] <= schema["maximum"] <= MAX_POSITION, where


def request_schemas(spec: dict[str, Any]) -> set[str]:
    """The component schemas that request bodies use, directly or through others."""
    schemas = spec["components"]["schemas"]
    pending = [
        node["$ref"].rsplit("/", 1)[-1]
        for _, _, operation in operations(spec)
        for node in nodes(operation.get("requestBody", {}))
        if "$ref" in node
    ]
    found: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending += [n["$ref"].rsplit("/", 1)[-1] for n in nodes(schemas[name]) if "$ref" in n]
    return found


@pytest.mark.parametrize(
    ("query", "status"),
    [("since=31347653804303081472", 422), (f"since={MAX_POSITION}", 200), ("since=-1", 422)],
)
def test_cost_cursors_beyond_the_bounds_are_a_422(
    trained: tuple[TestClient, dict], query: str, status: int
) -> None:
    client, model = trained
    response = client.get(f"/jobs/{model['job_id']}/costs?{query}")
    assert response.status_code == status, response.text


@pytest.mark.parametrize(("value", "status"), [("7", 200), ("x7", 422), ("9" * 16, 422)])
def test_last_event_id_is_a_string_of_digits(
    trained: tuple[TestClient, dict], value: str, status: int
) -> None:
    client, model = trained
    response = client.get(f"/jobs/{model['job_id']}/events", headers={"Last-Event-ID": value})
    assert response.status_code == status, response.text


def test_the_keyed_spec_declares_the_scheme_it_enforces(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", api_key=KEY))) as client:
        spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert spec["paths"]["/jobs"]["get"]["security"] == [{"HTTPBearer": []}]
