"""The client's typed records against the live server's OpenAPI spec, endpoint by endpoint.

Each record must ask for no field the server does not send, require nothing the server may
omit, and accept every type the server documents (nested records, enums and lists included).
Fields the server adds are fine: the client ignores them. So a change on either side fails here
until the other follows.
"""

import types
import typing
from datetime import datetime
from enum import Enum
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel

from cnn_client import Client, models

# (method, path, status, the client's record of its JSON answer)
RESPONSES = [
    ("get", "/health", "200", models.Health),
    ("post", "/architectures/validate", "200", models.ArchitectureSummary),
    ("post", "/datasets", "201", models.Dataset),
    ("get", "/datasets", "200", models.DatasetList),
    ("get", "/datasets/{dataset_id}", "200", models.Dataset),
    ("post", "/jobs", "202", models.Job),
    ("get", "/jobs", "200", models.JobList),
    ("get", "/jobs/{job_id}", "200", models.Job),
    ("get", "/jobs/{job_id}/costs", "200", models.CostHistory),
    ("post", "/jobs/{job_id}/cancel", "200", models.Job),
    ("get", "/models", "200", models.ModelList),
    ("get", "/models/{model_id}", "200", models.Model),
    ("post", "/models/{model_id}/predict", "200", models.Predictions),
    ("post", "/models/{model_id}/evaluate", "200", models.Evaluation),
]
# Every operation the server serves, and the `Client` method that calls it.
METHODS = {
    ("get", "/health"): "health",
    ("get", "/metrics"): "metrics",
    ("post", "/architectures/validate"): "validate_architecture",
    ("post", "/datasets"): "upload_dataset",
    ("get", "/datasets"): "list_datasets",
    ("get", "/datasets/{dataset_id}"): "get_dataset",
    ("delete", "/datasets/{dataset_id}"): "delete_dataset",
    ("get", "/datasets/{dataset_id}/samples"): "dataset_samples",
    ("post", "/jobs"): "submit_job",
    ("get", "/jobs"): "list_jobs",
    ("get", "/jobs/{job_id}"): "get_job",
    ("get", "/jobs/{job_id}/costs"): "job_costs",
    ("get", "/jobs/{job_id}/costs.png"): "cost_plot",
    ("get", "/jobs/{job_id}/events"): "follow",
    ("post", "/jobs/{job_id}/cancel"): "cancel_job",
    ("get", "/models"): "list_models",
    ("get", "/models/{model_id}"): "get_model",
    ("delete", "/models/{model_id}"): "delete_model",
    ("get", "/models/{model_id}/download"): "download_model",
    ("post", "/models/{model_id}/predict"): "predict",
    ("post", "/models/{model_id}/evaluate"): "evaluate",
}
# (method, path, the query parameters the client sends)
PARAMETERS = [
    ("get", "/jobs", {"status", "limit", "offset"}),
    ("get", "/datasets/{dataset_id}/samples", {"per_class", "index"}),
    ("get", "/jobs/{job_id}/costs", {"since", "max_points"}),
    ("get", "/jobs/{job_id}/events", {"last-event-id"}),
    ("post", "/models/{model_id}/predict", {"top_k"}),
    ("get", "/models/{model_id}/download", {"format"}),
]
# Announced in DESIGN.md, not served yet: once the server has them they are checked as the rest.
AWAITED_ENDPOINTS = {("post", "/models/{model_id}/evaluate")}
AWAITED_PARAMETERS = {("get", "/models/{model_id}/download", "format")}
AWAITED_FIELDS = {("Prediction", "filename"), ("Prediction", "inverted")}


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def alternatives(annotation: Any) -> list[Any]:
    """The members of a union annotation (`X | None` included), or the annotation itself."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return list(get_args(annotation))
    return [annotation]


def accepts(spec: dict[str, Any], annotation: Any, schema: dict[str, Any], where: str) -> list[str]:
    """Why a value of `schema` would not fit `annotation` (empty when it fits)."""
    schema = resolve(spec, schema)
    if annotation is Any:
        return []
    if "anyOf" in schema:
        return [
            problem
            for option in schema["anyOf"]
            for problem in accepts(spec, annotation, option, where)
        ]
    kind = schema.get("type")
    options = alternatives(annotation)
    if kind == "null":
        return [] if type(None) in options else [f"{where}: the server may send null"]
    problems = [f"{where}: {annotation} cannot hold the server's {kind or schema}"]
    for option in options:
        found = fits(spec, option, schema, kind, where)
        if found is None:
            continue
        if not found:
            return []
        problems = found
    return problems


def fits(
    spec: dict[str, Any], option: Any, schema: dict[str, Any], kind: str | None, where: str
) -> list[str] | None:
    """Problems fitting `schema` into one union member; None when that member is of another kind."""
    origin = get_origin(option)
    if isinstance(option, type) and issubclass(option, BaseModel):
        return compare(spec, option, schema, where) if kind == "object" else None
    if (isinstance(option, type) and issubclass(option, Enum)) or origin is Literal:
        mine = {m.value for m in option} if origin is not Literal else set(get_args(option))
        theirs = set(schema.get("enum", [schema["const"]] if "const" in schema else []))
        return [] if theirs and theirs <= mine else [f"{where}: values {theirs} vs {mine}"]
    if origin is list:
        if kind != "array":
            return None
        return accepts(spec, get_args(option)[0], schema.get("items", {}), f"{where}[]")
    if origin is dict:
        if kind != "object":
            return None
        value = get_args(option)[1]
        extra = schema.get("additionalProperties", True)
        return [] if value is Any or extra is True else accepts(spec, value, extra, f"{where}{{}}")
    simple = {
        str: kind == "string" and schema.get("format") != "date-time",
        datetime: kind == "string" and schema.get("format") == "date-time",
        int: kind == "integer",
        float: kind in ("number", "integer"),
        bool: kind == "boolean",
    }
    return [] if simple.get(option) else None


def compare(
    spec: dict[str, Any], record: type[BaseModel], schema: dict[str, Any], where: str
) -> list[str]:
    """How `record` disagrees with the object `schema` the server documents."""
    schema = resolve(spec, schema)
    properties, required = schema.get("properties", {}), set(schema.get("required", []))
    problems = []
    for name, field in record.model_fields.items():
        here = f"{where}.{name}"
        if name not in properties:
            if (record.__name__, name) not in AWAITED_FIELDS:
                problems.append(f"{here}: the server does not send it")
            continue
        if field.is_required() and name not in required:
            problems.append(f"{here}: required here, optional on the server")
        problems += accepts(spec, field.annotation, properties[name], here)
    return problems


@pytest.mark.parametrize(("method", "path", "status", "record"), RESPONSES)
def test_client_records_match_the_servers_responses(
    spec: dict[str, Any], method: str, path: str, status: str, record: type[BaseModel]
) -> None:
    if (method, path) in AWAITED_ENDPOINTS and path not in spec["paths"]:
        pytest.skip(f"{method.upper()} {path} (DESIGN.md) is not on this server yet")
    response = spec["paths"][path][method]["responses"][status]
    schema = response["content"]["application/json"]["schema"]
    assert compare(spec, record, schema, record.__name__) == []


@pytest.mark.parametrize(("method", "path", "names"), PARAMETERS)
def test_query_parameters_the_client_sends_exist(
    spec: dict[str, Any], method: str, path: str, names: set[str]
) -> None:
    served = {p["name"].lower() for p in spec["paths"][path][method].get("parameters", [])}
    awaited = {n for m, p, n in AWAITED_PARAMETERS if (m, p) == (method, path)}
    if awaited - served:
        pytest.skip(f"{method.upper()} {path}?{', '.join(awaited - served)} is not served yet")
    assert names <= served


def test_every_operation_of_the_server_has_a_client_method(spec: dict[str, Any]) -> None:
    served = {(method, path) for path, operations in spec["paths"].items() for method in operations}
    assert served == set(METHODS), (
        f"served without a Client method: {sorted(served - set(METHODS))}; "
        f"no longer served: {sorted(set(METHODS) - served)}"
    )
    assert all(callable(getattr(Client, name, None)) for name in METHODS.values())


def test_job_bodies_the_cli_builds_use_the_servers_field_names(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert {"dataset_id", "architecture", "training", "name"} <= set(
        schemas["JobCreate"]["properties"]
    )
    training = schemas["TrainingSettings"]["properties"]
    assert {"epochs", "batch_size", "optimizer", "validation_split", "seed"} <= set(training)
    forms = [resolve(spec, f) for f in schemas["JobCreate"]["properties"]["architecture"]["oneOf"]]
    assert "lenet5" in next(form["enum"] for form in forms if "enum" in form)  # a preset name
    assert any("layers" in form.get("properties", {}) for form in forms)  # or a config
    optimizers = training["optimizer"]["discriminator"]["mapping"]  # name -> its schema
    assert {"sgd", "momentum", "rmsprop", "adam"} <= set(optimizers)  # as `cnn train --help` says
    for ref in optimizers.values():
        assert {"name", "learning_rate"} <= set(resolve(spec, {"$ref": ref})["properties"])


def test_the_comparison_catches_a_renamed_a_retyped_and_a_loosened_field(
    spec: dict[str, Any],
) -> None:
    schema = spec["components"]["schemas"]["WorkerStatus"]

    class Renamed(models.Record):
        workers: int
        busy: int

    class Retyped(models.Record):
        workers: str

    class Nullable(models.Record):
        workers: int | None

    assert compare(spec, Renamed, schema, "W") == ["W.busy: the server does not send it"]
    assert len(compare(spec, Retyped, schema, "W")) == 1
    assert compare(spec, Nullable, schema, "W") == []  # accepting more than is sent is fine
    nullable = {
        **schema,
        "properties": {"workers": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
    }
    assert compare(spec, models.WorkerStatus, nullable, "W")[0].startswith("W.workers")
