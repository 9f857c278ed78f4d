"""Browser helpers for the dashboard tests, on top of tests/support/browser.py's `chromium`:
a tab that records every request (with its headers: the tests check Last-Event-ID and
Authorization) and console error, and screenshot comparison against committed baselines."""

import io
import os
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

BASELINES = Path(__file__).parent / "dashboard_baselines"
UPDATE_BASELINES = os.environ.get("UPDATE_DASHBOARD_BASELINES") == "1"


class Tab:
    """A page in a fresh browser context that records what the page requested and any console
    error, so a test can assert that nothing left the machine and nothing went wrong."""

    def __init__(self, browser, base_url: str, width: int = 1280, height: int = 800) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.requests = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request))
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def open(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    def foreign_requests(self) -> list[str]:
        """URLs the page asked for on any host but the loopback one under test."""
        own = urlsplit(self.base_url).netloc
        return [
            request.url
            for request in self.requests
            if not request.url.startswith(("data:", "blob:"))
            and urlsplit(request.url).netloc != own
        ]

    def assert_clean(self, allowed_errors: tuple[str, ...] = ()) -> None:
        """No request to another host, no console error (but those containing `allowed_errors`)."""
        assert not self.foreign_requests(), f"requests off the host: {self.foreign_requests()}"
        errors = [e for e in self.errors if not any(a in e for a in allowed_errors)]
        assert not errors, f"console errors: {errors}"

    def close(self) -> None:
        self.context.close()


def assert_looks_like(png: bytes, name: str, tmp_path: Path, tolerance: float = 0.01) -> None:
    """`png` matches the committed baseline `name`: at most `tolerance` of its pixels differ
    by more than 48 levels in a channel (antialiasing moves a few). With
    UPDATE_DASHBOARD_BASELINES=1 the baseline is rewritten instead (look at it before
    committing)."""
    baseline = BASELINES / f"{name}.png"
    if UPDATE_BASELINES:
        BASELINES.mkdir(exist_ok=True)
        baseline.write_bytes(png)
        return
    assert baseline.exists(), f"no baseline {baseline}: run with UPDATE_DASHBOARD_BASELINES=1"
    actual = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    expected = np.asarray(Image.open(baseline).convert("RGB"), dtype=np.int16)
    (tmp_path / f"{name}.actual.png").write_bytes(png)
    assert actual.shape == expected.shape, (
        f"{name}: size {actual.shape[1::-1]} differs from the baseline's "
        f"{expected.shape[1::-1]} (see {tmp_path / f'{name}.actual.png'})"
    )
    changed = np.abs(actual - expected).max(axis=2) > 48
    Image.fromarray((changed * 255).astype(np.uint8)).save(tmp_path / f"{name}.diff.png")
    assert changed.mean() <= tolerance, (
        f"{name}: {changed.mean():.2%} of the pixels differ from the baseline (at most "
        f"{tolerance:.0%} may); see {tmp_path} for the actual image and the difference"
    )
