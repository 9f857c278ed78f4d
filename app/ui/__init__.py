"""The web dashboard: pages at `/` and `/ui/...`, and the static files they load.

Every page is the same small HTML shell; `static/app.js` reads the path and draws the page
from the JSON API, so the dashboard holds no data and no logic the API lacks. The shell and
the static files are open even when `CNN_API_KEY` is set (the page asks for the key and sends
it as a Bearer header on each API call, the live stream included). Nothing is fetched from
another host: the chart library (uPlot) is vendored under `static/vendor/`, and the
Content-Security-Policy of the shell lets the browser load and connect to this server only.

Page routes are left out of the OpenAPI schema: they are not part of the API.
"""

import html
from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app import __version__

STATIC_URL = "/ui/static"
OPEN_PATHS = ("/", "/ui")
"""Paths (each with everything below it) that the API key does not guard: the shell and assets."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_STATIC_DIR = resources.files(__package__) / "static"
_SHELL = (resources.files(__package__) / "shell.html").read_text(encoding="utf-8")

router = APIRouter(include_in_schema=False)


def _page(request: Request) -> HTMLResponse:
    """The shell, pointing at this deployment's root path (behind a proxy) and asset version."""
    root = html.escape(str(request.scope.get("root_path", "")).rstrip("/"))
    body = _SHELL.replace("{{root}}", root).replace("{{version}}", html.escape(__version__))
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/")
def jobs_page(request: Request) -> HTMLResponse:
    """Jobs: the live list and the form to start one."""
    return _page(request)


@router.get("/ui/datasets")
def datasets_page(request: Request) -> HTMLResponse:
    """Datasets: upload, class counts and samples."""
    return _page(request)


@router.get("/ui/models")
def models_page(request: Request) -> HTMLResponse:
    """Models: the list."""
    return _page(request)


@router.get("/ui/jobs/{job_id}")
def job_page(request: Request, job_id: str) -> HTMLResponse:
    """One job: live cost curves, progress, settings, results."""
    return _page(request)


@router.get("/ui/models/{model_id}")
def model_page(request: Request, model_id: str) -> HTMLResponse:
    """One model: draw or upload images to predict, evaluate on a dataset, download."""
    return _page(request)


class _RevalidatedFiles(StaticFiles):
    """Static files that the browser revalidates on every load (a 304 when unchanged): the
    modules import each other by plain relative URLs, so a heuristically cached old module
    could otherwise meet a new one after an upgrade."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard's pages and its static files from `app`."""
    app.include_router(router)
    app.mount(STATIC_URL, _RevalidatedFiles(directory=str(_STATIC_DIR)), name="ui-static")
