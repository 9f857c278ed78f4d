"""Which methods a path supports, as `OPTIONS` and 405 answers tell it.

FastAPI makes one route per method, and Starlette answers a method no route of a path has
with 405 and the `Allow` of the first route that matched the path alone: `Allow: GET` for a
path that also has `DELETE`. `AllowedMethods` answers `OPTIONS` itself (204 with `Allow`) and
sets `Allow` on every 405 to the methods of all the routes of the path.
"""

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(scope: Scope) -> set[str]:
    """The methods that some route of the app takes at the request's path: each one the
    router would dispatch (none for a path that only a mount, such as the static files,
    serves: a mount takes every method and answers for itself)."""
    routes = [r for r in scope["app"].router.routes if not isinstance(r, Mount)]
    return {
        method
        for method in METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    }


class AllowedMethods:
    """ASGI middleware: `OPTIONS` on a routed path is 204 with `Allow`; every 405 gets the
    complete `Allow`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and (methods := allowed_methods(scope)):
            response = Response(status_code=204, headers={"Allow": _allow(methods)})
            await response(scope, receive, send)
            return

        async def send_allow(message: Message) -> None:
            is_405 = message["type"] == "http.response.start" and message["status"] == 405
            if is_405 and (methods := allowed_methods(scope)):
                MutableHeaders(scope=message)["Allow"] = _allow(methods)
            await send(message)

        await self.app(scope, receive, send_allow)


def _allow(methods: set[str]) -> str:
    return ", ".join(sorted(methods | {"OPTIONS"}))
