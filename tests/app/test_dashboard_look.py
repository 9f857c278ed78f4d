"""Screenshots of the dashboard compared with committed baselines, so a broken layout fails.

A fresh server holds exactly one finished, seeded job, so every page shows the same thing on
every run; what still changes (dates, durations) is masked. Baselines live in
tests/app/dashboard_baselines/; after a deliberate change to the look, rewrite them with
UPDATE_DASHBOARD_BASELINES=1 and look at every image before committing it.
"""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.dashboard_browser import Tab, assert_looks_like
from tests.support.builders import TINY_ARCHITECTURE, TINY_TRAINING
from tests.support.server import live_server, wait_for_job

WIDE = (1280, 800)
PHONE = (390, 844)


@pytest.fixture(scope="module")
def setup(chromium, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, str, dict]]:
    tmp = tmp_path_factory.mktemp("look")
    with live_server(tmp / "data", tmp / "server.log", CNN_TRAIN_THREADS="1") as (server, client):
        yield chromium, server.url, finished_job(client)


def finished_job(client: httpx.Client) -> dict:
    body = {
        "dataset_id": "mnist-sample",
        "architecture": TINY_ARCHITECTURE,
        "training": {**TINY_TRAINING, "batch_size": 64},
        "name": "seeded tiny net",
    }
    job = wait_for_job(client, client.post("/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", job
    return job


def screenshot(
    setup, path: str, size: tuple[int, int], ready: str, masks=(), height: int | None = None
) -> bytes:
    """The top `height` pixels (default: the viewport) of `path` once `ready` shows."""
    browser, url, _ = setup
    tab = Tab(browser, url, *size)
    try:
        tab.open(path)
        tab.page.locator(ready).first.wait_for()
        tab.page.wait_for_load_state("networkidle")
        png = tab.page.screenshot(
            animations="disabled",
            caret="hide",
            mask=[tab.page.locator(selector) for selector in masks],
            clip={"x": 0, "y": 0, "width": size[0], "height": height or size[1]},
        )
        tab.assert_clean()
        return png
    finally:
        tab.close()


def test_jobs_page_wide(setup, tmp_path: Path) -> None:
    png = screenshot(
        setup, "/", WIDE, "#jobs-table tbody tr", masks=("#jobs-table td:nth-child(5)",)
    )
    assert_looks_like(png, "jobs-wide", tmp_path)


def test_jobs_page_phone(setup, tmp_path: Path) -> None:
    png = screenshot(setup, "/", PHONE, "#jobs-table tbody tr")
    assert_looks_like(png, "jobs-phone", tmp_path)


def test_job_page_wide(setup, tmp_path: Path) -> None:
    job = setup[2]
    png = screenshot(
        setup,
        f"/ui/jobs/{job['id']}",
        WIDE,
        "#stream-state[data-state=ended]",
    )
    assert_looks_like(png, "job-wide", tmp_path)


def test_datasets_page_phone(setup, tmp_path: Path) -> None:
    png = screenshot(setup, "/ui/datasets", PHONE, ".class-row canvas.tile")
    assert_looks_like(png, "datasets-phone", tmp_path)


def test_model_page_wide(setup, tmp_path: Path) -> None:
    job = setup[2]
    # The drawing and upload panels only: the evaluation panel below changes with the server.
    png = screenshot(setup, f"/ui/models/{job['model_id']}", WIDE, "#draw", height=520)
    assert_looks_like(png, "model-wide", tmp_path)


@pytest.mark.parametrize("size", [WIDE, PHONE], ids=["wide", "phone"])
def test_no_page_is_wider_than_the_screen(setup, size: tuple[int, int]) -> None:
    """Every page fits the width of a 1280x800 screen and of a phone: wide tables scroll in
    their own box, the page itself never sideways."""
    browser, url, job = setup
    pages = {
        "/": "#jobs-table tbody tr",
        f"/ui/jobs/{job['id']}": "#stream-state[data-state=ended]",
        "/ui/datasets": ".class-row canvas.tile",
        "/ui/models": "main a[href*='/ui/models/']",
        f"/ui/models/{job['model_id']}": "#draw",
    }
    tab = Tab(browser, url, *size)
    try:
        for path, ready in pages.items():
            tab.open(path)
            tab.page.locator(ready).first.wait_for()
            tab.page.wait_for_load_state("networkidle")
            width = tab.page.evaluate("document.documentElement.scrollWidth")
            assert width <= size[0], f"{path} is {width} px wide on a {size[0]} px screen"
        tab.assert_clean()
    finally:
        tab.close()
