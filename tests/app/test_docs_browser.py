"""/docs and /redoc render in a real headless Chromium with no request leaving the machine.

A real uvicorn serves `app.main:app` (as `make run` does) on a free port and a temporary data
dir, open and with an API key. The pages load in Chromium through `live_page`
(tests/support/browser.py): every host name but 127.0.0.1 is unresolvable, so a page that
needed a CDN would stay blank, and a request to any other host fails the test. On top of that,
the tests prove that every request the page made went to the server under test, that the
Swagger UI / ReDoc assets and the schema were among them, that the rendered page shows every
operation of the OpenAPI schema, and that Try it out reaches the API.
"""

import json
import re
import urllib.request

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Page

from app.docs import mount_offline_docs
from tests.support.browser import BrowserGuard
from tests.support.server import LiveServer

API_KEY = "docs-browser-test-key"
SETTLE_MS = 30_000


@pytest.fixture(scope="module", params=[{}, {"CNN_API_KEY": API_KEY}], ids=["open", "api-key"])
def live_server_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    return request.param


def _schema(server: LiveServer) -> dict:
    request = urllib.request.Request(server.url + "/openapi.json")
    if "CNN_API_KEY" in server.env:
        request.add_header("Authorization", f"Bearer {server.env['CNN_API_KEY']}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _operations(schema: dict) -> list[tuple[str, str, dict]]:
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    return [
        (path, method, op)
        for path, item in schema.get("paths", {}).items()
        for method, op in item.items()
        if method in methods
    ]


def _assert_only_the_server_was_asked(guard: BrowserGuard, server: LiveServer) -> list[str]:
    """Every request the page made went to the server under test; their paths."""
    foreign = [
        url
        for url in guard.requests
        if not url.startswith(server.url + "/") and not url.startswith(("data:", "blob:"))
    ]
    assert not foreign, f"the page requested URLs outside the server under test: {foreign}"
    return guard.requested_paths(server.url)


def _diagnostics(guard: BrowserGuard, server: LiveServer) -> str:
    return f"\n--- console errors: {guard.console_errors}{server.tail()}"


# --------------------------------------------------------------------------- tests


def test_swagger_ui_renders_every_operation_offline(
    live_page: Page, live_app: LiveServer, browser_guard: BrowserGuard
) -> None:
    schema = _schema(live_app)
    operations = _operations(schema)
    assert operations, "the OpenAPI schema has no operations"
    live_page.goto("/docs")
    live_page.wait_for_function(
        "n => document.querySelectorAll('.opblock').length >= n",
        arg=len(operations),
        timeout=SETTLE_MS,
    )
    live_page.wait_for_load_state("networkidle", timeout=SETTLE_MS)
    dom = live_page.content()
    diagnostics = _diagnostics(browser_guard, live_app)

    requested = _assert_only_the_server_was_asked(browser_guard, live_app)
    for asset in (
        "/docs/static/swagger-ui/swagger-ui-bundle.js",
        "/docs/static/swagger-ui/swagger-ui.css",
        "/openapi.json",
    ):
        assert asset in requested, f"{asset} not loaded from the server: {requested}{diagnostics}"

    rendered = set(re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]*)"', dom))
    missing = {path for path, _, _ in operations} - rendered
    assert not missing, f"Swagger UI did not render {sorted(missing)}{diagnostics}"
    # Swagger UI lists schema and resolver errors in an errors box; the app's has none.
    assert "errors-wrapper" not in dom, f"Swagger UI reported schema errors{diagnostics}"

    schemes = schema.get("components", {}).get("securitySchemes", {})
    has_bearer = any(
        s.get("type") == "http" and s.get("scheme", "").lower() == "bearer"
        for s in schemes.values()
    )
    if "CNN_API_KEY" in live_app.env:
        assert has_bearer, "with CNN_API_KEY set the schema must declare an HTTP bearer scheme"
    if has_bearer:
        assert 'class="btn authorize' in dom, f"no Authorize button{diagnostics}"


