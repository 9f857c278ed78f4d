"""/docs and /redoc render in a real headless Chromium with no request leaving the machine.

A real uvicorn serves `app.main:app` (as `make run` does) on a free port and a temporary
data dir. Chromium loads each page with every host name but 127.0.0.1 made unresolvable,
so a page that needed a CDN would stay blank, and writes a NetLog (its own record of every
URL request and socket connection) that the test reads to prove:

- every request the page made (the document, its scripts, styles, images and XHRs) went to
  the server under test, and the Swagger UI / ReDoc assets and the schema were among them;
- no TCP connection was opened to any address outside the loopback interface, by the page
  or by the browser itself.

The rendered DOM (``--dump-dom`` after the page settles) must show every operation of the
OpenAPI schema.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.docs import mount_offline_docs

REPO = Path(__file__).resolve().parents[2]
APP = "app.main:app"
API_KEY = "docs-browser-test-key"

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    # Every name resolves to "not found" except the server under test: an offline machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


# --------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    base_url: str
    log: Path
    api_key: str | None

    def get_json(self, path: str) -> dict:
        request = urllib.request.Request(self.base_url + path)
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _start_server(tmp: Path, api_key: str | None) -> tuple[subprocess.Popen, Server]:
    port = _free_port()
    data_dir = tmp / "data"
    data_dir.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CNN_")}
    env.update(CNN_DATA_DIR=str(data_dir), CNN_HOST="127.0.0.1", CNN_PORT=str(port))
    if api_key:
        env["CNN_API_KEY"] = api_key
    log = tmp / "server.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", log, api_key)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.base_url + "/health", timeout=2) as response:
                if response.status == 200:
                    return proc, server
        except OSError:
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            raise AssertionError(f"server did not answer /health in 60 s:\n{server.log_tail()}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    """End the process group the server leads (uvicorn and any worker it started)."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    # Workers may outlive the leader for a moment; make sure none is left behind.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module", params=[None, API_KEY], ids=["open", "api-key"])
def server(request, tmp_path_factory) -> Iterator[Server]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            # .ci/run installs Debian's chromium: in CI a missing browser is a failure.
            pytest.fail("chromium is not installed, though .ci/run installs it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    proc, srv = _start_server(tmp_path_factory.mktemp("docs-server"), request.param)
    try:
        yield srv
    finally:
        _stop(proc)


# --------------------------------------------------------------------------- browser


@dataclass
class PageLoad:
    dom: str
    requests: list[dict]  # {"url", "initiator", "request_type"} for every URL request
    tcp_peers: list[str]  # every address a TCP connection was attempted to
    stderr: str


def _read_netlog(path: Path) -> dict:
    text = path.read_text(errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        # A NetLog cut short (browser killed) lacks its closing brackets only.
        return json.loads(text.rstrip().rstrip(",") + "]}")


def _load_in_chromium(url: str, workdir: Path) -> PageLoad:
    workdir.mkdir(parents=True, exist_ok=True)
    netlog = workdir / "netlog.json"
    cmd = [
        CHROMIUM,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={workdir / 'profile'}",
        f"--log-net-log={netlog}",
        # Let the page run up to 30 s of (virtual) time; it stops as soon as the page is idle.
        "--virtual-time-budget=30000",
        "--dump-dom",
        url,
    ]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        dom, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        dom, stderr = proc.communicate()
        raise AssertionError(
            f"chromium did not finish loading {url} in 120 s:\n{stderr[-3000:]}"
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # renderer/zygote helpers, if any remain
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}:\n{stderr[-3000:]}"
    assert netlog.exists(), f"chromium wrote no NetLog:\n{stderr[-3000:]}"

    requests, peers = _netlog_traffic(netlog)
    return PageLoad(dom=dom, requests=requests, tcp_peers=peers, stderr=stderr)


def _netlog_traffic(netlog: Path) -> tuple[list[dict], list[str]]:
    """Every URL request (url, initiator, request_type) and TCP peer in a NetLog."""
    log = _read_netlog(netlog)
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    requests, peers = [], []
    for event in log["events"]:
        kind = names.get(event["type"])
        params = event.get("params") or {}
        if kind == "URL_REQUEST_START_JOB" and "url" in params:
            requests.append(
                {
                    "url": params["url"],
                    "initiator": params.get("initiator", ""),
                    "request_type": params.get("request_type", ""),
                }
            )
        elif kind in ("TCP_CONNECT", "TCP_CONNECT_ATTEMPT"):
            for key in ("address", "remote_address"):
                if key in params:
                    peers.append(params[key])
            peers.extend(params.get("address_list", []))
    return requests, peers


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _assert_nothing_left_the_machine(page: PageLoad, server: Server) -> list[str]:
    """Check the NetLog; return the URLs the page itself requested."""
    origin = server.base_url
    page_urls = [
        r["url"]
        for r in page.requests
        if r["initiator"] == origin or r["request_type"] == "main frame"
    ]
    foreign = [url for url in page_urls if not url.startswith(origin + "/")]
    assert not foreign, f"the page requested URLs outside the server under test: {foreign}"
    outside = [peer for peer in page.tcp_peers if not _is_loopback(peer)]
    assert not outside, f"TCP connections to non-loopback addresses: {outside}"
    return [urlsplit(url).path for url in page_urls]


def _schema(server: Server) -> dict:
    return server.get_json("/openapi.json")


def _operations(schema: dict) -> list[tuple[str, str, dict]]:
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    return [
        (path, method, op)
        for path, item in schema.get("paths", {}).items()
        for method, op in item.items()
        if method in methods
    ]


# Started as `python -c _MOVE_FDS_AND_EXEC r w chromium ...`: puts the pipe ends r and w on
# fds 3 and 4 (copied aside first, in case either already is 3 or 4), then execs chromium.
_MOVE_FDS_AND_EXEC = (
    "import os, sys; r, w = (os.dup(int(fd)) for fd in sys.argv[1:3]); "
    "os.dup2(r, 3); os.dup2(w, 4); os.set_inheritable(3, True); os.set_inheritable(4, True); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

    The browser reads commands on its fd 3 and writes replies and events on its fd 4, each
    a JSON message ended by a NUL byte: no extra package and no debugging port.
    """

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.netlog = workdir / "netlog.json"
        self.stderr_path = workdir / "chromium.err"
        commands_in, self._commands = os.pipe()
        self._replies, replies_out = os.pipe()
        args = [
            *CHROMIUM_FLAGS,
            f"--user-data-dir={workdir / 'profile'}",
            f"--log-net-log={self.netlog}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _MOVE_FDS_AND_EXEC, str(commands_in), str(replies_out)]
                + [CHROMIUM, *args],
                pass_fds=(commands_in, replies_out),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        os.close(commands_in)
        os.close(replies_out)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict] = []

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict:
        self._last_id += 1
        message: dict = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") == self._last_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            self.events.append(reply)

    def _receive(self, deadline: float, waiting_for: str) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no DevTools reply to {waiting_for}:\n{self.stderr()}")
            ready, _, _ = select.select([self._replies], [], [], remaining)
            if ready:
                chunk = os.read(self._replies, 1 << 16)
                assert chunk, f"chromium closed the DevTools pipe:\n{self.stderr()}"
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        os.close(self._commands)
        os.close(self._replies)


class Page:
    """One browser tab, with helpers to run JavaScript in it and wait for a condition."""

    def __init__(self, browser: DevTools) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable")

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, session=self.session)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):  # page still navigating
                value = self.evaluate(expression)
                if value:
                    return value
            time.sleep(0.1)
        errors = "\n".join(self.console_errors())[-3000:]
        raise AssertionError(f"timed out waiting for {what}; page errors:\n{errors}")

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.browser.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                errors.append(str(params.get("exceptionDetails", {}).get("text")))
            elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
                errors.append(
                    " ".join(str(a.get("description", a.get("value"))) for a in params["args"])
                )
        return errors

    def requested_urls(self) -> list[str]:
        return [
            event["params"]["request"]["url"]
            for event in self.browser.events
            if event.get("sessionId") == self.session
            and event.get("method") == "Network.requestWillBeSent"
        ]


# Swagger UI helpers, run in the page: its DOM class names have been stable since 3.x, and
# `ui` is the SwaggerUIBundle instance that FastAPI's page template declares.
SWAGGER_JS = r"""
window.__opblock = (method, path) => [...document.querySelectorAll('.opblock-' + method)]
    .find(b => b.querySelector('.opblock-summary-path[data-path="' + path + '"]'));
window.__expand = (method, path) => {
    const block = window.__opblock(method, path);
    if (!block) return 'no operation ' + method + ' ' + path + ' in Swagger UI';
    if (!block.classList.contains('is-open')) {
        block.querySelector('.opblock-summary-control').click();
    }
    return 'ok';
};
window.__ready = (method, path) => {
    // Execute only works once Swagger UI has resolved the operation it just opened.
    const resolved = ui.specSelectors.specResolvedSubtree(['paths', path, method]);
    return !!(resolved && window.__opblock(method, path).querySelector('button.execute'));
};
window.__clear = (method, path) => {
    const block = window.__opblock(method, path);
    const clear = block.querySelector('button.btn-clear');
    if (clear) clear.click();
    return !block.querySelector('.live-responses-table');
};
window.__click_execute = (method, path) => {
    window.__opblock(method, path).querySelector('button.execute').click();
    return true;
};
window.__status = (method, path) => {
    const block = window.__opblock(method, path);
    const cell = block && block.querySelector('.live-responses-table tbody .response-col_status');
    return cell ? parseInt(cell.textContent.trim(), 10) : 0;
};
window.__authorize = (key) => {
    document.querySelector('.auth-wrapper .btn.authorize').click();
    return new Promise(resolve => setTimeout(() => {
        const input = document.querySelector('.dialog-ux .auth-container input');
        if (!input) return resolve('no token input in the Authorize dialog');
        const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
        set.call(input, key);
        input.dispatchEvent(new Event('input', {bubbles: true}));
        document.querySelector('.dialog-ux .auth-btn-wrapper .authorize').click();
        setTimeout(() => {
            document.querySelector('.dialog-ux .close-modal').click();
            resolve('ok');
        }, 200);
    }, 300));
};
true
"""


def _open_swagger(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for("document.querySelectorAll('.opblock').length > 0", "Swagger UI operations")
    assert page.evaluate(SWAGGER_JS) is True


def _try_it_out(page: Page, method: str, path: str) -> int:
    """Expand an operation, press Execute with its prefilled values, return the status."""
    args = f"{method!r}, {path!r}"
    assert page.evaluate(f"window.__expand({args})") == "ok"
    page.wait_for(f"window.__ready({args})", f"the Execute button of {method} {path}")
    page.wait_for(f"window.__clear({args})", f"the previous response of {method} {path} cleared")
    page.evaluate(f"window.__click_execute({args})")
    return page.wait_for(f"window.__status({args})", f"the response to {method} {path}")


# --------------------------------------------------------------------------- tests


def test_swagger_ui_renders_every_operation_offline(server: Server, tmp_path: Path) -> None:
    page = _load_in_chromium(server.base_url + "/docs", tmp_path)
    diagnostics = (
        f"\n--- chromium stderr:\n{page.stderr[-2000:]}\n--- server log:\n{server.log_tail()}"
    )

    requested = _assert_nothing_left_the_machine(page, server)
    for asset in (
        "/docs/static/swagger-ui/swagger-ui-bundle.js",
        "/docs/static/swagger-ui/swagger-ui.css",
        "/openapi.json",
    ):
        assert asset in requested, f"{asset} not loaded from the server: {requested}{diagnostics}"

    schema = _schema(server)
    operations = _operations(schema)
    assert operations, "the OpenAPI schema has no operations"
    rendered = set(re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]*)"', page.dom))
    missing = {path for path, _, _ in operations} - rendered
    assert not missing, f"Swagger UI did not render {sorted(missing)}{diagnostics}"
    # Swagger UI lists schema and resolver errors in an errors box; the app's has none.
    assert "errors-wrapper" not in page.dom, f"Swagger UI reported schema errors{diagnostics}"

    schemes = schema.get("components", {}).get("securitySchemes", {})
    has_bearer = any(
        s.get("type") == "http" and s.get("scheme", "").lower() == "bearer"
        for s in schemes.values()
    )
    if server.api_key:
        assert has_bearer, "with CNN_API_KEY set the schema must declare an HTTP bearer scheme"
    if has_bearer:
        assert 'class="btn authorize' in page.dom, f"no Authorize button{diagnostics}"


def test_redoc_renders_every_operation_offline(server: Server, tmp_path: Path) -> None:
    page = _load_in_chromium(server.base_url + "/redoc", tmp_path)
    diagnostics = (
        f"\n--- chromium stderr:\n{page.stderr[-2000:]}\n--- server log:\n{server.log_tail()}"
    )

    requested = _assert_nothing_left_the_machine(page, server)
    for asset in ("/docs/static/redoc/redoc.standalone.js", "/openapi.json"):
        assert asset in requested, f"{asset} not loaded from the server: {requested}{diagnostics}"

    operations = _operations(_schema(server))
    rendered = set(re.findall(r'id="(?:tag/[^"/]*/)?operation/([^"]*)"', page.dom))
    missing = {op["operationId"] for _, _, op in operations} - rendered
    assert not missing, f"ReDoc did not render operations {sorted(missing)}{diagnostics}"


def test_docs_pages_reference_only_assets_served_by_the_app() -> None:
    """Without a browser: every URL in both pages is local, and each one answers."""
    app = FastAPI(title="t", docs_url=None, redoc_url=None)
    mount_offline_docs(app)
    client = TestClient(app)
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html)
        urls += re.findall(r"""url: '([^']+)'""", html)
        assert urls, html
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), f"{page}: {url}"
            response = client.get(url)
            assert response.status_code == 200, f"{page}: {url} -> {response.status_code}"
        assert "googleapis" not in html and "cdn" not in html.lower(), html
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert client.get("/redoc/logo-mini.svg").headers["content-type"] == "image/svg+xml"
    assert client.get("/favicon.ico").headers["content-type"] == "image/png"


