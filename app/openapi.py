"""The OpenAPI document, shaped once so that generated clients and fuzzers read it right.

FastAPI writes the document from the routes; this module holds every change made to it
afterwards, so that what a tool reads is what the server does:

- Operation ids are the route functions' names (`list_jobs`, `read_job_cost_plot`), and a
  form body is named after its operation (`CreateDatasetBody`), not `Body_create_dataset_...`.
- Uploaded files are `format: binary`: with JSON Schema's `contentMediaType` a generated client
  sends the bytes as a text field.
- Binary responses (PNG, model files) have a binary schema, text ones a string schema.
- The event stream has no OpenAPI 3.2 `itemSchema` in a 3.1 document: its `schema` describes
  each event as sent (`data` a JSON text), and the events with their data decoded, which the
  route declares as its response model, stay in the components (`JobEvent`).
- Every error is documented as the JSON it is: one 422 schema (`InvalidInput`) across the API,
  400 and 413 on every operation with a body (malformed JSON or multipart, a body over the
  cap), 403 on every state-changing one (the Origin guard), and the headers each error carries
  (`WWW-Authenticate`, `Retry-After`) as `app.errors` declares them.
- Each operation states its security: the Bearer scheme where the deployment requires the key,
  `security: []` everywhere else.
"""

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app import errors
from app.schemas import ERROR_DESCRIPTIONS, error_model

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
BINARY = {"type": "string", "format": "binary"}
BODY_MEDIA_TYPES = (JSON, "multipart/form-data")
STATE_CHANGING = frozenset({"post", "put", "patch", "delete"})
SCHEMA_REF = "#/components/schemas/{model}"
# Statuses every operation with a request body can answer before validation: bytes that are
# not JSON or not multipart (400), a body over the cap (413).
BODY_ERRORS = (400, 413)
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
HEADER_DESCRIPTIONS = {
    "WWW-Authenticate": "The scheme to authenticate with: `Bearer`.",
    "Retry-After": "Seconds to wait before retrying.",
}


def operation_id(route: APIRoute) -> str:
    """A route's operation id: its function's name, e.g. `list_jobs`."""
    return route.name


def install(app: FastAPI) -> None:
    """Serve `app`'s generated document shaped by `shape`, once per document FastAPI
    generates (it caches one until the routes change)."""
    generate = app.openapi
    shaped: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal shaped
        spec = generate()
        if spec is not shaped:
            shape(spec)
            shaped = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def shape(spec: dict[str, Any]) -> None:
    """Apply every rule of the module docstring to `spec`, in place."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    _name_form_bodies(spec)
    for schema in _nodes(schemas):
        if schema.get("type") == "string" and schema.get("contentMediaType", JSON) != JSON:
            del schema["contentMediaType"]
            schema["format"] = "binary"
    headers = _error_headers()
    for method, operation in _operations(spec):
        _type_bodies(schemas, operation)
        _document_errors(method, operation, headers)
        operation.setdefault("security", [])
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for operations in spec["paths"].values():
        yield from operations.items()


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every object inside `node` (itself included), depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def _name_form_bodies(spec: dict[str, Any]) -> None:
    """Rename FastAPI's `Body_<operation id>` schemas to `<OperationId>Body`."""
    schemas = spec["components"]["schemas"]
    renamed = {}
    for name in [n for n in schemas if n.startswith("Body_")]:
        new = "".join(word.capitalize() for word in name.removeprefix("Body_").split("_"))
        renamed[f"#/components/schemas/{name}"] = f"#/components/schemas/{new}Body"
        schemas[f"{new}Body"] = {**schemas.pop(name), "title": f"{new}Body"}
    for node in _nodes(spec):
        if node.get("$ref") in renamed:
            node["$ref"] = renamed[node["$ref"]]


def _event_as_sent(schemas: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """The schema of one server-sent event (OpenAPI 3.1 has `schema` describe each event of a
    stream), from the model a route declares for its events (`JobEvent`, a union of event
    models whose `data` is the decoded payload): each model with `data` as the JSON text it
    is sent as."""
    union = _resolve(schemas, event)
    sent = []
    for variant in union.get("oneOf", [event]):
        model = _resolve(schemas, variant)
        payload = model["properties"]["data"]
        data = {"type": "string", "contentMediaType": JSON, "contentSchema": payload}
        sent.append(
            {
                "type": "object",
                "description": model.get("description", ""),
                "properties": {**model["properties"], "data": data},
                "required": model.get("required", []),
            }
        )
    return {"description": union.get("description", ""), "oneOf": sent}


def _resolve(schemas: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _type_bodies(schemas: dict[str, Any], operation: dict[str, Any]) -> None:
    """Give binary and text responses a schema, the event stream that of its events as sent,
    and its errors the JSON media type they are sent with."""
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        if status[0] in "45" and EVENT_STREAM in content:  # errors are JSON, as sent
            content.setdefault(JSON, content.pop(EVENT_STREAM))
        for media_type, body in content.items():
            if media_type == EVENT_STREAM:
                body.pop("itemSchema", None)
                body["schema"] = _event_as_sent(schemas, body["schema"])
            elif media_type.startswith("text/"):
                body.setdefault("schema", {"type": "string"})
            elif media_type != JSON and not media_type.endswith("+json"):
                body.setdefault("schema", BINARY)


def _error_headers() -> dict[int, dict[str, str]]:
    """The headers sent with each error status, as the error classes declare them."""
    found: dict[int, dict[str, str]] = {}
    pending = [errors.ServiceError]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls.headers:
            found.setdefault(cls.status_code, {}).update(cls.headers)
    return found


def _document_errors(
    method: str, operation: dict[str, Any], headers: dict[int, dict[str, str]]
) -> None:
    """Add the errors any operation of its kind can answer, each with its schema and the
    `headers` sent with its status."""
    responses = operation["responses"]
    body = operation.get("requestBody", {}).get("content", {})
    codes = []
    if any(media_type in body for media_type in BODY_MEDIA_TYPES):
        codes += BODY_ERRORS
    if method in STATE_CHANGING:
        codes.append(403)
    for code in codes:
        responses.setdefault(str(code), _error(code))
    if "422" in responses:
        responses["422"] = _error(422)
    for status, response in responses.items():
        for name in headers.get(int(status), {}) if status.isdigit() else ():
            response.setdefault("headers", {})[name] = _header(name)


def _error(code: int) -> dict[str, Any]:
    model = error_model(code).__name__
    return {
        "description": ERROR_DESCRIPTIONS[code],
        "content": {JSON: {"schema": {"$ref": SCHEMA_REF.format(model=model)}}},
    }


def _header(name: str) -> dict[str, Any]:
    kind = {"type": "integer", "minimum": 0} if name == "Retry-After" else {"type": "string"}
    return {"description": HEADER_DESCRIPTIONS[name], "schema": kind}


def location_header(what: str) -> dict[str, Any]:
    """The `headers` of a response that sets `Location` to the resource it created."""
    return {
        "Location": {"description": f"The URL of the new {what}.", "schema": {"type": "string"}}
    }
