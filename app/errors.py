"""Service errors and their mapping to HTTP, in one place.

    ServiceError               any failure with a message meant for the client
    ├── BadRequestError        400  input that cannot be decoded (a corrupt image)
    ├── UnauthorizedError      401  missing or wrong API key
    ├── ForbiddenError         403  a cross-origin request that would change data
    ├── NotFoundError          404  unknown id
    ├── RequestTimeoutError    408  a request body that stalled
    ├── ConflictError          409  the resource is in a state that forbids the action
    ├── PayloadTooLargeError   413  input over a configured limit
    ├── UnsupportedMediaError  415  a file format the route does not accept
    ├── InvalidRequestError    422  well-formed input that cannot work (admission control)
    ├── QueueFullError         429  the job queue is full (Retry-After)
    └── BusyError              503  too many predictions or uploads in flight (Retry-After)

The job database being unreachable (a PostgreSQL restarting) is a 503 with Retry-After too:
the service answers again as soon as it is back.

cnn_core's errors are client mistakes too: a `DatasetError` is 413 when over a limit
(`DatasetTooLarge`), 415 for bytes of no accepted format (`UnsupportedFormat`), 400 for a
truncated or corrupt file (`CorruptFile`) and 422 otherwise (well-formed data that cannot be
used); a `ConfigError` is 422. So, across the API: 400 means bytes that cannot be decoded
(malformed multipart or JSON), 422 means a well-formed request whose content is invalid.

Every error body is `{"detail": "one sentence: what is wrong, where, what to send instead"}`;
a 422 adds `"errors": [{"loc", "msg", "type"}, ...]`, every problem found by its place in the
request (`app.validation` writes both for a body that fails validation). Validation errors are
answered without echoing the input (beyond a short rendering of a mistyped name), so a NaN in a
body can never turn the 422 into a 500, and only the first few are listed (then how many
more), so the reply stays small and cheap to build whatever the body holds.
"""

import logging
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.validation import explain
from cnn_core import ConfigError, DatasetError
from cnn_core.errors import CorruptFile, DatasetTooLarge, UnsupportedFormat

log = logging.getLogger("app")


class ServiceError(Exception):
    """Base class; `status_code` and `headers` say how to answer."""

    status_code = 500
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def body(self) -> dict[str, Any]:
        """The JSON the client gets."""
        return {"detail": self.detail}


class BadRequestError(ServiceError):
    status_code = 400


class UnauthorizedError(ServiceError):
    status_code = 401
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ServiceError):
    status_code = 403


class NotFoundError(ServiceError):
    status_code = 404


def not_found(kind: str, value: str) -> NotFoundError:
    """A 404 that echoes the id asked for (cut to 64 characters) and where the known ones are
    listed: `No model 'abc': GET /models lists them`."""
    shown = value if len(value) <= 64 else value[:61] + "..."
    return NotFoundError(f"No {kind} {shown!r}: GET /{kind}s lists them")


class RequestTimeoutError(ServiceError):
    status_code = 408


class ConflictError(ServiceError):
    status_code = 409


class PayloadTooLargeError(ServiceError):
    status_code = 413


class UnsupportedMediaError(ServiceError):
    status_code = 415


class InvalidRequestError(ServiceError):
    """422: `detail` says what to fix; `errors` lists each problem by its place (`loc`) in
    the request, so a form can show it next to its field."""

    status_code = 422

    def __init__(
        self,
        detail: str,
        loc: Sequence[str | int] = (),
        *,
        kind: str = "invalid_value",
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.errors = errors or [{"loc": list(loc), "msg": detail, "type": kind}]

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "errors": self.errors}

    @classmethod
    def explaining(cls, errors: list[dict[str, Any]], root: Any = None) -> "InvalidRequestError":
        """The 422 for pydantic validation `errors` of a request whose body is a `root`."""
        detail, issues = explain(errors, root)
        return cls(detail, errors=issues)


class QueueFullError(ServiceError):
    status_code = 429
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "5"}