def test_docs_assets_are_allowlisted_and_cached() -> None:
    app = FastAPI(docs_url=None, redoc_url=None)
    mount_offline_docs(app)
    client = TestClient(app)
    bundle = client.get("/docs/static/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert "max-age" in bundle.headers["cache-control"]
    again = client.get(
        "/docs/static/swagger-ui/swagger-ui-bundle.js",
        headers={"If-None-Match": bundle.headers["etag"]},
    )
    assert again.status_code == 304
    # The packages' other files (Swagger UI's demo page points at a public demo API).
    for path in (
        "/docs/static/swagger-ui/index.html",
        "/docs/static/swagger-ui/swagger-initializer.js",
        "/docs/static/swagger-ui/../swagger-ui/index.html",
        "/docs/static/redoc/redoc.standalone.js.LICENSE.txt",
        "/docs/static/redoc/../swagger/swagger-ui-bundle.js",
    ):
        assert client.get(path).status_code == 404, path


def test_docs_follow_the_apps_openapi_url_and_root_path() -> None:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url="/api/schema.json")
    mount_offline_docs(app)
    client = TestClient(app, root_path="/cnn")
    docs = client.get("/docs").text
    assert "url: '/cnn/api/schema.json'" in docs
    assert 'src="/cnn/docs/static/swagger-ui/swagger-ui-bundle.js' in docs
    assert 'spec-url="/cnn/api/schema.json"' in client.get("/redoc").text

    no_schema = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    mount_offline_docs(no_schema)
    assert TestClient(no_schema).get("/docs").status_code == 404


