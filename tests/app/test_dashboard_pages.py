"""The dashboard's pages, assets and the samples endpoint, without a browser."""

import fnmatch
import io
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from app.ui import CONTENT_SECURITY_POLICY
from tests.support.builders import holdout, npz_bytes

REPO = Path(__file__).resolve().parents[2]
UI = REPO / "app" / "ui"
PAGES = ("/", "/ui/datasets", "/ui/models", "/ui/jobs/0123abcd", "/ui/models/0123abcd")


def sheet(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_every_page_is_the_shell_with_a_same_origin_policy(client: TestClient) -> None:
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert '<main id="view"' in response.text
    assert "connect-src 'self'" in CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY


def test_the_shell_references_only_local_assets_that_answer(client: TestClient) -> None:
    html = client.get("/").text
    urls = re.findall(r"""(?:src|href)="([^"]+)\"""", html)
    assert any(url.startswith("/ui/static/app.js") for url in urls), urls
    for url in (u for u in urls if not u.startswith("#")):
        assert url.startswith("/") and not url.startswith("//"), url
        assert client.get(url).status_code == 200, url


def test_every_module_import_is_a_shipped_file() -> None:
    """A broken import would leave the page blank; each must name a file in static/."""
    static = UI / "static"
    for module in static.glob("*.js"):
        for target in re.findall(r"""from\s+"(\./[^"]+)\"""", module.read_text()):
            assert (static / target).is_file(), f"{module.name} imports missing {target}"


def test_package_data_ships_every_dashboard_file() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app.ui"]
    files = [p.relative_to(UI).as_posix() for p in UI.rglob("*") if p.is_file()]
    unshipped = [
        f
        for f in files
        if not f.endswith(".py")
        and "__pycache__" not in f
        and not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)
    ]
    assert not unshipped, f"not in pyproject's package-data for app.ui: {unshipped}"
    assert (UI / "static" / "vendor" / "uplot" / "LICENSE").read_text().startswith("The MIT")


def test_pages_are_left_out_of_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")], list(paths)
    assert "/datasets/{dataset_id}/samples" in paths


def test_with_an_api_key_pages_open_and_data_guarded(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", api_key="k")
    with TestClient(create_app(settings)) as client:
        for path in (*PAGES, "/ui/static/app.js", "/ui/static/vendor/uplot/uPlot.esm.js"):
            assert client.get(path).status_code == 200, path
        assert client.get("/datasets/mnist-sample/samples").status_code == 401
        keyed = client.get("/datasets/mnist-sample/samples", headers={"Authorization": "Bearer k"})
        assert keyed.status_code == 200


def test_static_files_are_revalidated_on_each_load(client: TestClient) -> None:
    first = client.get("/ui/static/api.js")
    assert first.headers["cache-control"] == "no-cache"
    again = client.get("/ui/static/api.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_unknown_static_files_are_404(client: TestClient) -> None:
    for path in ("/ui/static/nope.js", "/ui/static/../__init__.py", "/ui/static/../shell.html"):
        assert client.get(path).status_code == 404, path


def test_samples_are_the_first_of_each_class_at_their_stored_pixels(client: TestClient) -> None:
    X, y = holdout()
    X, y = X[:40], y[:40]
    dataset = client.post("/datasets", files={"files": ("d.npz", npz_bytes(X=X, y=y))}).json()
    pixels = sheet(client.get(f"/datasets/{dataset['id']}/samples", params={"per_class": 3}))
    assert pixels.shape == (10 * 28, 3 * 28)
    for label in range(10):
        members = np.flatnonzero(y == label)
        for column in range(3):
            tile = pixels[label * 28 : (label + 1) * 28, column * 28 : (column + 1) * 28]
            if column < len(members):
                np.testing.assert_array_equal(tile, X[members[column]])
            else:
                assert not tile.any()  # a class with fewer samples: a black tile


def test_samples_by_index_keep_the_order_asked_for(client: TestClient) -> None:
    X, y = holdout()
    dataset = client.post("/datasets", files={"files": ("d.npz", npz_bytes(X=X[:30], y=y[:30]))})
    dataset_id = dataset.json()["id"]
    pixels = sheet(client.get(f"/datasets/{dataset_id}/samples?index=7&index=2&index=7"))
    assert pixels.shape == (28, 3 * 28)
    for column, index in enumerate((7, 2, 7)):
        np.testing.assert_array_equal(pixels[:, column * 28 : (column + 1) * 28], X[index])


def test_colour_samples_in_float_scale_come_back_as_8_bit(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(4, 3, 5, 6)).astype(np.float32) / 255  # floats in 0..1
    y = np.array([0, 1, 0, 1])
    dataset = client.post("/datasets", files={"files": ("c.npz", npz_bytes(X=X, y=y))}).json()
    pixels = sheet(client.get(f"/datasets/{dataset['id']}/samples?index=3"))
    assert pixels.shape == (5, 6, 3)
    np.testing.assert_array_equal(pixels, np.rint(X[3] * 255).transpose(1, 2, 0))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("index=2000", "index 2000 is out of range"),
        ("per_class=65", "less than or equal to 64"),
        ("index=-1", "greater than or equal to 0"),
        ("per_class=0", "greater than or equal to 1"),
    ],
)
def test_bad_sample_queries_are_422_saying_why(client: TestClient, query, message) -> None:
    response = client.get(f"/datasets/mnist-sample/samples?{query}")
    assert response.status_code == 422
    assert message in str(response.json()["detail"])


def test_too_many_tiles_are_refused_before_loading(client: TestClient) -> None:
    many = "&".join(f"index={i}" for i in range(1025))
    response = client.get(f"/datasets/mnist-sample/samples?{many}")
    assert response.status_code == 422
    assert client.get("/datasets/nope/samples").status_code == 404
