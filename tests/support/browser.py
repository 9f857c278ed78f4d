"""A real headless Chromium (Debian's, driven by Playwright) on a page of a live server.

Registered as a pytest plugin by tests/conftest.py, so any test can ask for these fixtures:

- `chromium` (module): a Playwright `Browser` on /usr/bin/chromium; in CI a missing Chromium
  fails, locally it skips with the apt command.
- `live_server_settings` (module): extra `CNN_*` settings for the live server, `{}` here;
  override it in a test module (or parametrize it) to configure the server.
- `live_app` (module): a `LiveServer` (real uvicorn, fresh data dir) started with them.
- `browser_guard` (function): the `BrowserGuard` of `live_page`.
- `live_page` (function): a Playwright `Page` in a fresh browser context whose `base_url` is
  `live_app.url` (so `live_page.goto("/docs")` works). When the test ends, its guard fails the
  test if any request went to a host other than loopback (such requests are also aborted) or
  any console error or uncaught page error appeared; `browser_guard.allow_console_error(regex)`
  accepts an error the test provokes on purpose.

Below the pages, nothing the browser does can leave the host either: Chromium resolves no host
name but 127.0.0.1 (an offline machine, so a page that needs a CDN stays blank), and its proxy
for every host but loopback is `proxy_sink`, which refuses all and records where each request
was going. Chromium's own services do try (accounts.google.com, content-autofill.googleapis.com
on a page with a form): that is the browser's doing, not the page's, so it is not a failure.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route, sync_playwright

from tests.support.server import LiveServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
# Read from memory, never from the network.
LOCAL_SCHEMES = ("data", "blob", "about")


def is_loopback(url: str) -> bool:
    """Whether `url` is in memory or names a loopback host (127.0.0.0/8, ::1, localhost)."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ProxySink:
    """An HTTP proxy on loopback that answers every request 403 and records its target."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        targets = self.targets

        class Refuse(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                # "CONNECT host:443 HTTP/1.1" or "GET http://host/path HTTP/1.1"
                words = self.rfile.readline(8192).decode("latin-1").split()
                if len(words) >= 2:
                    targets.append(words[1])
                self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Refuse)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@dataclass
class BrowserGuard:
    """What one browser context asked for and logged, and the check made when a test ends."""

    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern] = field(default_factory=list)

    def allow_console_error(self, pattern: str) -> None:
        """Accept console errors matching `pattern` (e.g. the 401 a test provokes)."""
        self.allowed.append(re.compile(pattern))

    def requested_paths(self, origin: str) -> list[str]:
        """The paths of the requests made to `origin`, in order."""
        return [urlsplit(url).path for url in self.requests if url.startswith(origin + "/")]

    def check(self) -> None:
        assert not self.foreign, f"requests to hosts other than loopback: {self.foreign}"
        unexpected = [
            text
            for text in self.console_errors
            if not any(pattern.search(text) for pattern in self.allowed)
        ]
        assert not unexpected, f"console errors: {unexpected}"

    def on_route(self, route: Route, request: Request) -> None:
        if is_loopback(request.url):
            route.continue_()
        else:
            self.foreign.append(request.url)
            route.abort("blockedbyclient")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location.get('url', '')})")


def require_chromium() -> str:
    """Debian's chromium, or a failure in CI (.ci/run installs it) and a skip elsewhere."""
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("chromium is not installed, though .ci/run installs it")
        pytest.skip("Debian's chromium is not installed (sudo apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="session")
def proxy_sink() -> Iterator[ProxySink]:
    """The proxy of `chromium`: the browser reaches no host but loopback through it."""
    sink = ProxySink()
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture(scope="module")
def chromium(proxy_sink: ProxySink) -> Iterator[Browser]:
    """One headless Chromium per test module (each test gets a fresh context: a new profile).

    Not per session: while Playwright's sync API runs, this thread has a running event loop,
    so `asyncio.run` in a later module would fail; it ends with the module.
    """
    executable = require_chromium()
    with sync_playwright() as playwright:
        # Playwright's own browser download cannot work here: never `playwright install`.
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            proxy={"server": proxy_sink.url, "bypass": "127.0.0.1,localhost,[::1]"},
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def live_server_settings() -> dict[str, str]:
    """Extra `CNN_*` settings of `live_app`; override in a test module to configure it."""
    return {}


@pytest.fixture(scope="module")
def live_app(
    live_server_settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A real uvicorn serving the app on a fresh data dir, only `live_server_settings` set."""
    require_chromium()  # no server to start when there is no browser to point at it
    tmp: Path = tmp_path_factory.mktemp("live-app")
    server = LiveServer(
        tmp / "data", tmp / "server.log", inherit_settings=False, **live_server_settings
    )
    try:
        server.start()
        yield server
    finally:
        server.kill_group()


@pytest.fixture
def browser_guard() -> BrowserGuard:
    return BrowserGuard()


@contextlib.contextmanager
def guarded_page(browser: Browser, guard: BrowserGuard, base_url: str) -> Iterator[Page]:
    """A page in a fresh context of `browser` whose traffic and console `guard` records."""
    context = browser.new_context(base_url=base_url)
    context.on("request", lambda request: guard.requests.append(request.url))
    context.route("**/*", guard.on_route)
    context.on("console", guard.on_console)
    context.on("weberror", lambda error: guard.console_errors.append(f"uncaught: {error.error}"))
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def live_page(
    chromium: Browser, live_app: LiveServer, browser_guard: BrowserGuard
) -> Iterator[Page]:
    """A page on `live_app` in a fresh context, checked by `browser_guard` when the test ends."""
    with guarded_page(chromium, browser_guard, live_app.url) as page:
        yield page
    browser_guard.check()
