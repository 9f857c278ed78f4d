"""Who may drive the service: the API key, the request-origin rule and the exposure warning.

Both rules are ASGI middlewares, so a refused request is answered before its body is read: an
unauthenticated or cross-origin client cannot make the server parse an upload up to its cap.

API key: when `CNN_API_KEY` is set, every request outside the open paths (health and the docs)
needs `Authorization: Bearer <key>`, compared in constant time, or gets 401 with
`WWW-Authenticate: Bearer`. With a key set, the protected routers also declare the `bearer`
scheme as a dependency, which checks nothing but puts the scheme in the OpenAPI document, so
/docs offers "Authorize"; without one the document declares no security at all.

Origin: a web page can make a browser send "simple" requests (a multipart form POST, exactly
what an upload is) to any address, loopback included, and with DNS rebinding it can make its own
host name resolve to this server. So a state-changing request (POST, PUT, PATCH, DELETE) that
carries an `Origin` header, which browsers always send on those methods, is refused with 403
before its body is read, unless one of these holds:

1. Same origin: the Origin's `host[:port]` equals the request's `Host` header, and that host
   cannot have been rebound: it is an IP address or `localhost`, or an API key is configured
   (a rebound page cannot know the key). The scheme is not compared, so the service works
   behind a TLS-terminating proxy.
2. Loopback alias: both the Origin's host and the `Host` header are loopback names (`localhost`,
   127.0.0.0/8, `[::1]`) with the same port, e.g. a page on http://localhost:8000 posting to
   http://127.0.0.1:8000.

Everything else is refused: another host or port, `Origin: null` (sandboxed frames, file:
pages), anything that is not an http(s) origin. Requests without `Origin` (curl, scripts, the
Python client) are not browser requests and pass; GET and HEAD are never refused here.

Host: reads need a guard of their own. After DNS rebinding, a page's own name points at this
server, so its requests are same-origin for the browser, carry no `Origin` on GET, and can read
`/models`, `/jobs` and model downloads. They do carry the page's name in `Host`. So when no API
key is set, any request (every method, every path) whose `Host` is not a loopback name, an IP
address or a name listed in `CNN_ALLOWED_HOSTS` is refused with 403 before it reaches a route.
"""

import hmac
import ipaddress
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import ForbiddenError, UnauthorizedError, error_response
from app.settings import Settings

log = logging.getLogger("app")

STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine."""
    address = _ip(host)
    return host.lower() == "localhost" if address is None else address.is_loopback


def _host_and_port(authority: str, scheme: str) -> tuple[str, int] | None:
    """(host, port) of `host[:port]`, or None when it does not parse."""
    try:
        parts = urlsplit(f"//{authority}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or parts.username is not None or parts.password is not None:
        return None
    return host, port or DEFAULT_PORTS.get(scheme, 80)


def unbindable(host: str, allowed_hosts: Iterable[str] = ()) -> bool:
    """Whether a request naming `host` cannot come from a rebound page: an IP address,
    `localhost`, or a name the operator listed."""
    host = host.lower()
    return _ip(host) is not None or host == "localhost" or host in allowed_hosts


def origin_refusal(
    origin: str,
    host_header: str,
    scheme: str,
    api_key_set: bool,
    allowed_hosts: Iterable[str] = (),
) -> str | None:
    """Why a state-changing request with this `Origin` is refused, or None when it is allowed."""
    refused = (
        f"Cross-origin request refused: Origin {origin[:100]!r} is not this server's "
        f"origin. Call the API from a script, or from the service's own /docs page"
    )
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return refused
    if parts.scheme not in DEFAULT_PORTS or parts.path or parts.query or parts.fragment:
        return refused
    source = _host_and_port(parts.netloc, parts.scheme)
    target = _host_and_port(host_header, scheme)
    if source is None or target is None:
        return refused
    if parts.netloc.lower() == host_header.lower():
        if api_key_set or unbindable(target[0], allowed_hosts):
            return None
        return (
            f"Request refused: a page on {target[0]!r} may only change data here when "
            f"CNN_API_KEY is set (it could be a DNS-rebinding attack); open the service by "
            f"IP address or localhost, or configure an API key"
        )
    if is_loopback(source[0]) and is_loopback(target[0]) and source[1] == target[1]:
        return None
    return refused


class OriginGuard:
    """ASGI middleware applying `origin_refusal` to every state-changing request."""

    def __init__(
        self, app: ASGIApp, *, api_key_set: bool, allowed_hosts: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.api_key_set = api_key_set
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in STATE_CHANGING_METHODS:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None:
                reason = origin_refusal(
                    origin,
                    headers.get("host", ""),
                    scope["scheme"],
                    self.api_key_set,
                    self.allowed_hosts,
                )
                if reason is not None:
                    await error_response(ForbiddenError(reason))(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def host_refusal(host_header: str, scheme: str, allowed_hosts: Iterable[str]) -> str | None:
    """Why a request with this `Host` header is refused when no API key is set, or None."""
    target = _host_and_port(host_header, scheme)
    if target is not None and unbindable(target[0], allowed_hosts):
        return None
    return (
        f"Request refused: Host {host_header[:100]!r} is not a loopback name or an IP address "
        f"and no API key is set (it could be a web page's DNS-rebinding attack). Open the "
        f"service at an IP address or localhost, add the name to CNN_ALLOWED_HOSTS, or set "
        f"CNN_API_KEY"
    )


class HostGuard:
    """ASGI middleware applying `host_refusal` to every request; only installed when no API
    key is set (a rebound page cannot know the key). A request without `Host` (HTTP/1.0) is
    no browser's and passes."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host")
            if host is not None and (
                reason := host_refusal(host, scope["scheme"], self.allowed_hosts)
            ):
                await error_response(ForbiddenError(reason))(scope, receive, send)
                return
        await self.app(scope, receive, send)


# Declared on the protected routers (with a key set) for the OpenAPI document only; `ApiKeyGuard`
# does the check.
bearer = HTTPBearer(auto_error=False, description="The value of CNN_API_KEY.")


def _is_under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == prefix or path.startswith(f"{prefix}/") for prefix in prefixes)


class ApiKeyGuard:
    """ASGI middleware: when a key is set, refuse with 401 any request outside `open_paths`
    (each open with everything below it) that lacks `Authorization: Bearer <key>`."""

    def __init__(
        self, app: ASGIApp, *, api_key: SecretStr | None, open_paths: Iterable[str]
    ) -> None:
        self.app = app
        self.expected = api_key.get_secret_value().encode() if api_key else None
        self.open_paths = tuple(open_paths)

    def authorized(self, headers: Headers) -> bool:
        """Whether `headers` carry the key as a Bearer token (constant-time comparison)."""
        scheme, token = get_authorization_scheme_param(headers.get("authorization"))
        given = token.encode() if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(given, self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is not None and scope["type"] == "http":
            path = scope["path"].removeprefix(scope.get("root_path", ""))
            if not _is_under(path, self.open_paths) and not self.authorized(Headers(scope=scope)):
                refusal = UnauthorizedError("Missing or invalid API key")
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def warn_if_exposed(settings: Settings) -> None:
    """Log a warning when the service is told to listen beyond loopback without an API key."""
    if settings.api_key is None and not is_loopback(settings.host):
        log.warning(
            "CNN_HOST is %s, not a loopback address, and CNN_API_KEY is not set: anyone "
            "who can reach this port can upload data and run training jobs. Set "
            "CNN_API_KEY or bind 127.0.0.1.",
            settings.host,
        )
