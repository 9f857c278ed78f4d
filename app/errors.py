"""Service errors and their mapping to HTTP, in one place.

    ServiceError               any failure with a message meant for the client
    ├── BadRequestError        400  input that cannot be decoded (a corrupt image)
    ├── UnauthorizedError      401  missing or wrong API key
    ├── NotFoundError          404  unknown id
    ├── ConflictError          409  the resource is in a state that forbids the action
    ├── PayloadTooLargeError   413  input over a configured limit
    ├── UnsupportedMediaError  415  a file format the route does not accept
    ├── InvalidRequestError    422  well-formed input that cannot work (admission control)
    ├── QueueFullError         429  the job queue is full (Retry-After)
    └── BusyError              503  too many predictions in flight (Retry-After)

cnn_core's `ConfigError` and `DatasetError` are client mistakes too and map to 422. Request
validation errors are answered without echoing the input, so a NaN in a body can never turn the
422 into a 500.
"""

import logging
import math
import uuid
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cnn_core import ConfigError, DatasetError

log = logging.getLogger("app")


class ServiceError(Exception):
    """Base class; `status_code` and `headers` say how to answer."""

    status_code = 500
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequestError(ServiceError):
    status_code = 400


class UnauthorizedError(ServiceError):
    status_code = 401
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class NotFoundError(ServiceError):
    status_code = 404


class ConflictError(ServiceError):
    status_code = 409


class PayloadTooLargeError(ServiceError):
    status_code = 413


class UnsupportedMediaError(ServiceError):
    status_code = 415


class InvalidRequestError(ServiceError):
    status_code = 422


class QueueFullError(ServiceError):
    status_code = 429
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "5"}


class BusyError(ServiceError):
    status_code = 503
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}


async def handle_service_error(request: Request, exc: ServiceError) -> JSONResponse:
    """Answer a deliberate service error with its status and message."""
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def handle_core_error(request: Request, exc: ConfigError | DatasetError) -> JSONResponse:
    """Answer an invalid architecture or dataset from cnn_core with a 422."""
    return JSONResponse({"detail": str(exc)}, status_code=422)


def _finite(value: object) -> object:
    """`value` with any non-finite float replaced by its string form."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 listing location, message and type of each problem, never the offending input."""
    errors = [
        {"loc": [_finite(part) for part in err.get("loc", ())], "msg": err.get("msg", ""),
         "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A 500 with a request id that also appears, with the traceback, in the log."""
    request_id = uuid.uuid4().hex
    log.exception("unhandled error (request_id=%s) on %s %s", request_id, request.method,
                  request.url.path)
    return JSONResponse({"detail": "Internal server error", "request_id": request_id},
                        status_code=500)


def register_error_handlers(app: FastAPI) -> None:
    """Install every handler above on `app`."""
    app.add_exception_handler(ServiceError, handle_service_error)
    app.add_exception_handler(ConfigError, handle_core_error)
    app.add_exception_handler(DatasetError, handle_core_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(Exception, handle_unexpected_error)
