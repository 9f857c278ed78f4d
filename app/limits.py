"""What one slow or idle client may hold: connection time, body pauses, upload slots.

A client that opens connections and sends nothing, sends its headers a byte at a time, or
starts an upload and stalls, holds a socket, a task and (for an upload) temp files for as long
as it likes unless the server sets deadlines. Three bounds apply here:

- Headers: `HeaderTimeoutH11Protocol` (uvicorn's h11 protocol with a deadline) closes a
  connection whose request headers are not complete `CNN_HEADER_TIMEOUT` seconds after the
  connection opened, or after the first byte of a next request on a kept-alive connection.
  Idle kept-alive connections are uvicorn's `--timeout-keep-alive` (5 s by default). Serve with
  `uvicorn app.main:app --http app.limits:HeaderTimeoutH11Protocol`, as `make run` does.
- Bodies: `BodyTimeout` answers 408 and closes the connection when a request body pauses for
  more than `CNN_BODY_TIMEOUT` seconds; the route sees a disconnect, so an upload's temp files
  are removed as for any client that went away.
- Uploads: `ConcurrencyLimit` lets at most `CNN_MAX_CONCURRENT_UPLOADS` dataset uploads be
  received at once and answers the next with 503 and Retry-After before reading its body.

A deployment facing the internet should still put a reverse proxy in front (README, "Behind a
reverse proxy"): it buffers slow clients, so none of these ever binds the service.
"""

import asyncio
import functools

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.errors import BusyError, RequestTimeoutError, error_response
from app.settings import Settings


@functools.cache
def _header_timeout() -> float:
    return Settings().header_timeout


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that do not finish a request's headers in
    time. The deadline is not reset by each byte, so trickled headers are cut off too."""

    _header_deadline: asyncio.TimerHandle | None = None

    def _awaiting_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._header_deadline = self.loop.call_later(_header_timeout(), self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._awaiting_headers() and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        waiting, cycle = self._awaiting_headers(), self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request's headers are in
            self._disarm()
        elif waiting and self._header_deadline is None:  # the next request has begun
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class BodyTimeout:
    """ASGI middleware: a request body that pauses longer than `seconds` ends the request with
    408 and `Connection: close`. Only the body is timed: once it is complete, `receive` is
    passed through (a streaming response waits on it for the client's disconnect)."""

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = timed_out = started = False

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()
            if timed_out:
                return {"type": "http.disconnect"}
            try:
                async with asyncio.timeout(self.seconds):  # unlike wait_for, no task per message
                    message = await receive()
            except TimeoutError:
                timed_out = True
                return {"type": "http.disconnect"}
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if timed_out and not started:
                return  # the route's answer to the disconnect; the 408 below replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except Exception:
            if not timed_out or started:
                raise
        if timed_out and not started:
            refusal = RequestTimeoutError(
                f"The request body paused for more than {self.seconds:g} s; send it without "
                f"stalling (or raise CNN_BODY_TIMEOUT)"
            )
            response = error_response(refusal)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)


class ConcurrencyLimit:
    """ASGI middleware: at most `limit` requests to `method path` in flight; one more gets 503
    with Retry-After before its body is read. Used for dataset uploads (each may spool up to
    `CNN_MAX_UPLOAD_MB` to temp files)."""

    def __init__(self, app: ASGIApp, *, method: str, path: str, limit: int, what: str) -> None:
        self.app = app
        self.method, self.path, self.limit, self.what = method, path, limit, what
        self.in_flight = 0  # changed on the event loop only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == self.method
            and scope["path"].removeprefix(scope.get("root_path", "")).rstrip("/") == self.path
        ):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            refusal = BusyError(
                f"Server busy: {self.limit} {self.what} are being received; retry after "
                f"Retry-After seconds"
            )
            await error_response(refusal)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