def test_redoc_renders_every_operation_offline(
    live_page: Page, live_app: LiveServer, browser_guard: BrowserGuard
) -> None:
    operation_ids = [op["operationId"] for _, _, op in _operations(_schema(live_app))]
    live_page.goto("/redoc")
    # ReDoc gives each operation an element id ending in operation/<operationId>.
    live_page.wait_for_function(
        "ids => ids.every(id => document.querySelector"
        '(`[id="operation/${id}"], [id$="/operation/${id}"]`))',
        arg=operation_ids,
        timeout=SETTLE_MS,
    )
    live_page.wait_for_load_state("networkidle", timeout=SETTLE_MS)
    dom = live_page.content()
    diagnostics = _diagnostics(browser_guard, live_app)

    requested = _assert_only_the_server_was_asked(browser_guard, live_app)
    for asset in ("/docs/static/redoc/redoc.standalone.js", "/openapi.json"):
        assert asset in requested, f"{asset} not loaded from the server: {requested}{diagnostics}"

    rendered = set(re.findall(r'id="(?:tag/[^"/]*/)?operation/([^"]*)"', dom))
    missing = set(operation_ids) - rendered
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


def _open_swagger(page: Page) -> None:
    page.goto("/docs")
    page.locator(".opblock").first.wait_for(timeout=SETTLE_MS)


def _try_it_out(page: Page, method: str, path: str) -> int:
    """Expand an operation, press Execute with its prefilled values; the status shown."""
    summary = page.locator(f'.opblock-summary-path[data-path="{path}"]')
    block = page.locator(f".opblock-{method}").filter(has=summary)
    if "is-open" not in (block.get_attribute("class") or ""):
        block.locator(".opblock-summary-control").click()
    # Execute only works once Swagger UI has resolved the operation it just opened.
    page.wait_for_function(
        "([path, method]) => !!ui.specSelectors.specResolvedSubtree(['paths', path, method])",
        arg=[path, method],
    )
    clear = block.locator("button.btn-clear")
    if clear.count():
        clear.click()
    status_cell = block.locator(".live-responses-table tbody .response-col_status")
    status_cell.first.wait_for(state="detached")
    with page.expect_response(
        lambda r: r.url.endswith(path) and r.request.method == method.upper()
    ) as response:
        block.locator("button.execute").click()
    shown = status_cell.first.inner_text(timeout=SETTLE_MS).strip()
    assert int(shown) == response.value.status, (shown, response.value.status)
    return int(shown)


def _authorize(page: Page, key: str) -> None:
    page.locator(".auth-wrapper .btn.authorize").click()
    page.locator(".dialog-ux .auth-container input").fill(key)
    page.locator(".dialog-ux .auth-btn-wrapper .authorize").click()
    page.locator(".dialog-ux .close-modal").click()


def test_try_it_out_executes_requests_from_swagger_ui(
    live_page: Page, live_app: LiveServer, browser_guard: BrowserGuard
) -> None:
    """The first-minute path: Execute in /docs reaches the API, with Authorize when keyed."""
    operations = {(path, method) for path, method, _ in _operations(_schema(live_app))}
    assert ("/architectures/validate", "post") in operations, (
        "POST /architectures/validate is missing from the schema"
    )

    _open_swagger(live_page)
    assert _try_it_out(live_page, "get", "/health") == 200
    if "CNN_API_KEY" not in live_app.env:
        # The prefilled example body is valid, and the same-origin POST is accepted.
        assert _try_it_out(live_page, "post", "/architectures/validate") == 200
    else:
        browser_guard.allow_console_error(
            r"status of 401 \(Unauthorized\)"
        )  # the unauthorized Execute
        assert _try_it_out(live_page, "post", "/architectures/validate") == 401
        _authorize(live_page, API_KEY)
        assert _try_it_out(live_page, "post", "/architectures/validate") == 200
        # persistAuthorization: a reload keeps the token.
        _open_swagger(live_page)
        assert _try_it_out(live_page, "post", "/architectures/validate") == 200

    _assert_only_the_server_was_asked(browser_guard, live_app)