def test_try_it_out_executes_requests_from_swagger_ui(server: Server, tmp_path: Path) -> None:
    """The first-minute path: Execute in /docs reaches the API, with Authorize when keyed."""
    schema = _schema(server)
    operations = {(path, method) for path, method, _ in _operations(schema)}
    validate = ("/architectures/validate", "post")
    assert validate in operations, "POST /architectures/validate is missing from the schema"

    browser = DevTools(tmp_path)
    try:
        page = Page(browser)
        _open_swagger(page, server.base_url + "/docs")
        assert _try_it_out(page, "get", "/health") == 200
        if server.api_key is None:
            # The prefilled example body is valid, and the same-origin POST is accepted.
            assert _try_it_out(page, "post", "/architectures/validate") == 200
        else:
            assert _try_it_out(page, "post", "/architectures/validate") == 401
            assert page.evaluate(f"window.__authorize({server.api_key!r})") == "ok"
            assert _try_it_out(page, "post", "/architectures/validate") == 200
            # persistAuthorization: a reload keeps the token.
            _open_swagger(page, server.base_url + "/docs")
            assert _try_it_out(page, "post", "/architectures/validate") == 200

        # data: and blob: URLs (inline icons) are read from memory, not the network.
        foreign = [
            url
            for url in page.requested_urls()
            if not url.startswith((server.base_url + "/", "data:", "blob:"))
        ]
        assert not foreign, f"the page requested URLs outside the server under test: {foreign}"
    finally:
        browser.close()
    _, peers = _netlog_traffic(browser.netlog)
    outside = [peer for peer in peers if not _is_loopback(peer)]
    assert not outside, f"TCP connections to non-loopback addresses: {outside}"