class BusyError(ServiceError):
    status_code = 503
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}


class DatabaseUnavailableError(ServiceError):
    status_code = 503
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "5"}


def error_response(exc: ServiceError) -> JSONResponse:
    """The answer to a service error: its status, headers and body. Also sent
    directly by the middlewares that refuse a request before it reaches a route."""
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


async def handle_service_error(request: Request, exc: ServiceError) -> JSONResponse:
    """Answer a deliberate service error with its status and message."""
    return error_response(exc)


CORE_ERROR_STATUS = {DatasetTooLarge: 413, UnsupportedFormat: 415, CorruptFile: 400}


async def handle_core_error(request: Request, exc: ConfigError | DatasetError) -> JSONResponse:
    """Answer an invalid architecture or dataset from cnn_core: 422 unless a subclass says more."""
    status = next((code for kind, code in CORE_ERROR_STATUS.items() if isinstance(exc, kind)), 422)
    if status == 422:
        kind = "config_error" if isinstance(exc, ConfigError) else "dataset_error"
        return error_response(InvalidRequestError(str(exc), kind=kind))
    return JSONResponse({"detail": str(exc)}, status_code=status)


def _body_type(request: Request) -> Any:
    """The type the route validates its body as (None for a route that reads it itself)."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    bodies = getattr(dependant, "body_params", None) or []
    return bodies[0].field_info.annotation if len(bodies) == 1 else None


async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 that says what to fix first, then lists the first few problems (never the
    offending input); a 400 for a body that is not JSON at all."""
    found = exc.errors()
    malformed = next((err for err in found if err.get("type") == "json_invalid"), None)
    if malformed is not None:  # not a wrong value but no JSON at all: the request is bad
        where = str((malformed.get("ctx") or {}).get("error", ""))[:200]
        return JSONResponse(
            {"detail": f"the body is not valid JSON ({where}): send a JSON object"},
            status_code=400,
        )
    return error_response(InvalidRequestError.explaining(list(found), _body_type(request)))


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A 500 with a request id that also appears, with the traceback, in the log."""
    request_id = uuid.uuid4().hex
    log.exception(
        "unhandled error (request_id=%s) on %s %s", request_id, request.method, request.url.path
    )
    return JSONResponse(
        {"detail": "Internal server error", "request_id": request_id}, status_code=500
    )


class JsonContentTooLarge:
    """ASGI middleware: Starlette's body limiter answers a Content-Length over the cap with a
    plain-text 413 that no handler sees; send it in the API's `{"detail": ...}` shape, like the
    413 it raises for an over-long chunked body."""

    BODY = b'{"detail":"Content Too Large"}'

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rewrite = False

        async def send_json(message: Message) -> None:
            nonlocal rewrite
            if message["type"] == "http.response.start" and message["status"] == 413:
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                rewrite = headers.get("content-type", "").startswith("text/plain")
                if rewrite:
                    headers["content-type"] = "application/json"
                    headers["content-length"] = str(len(self.BODY))
                    message = {**message, "headers": headers.raw}
            elif message["type"] == "http.response.body" and rewrite:
                message = {"type": "http.response.body", "body": self.BODY}
            await send(message)

        await self.app(scope, receive, send_json if scope["type"] == "http" else send)


async def handle_database_unreachable(request: Request, exc: OperationalError) -> JSONResponse:
    """Answer 503 while the job database cannot be reached."""
    log.warning("job database unreachable: %s", exc.orig or exc)
    return error_response(
        DatabaseUnavailableError("The job database is unreachable; retry in a few seconds")
    )


def register_error_handlers(app: FastAPI) -> None:
    """Install every handler above on `app`."""
    app.add_exception_handler(ServiceError, handle_service_error)
    app.add_exception_handler(ConfigError, handle_core_error)
    app.add_exception_handler(DatasetError, handle_core_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(OperationalError, handle_database_unreachable)
    app.add_exception_handler(Exception, handle_unexpected_error)
    app.add_middleware(JsonContentTooLarge)
