"""Interactive API docs (Swagger UI and ReDoc) served entirely by the app itself.

FastAPI's built-in `/docs` and `/redoc` pages load their JavaScript and CSS from a public
CDN, so they are blank on a machine without internet access and they tell a third party
whenever someone opens them. Here the same pages are built with FastAPI's own
`get_swagger_ui_html` / `get_redoc_html`, but every asset they reference is a file shipped
inside an installed Python package and served by this app:

- Swagger UI 5 from `swagger-ui-bundle-v2` (`swagger_ui_bundle.swagger_ui_path`);
- ReDoc 2's standalone bundle from `fastapi-standalone-docs` (only its static files are
  used). That copy differs from the npm `redoc` bundle in one place: the footer logo is
  loaded from `<page path>/logo-mini.svg` instead of a CDN, so it is served here too.

Only an explicit allowlist of files is served from those directories, so nothing else in
the packages (for example Swagger UI's demo `index.html`, which points at a public demo
API) is reachable.

Usage::

    app = FastAPI(docs_url=None, redoc_url=None)
    mount_offline_docs(app)

Everything this module adds is a GET under /docs, /redoc or /favicon.ico and holds no data,
so it stays open when an API key is required (the pages fetch `app.openapi_url` without one).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope
from swagger_ui_bundle import swagger_ui_path

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
SWAGGER_ASSETS_URL = "/docs/static/swagger-ui"
REDOC_ASSETS_URL = "/docs/static/redoc"
FAVICON_URL = "/favicon.ico"

SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
REDOC_FILES = ("redoc.standalone.js", "logo-mini.svg")

# Assets are referenced with `?v=<package version>`, so a new package version is a new
# URL and a day of browser caching never serves a stale bundle.
_ASSET_CACHE_CONTROL = "public, max-age=86400"

# Swagger UI configuration (https://swagger.io/docs/open-source-tools/swagger-ui/usage/configuration/).
SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "deepLinking": True,
    # Keep the bearer token entered with "Authorize" across page reloads (browser storage).
    "persistAuthorization": True,
    "displayRequestDuration": True,
    # Request bodies are editable at once, prefilled with the schema examples.
    "tryItOutEnabled": True,
    "filter": True,
    "docExpansion": "list",
    "defaultModelsExpandDepth": 1,
    "showExtensions": True,
    "showCommonExtensions": True,
    # Never ask a public validator service about our schema, and never accept a
    # `?url=` / `?configUrl=` query that would point the page at someone else's spec.
    "validatorUrl": None,
    "queryConfigEnabled": False,
}


class _AllowlistedFiles(StaticFiles):
    """StaticFiles that serves only the named files of its directory, with caching."""

    def __init__(self, directory: Path, files: tuple[str, ...]) -> None:
        missing = [name for name in files if not (directory / name).is_file()]
        if missing:
            raise RuntimeError(
                f"offline docs assets missing from {directory}: {', '.join(missing)}; "
                "reinstall the package that ships them"
            )
        super().__init__(directory=directory)
        self._files = frozenset(files)

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in self._files:
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = _ASSET_CACHE_CONTROL
        return response


def _swagger_ui_dir() -> Path:
    return Path(str(swagger_ui_path))


def _redoc_dir() -> Path:
    # Locate the package without importing it: only its static files are used.
    spec = importlib.util.find_spec("fastapi_standalone_docs")
    if spec is None or spec.origin is None:
        raise RuntimeError("package fastapi-standalone-docs (ReDoc assets) is not installed")
    return Path(spec.origin).parent / "static" / "redoc"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not from a wheel
        return "0"


def _root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def mount_offline_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs and ReDoc at /redoc with all assets from this app.

    The pages read `app.openapi_url` on each request, so the schema URL can be the default
    or anything the app sets. Nothing is mounted when the app has no OpenAPI schema.
    """
    if not app.openapi_url:
        return

    swagger_dir = _swagger_ui_dir()
    redoc_dir = _redoc_dir()
    # Cache keys for the asset URLs: the version of the package that ships each bundle.
    swagger_version = _version("swagger-ui-bundle-v2")
    redoc_version = _version("fastapi-standalone-docs")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or OAUTH2_REDIRECT_URL

    app.mount(
        SWAGGER_ASSETS_URL,
        _AllowlistedFiles(swagger_dir, SWAGGER_FILES),
        name="swagger-ui-assets",
    )
    app.mount(
        REDOC_ASSETS_URL,
        _AllowlistedFiles(redoc_dir, REDOC_FILES),
        name="redoc-assets",
    )

    def swagger_asset(root: str, name: str) -> str:
        return f"{root}{SWAGGER_ASSETS_URL}/{name}?v={swagger_version}"

    async def swagger_ui_html(request: Request) -> HTMLResponse:
        root = _root_path(request)
        parameters = {**SWAGGER_UI_PARAMETERS, **(app.swagger_ui_parameters or {})}
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=swagger_asset(root, "swagger-ui-bundle.js"),
            swagger_css_url=swagger_asset(root, "swagger-ui.css"),
            swagger_favicon_url=swagger_asset(root, "favicon-32x32.png"),
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=parameters,
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc_html(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_ASSETS_URL}/redoc.standalone.js?v={redoc_version}",
            redoc_favicon_url=swagger_asset(root, "favicon-32x32.png"),
            with_google_fonts=False,
        )

    favicon_path = swagger_dir / "favicon-32x32.png"
    redoc_logo_path = redoc_dir / "logo-mini.svg"

    async def redoc_logo(request: Request) -> FileResponse:
        return FileResponse(
            redoc_logo_path,
            media_type="image/svg+xml",
            headers={"Cache-Control": _ASSET_CACHE_CONTROL},
        )

    async def favicon(request: Request) -> FileResponse:
        return FileResponse(
            favicon_path,
            media_type="image/png",
            headers={"Cache-Control": _ASSET_CACHE_CONTROL},
        )

    app.add_route(DOCS_URL, swagger_ui_html, include_in_schema=False)
    app.add_route(oauth2_redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc_html, include_in_schema=False)
    app.add_route(f"{REDOC_URL}/logo-mini.svg", redoc_logo, include_in_schema=False)
    app.add_route(FAVICON_URL, favicon, include_in_schema=False)
