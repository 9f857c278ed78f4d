"""The dashboard in a real headless Chromium against a real server (uvicorn on loopback).

Each test drives the page as a person would (the form, a dropped file, mouse strokes) and ends
by asserting that the page asked no other host for anything and logged no console error.
"""

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from cnn_core.evaluation import EXAMPLES_PER_CELL
from tests.app.dashboard_browser import Tab
from tests.support.builders import (
    TINY_ARCHITECTURE,
    digits_npz,
    holdout,
    image_zip_bytes,
    png_bytes,
)
from tests.support.proxy import CuttingProxy
from tests.support.server import LiveServer, live_server, submit, wait_for_job

API_KEY = "dashboard-test-key"


@pytest.fixture(scope="module")
def browser(chromium):
    """tests/support/browser.py's Chromium (offline, a fresh context per tab)."""
    return chromium


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, httpx.Client]]:
    tmp = tmp_path_factory.mktemp("dashboard")
    with live_server(tmp / "data", tmp / "server.log", CNN_POLL_INTERVAL="0.1") as pair:
        yield pair


@pytest.fixture(scope="module")
def model(served: tuple[LiveServer, httpx.Client]) -> dict:
    """A small model trained on the built-in digits."""
    _, client = served
    job = submit(client, "mnist-sample", "tiny", epochs=2, batch_size=32)
    job = wait_for_job(client, job["id"])
    assert job["status"] == "succeeded", job
    return client.get(f"/models/{job['model_id']}").json()


@pytest.fixture
def tab(browser, served) -> Iterator[Tab]:
    server, _ = served
    opened = Tab(browser, server.url)
    yield opened
    opened.close()


def chart_state(tab: Tab) -> dict:
    """The job page's drawn points: iterations, and epochs that have a summary (empty until
    the page has drawn its charts)."""
    return tab.page.evaluate(
        """() => {
            const state = window.cnnDashboard?.job;
            if (!state) return {iterations: [], epochs: [], connections: 0};
            return {
                iterations: [...state.iterations],
                epochs: [...state.epochs.keys()].sort((a, b) => a - b),
                connections: state.connections,
            };
        }"""
    )


def x_range(tab: Tab, chart: str) -> list[float]:
    return tab.page.evaluate(
        f"() => {{ const x = window.cnnDashboard.charts.{chart}.plot.scales.x;"
        " return [x.min, x.max]; }"
    )


def drag_zoom(tab: Tab, selector: str) -> list[float]:
    """Drag across the left third of a chart's plot area; the x range it zoomed to."""
    box = tab.page.locator(f"{selector} .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    tab.page.mouse.move(box["x"] + 5, y)
    tab.page.mouse.down()
    tab.page.mouse.move(box["x"] + box["width"] / 3, y, steps=5)
    tab.page.mouse.up()
    zoomed = x_range(tab, "iteration")
    assert zoomed[1] - zoomed[0] > 0
    return zoomed


def wait_until(tab: Tab, condition, timeout: float = 30):
    """Poll `condition` until it is true, letting the page run (and its events reach the
    test: a sync Playwright page delivers them only while the test waits on it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        tab.page.wait_for_timeout(50)
    raise AssertionError(f"condition not met in {timeout} s")


def key_values(tab: Tab, selector: str) -> dict[str, str]:
    """The rows of the two-column table under `selector` (a job's settings or results)."""
    return tab.page.locator(f"{selector} table.kv").first.evaluate(
        """(table) => Object.fromEntries([...table.tBodies[0].rows].map(
            (row) => [row.cells[0].innerText.trim(), row.cells[1].innerText.trim()]))"""
    )


def test_start_a_job_from_the_form_and_watch_its_curve_grow(tab: Tab, served) -> None:
    _, client = served
    page = tab.page
    tab.open("/")
    page.locator("#kind-custom").check()
    page.locator("#job-architecture").fill(json.dumps(TINY_ARCHITECTURE))
    # The shape table comes from POST /architectures/validate before anything is submitted.
    page.locator("#layer-table td", has_text="4 × 12 × 12").wait_for()
    rows = page.locator("#layer-table tbody tr")
    assert rows.count() == 4  # three layers and the total
    assert rows.nth(0).inner_text().split("\t")[:3] == ["0", "conv", "4 × 12 × 12"]
    assert "1,554" in rows.nth(3).inner_text()  # total parameters

    # A refused submission puts each error next to its field.
    page.locator("#job-epochs").fill("0")
    page.locator("#job-learning-rate").fill("-1")
    page.get_by_role("button", name="Start training").click()
    page.locator("#job-epochs-error").filter(has_text="greater than").wait_for()
    assert "greater than" in page.locator("#job-learning-rate-error").inner_text()
    assert page.locator("#job-batch-size-error").inner_text() == ""
    assert client.get("/jobs").json()["count"] == 0

    # 8 epochs of batch 4 (3,600 steps): long enough to be seen growing on a fast machine,
    # where 2 epochs of batch 16 ended between two looks at the chart
    page.locator("#job-epochs").fill("8")
    page.locator("#job-batch-size").fill("4")
    page.locator("#job-learning-rate").fill("0.01")
    page.locator("#job-optimizer").select_option("rmsprop")
    page.locator("#job-seed").fill("3")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url("**/ui/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]

    # Points arrive while the job runs: several distinct counts before the stream ends.
    counts = set()
    deadline = time.monotonic() + 180
    while page.locator("#stream-state").get_attribute("data-state") != "ended":
        counts.add(len(chart_state(tab)["iterations"]))
        assert time.monotonic() < deadline, "the job did not finish in 180 s"
        page.wait_for_timeout(50)
    assert len(counts - {0}) >= 2, f"the curve did not grow live: counts seen {sorted(counts)}"

    history = client.get(f"/jobs/{job_id}/costs").json()
    drawn = chart_state(tab)
    assert drawn["iterations"] == [p["iteration"] for p in history["iterations"]]
    assert drawn["epochs"] == list(range(1, 9))
    assert page.locator("#epoch-table tbody tr").count() == 8
    assert page.locator("#point-count").inner_text() == f"{len(history['iterations'])} points"
    finished = client.get(f"/jobs/{job_id}").json()
    training = finished["training"]
    assert (training["epochs"], training["batch_size"], training["seed"]) == (8, 4, 3)
    assert training["optimizer"]["name"] == "rmsprop"
    assert training["optimizer"]["learning_rate"] == 0.01
    page.get_by_role("link", name="Open model").wait_for()
    # The settings it was started with, its final metrics, the server's PNG of the curve.
    settings = key_values(tab, "#settings")
    assert (settings["Epochs"], settings["Batch size"], settings["Seed"]) == ("8", "4", "3")
    assert {"name=rmsprop", "learning_rate=0.01"} <= set(settings["Optimizer"].split(", "))
    results = key_values(tab, "#results")
    assert results["Status"] == "succeeded"
    assert results["Validation accuracy"] == f"{100 * finished['metrics']['val_accuracy']:.1f}%"
    assert results["Train accuracy"] == f"{100 * finished['metrics']['train_accuracy']:.1f}%"
    page.get_by_role("button", name="Show cost curve (PNG)").click()
    png = page.locator("#png img")
    png.wait_for()
    assert png.evaluate("(img) => img.decode().then(() => img.naturalWidth)") > 100
    # The smoothing slider redraws the smoothed curve: 0 is the raw cost, 0.9 a smoother one.
    series = "() => window.cnnDashboard.charts.iteration.columns"
    page.locator("#smoothing").fill("0")
    raw = wait_until(tab, lambda: (c := page.evaluate(series)) and c[0] == c[1] and c)[0]
    assert page.locator("output[for=smoothing]").inner_text() == "0.00"
    page.locator("#smoothing").fill("0.9")
    wait_until(tab, lambda: page.evaluate(series)[1] != raw)
    smoother = page.evaluate(series)[1]
    assert np.abs(np.diff(smoother)).sum() < np.abs(np.diff(raw)).sum()  # it wiggles less
    # The refused submission's 422 is logged by the browser as a failed resource.
    tab.assert_clean(allowed_errors=("status of 422",))


def test_a_refusal_found_against_the_dataset_shows_at_its_field(tab: Tab, served) -> None:
    _, client = served
    jobs_before = client.get("/jobs").json()["count"]
    page = tab.page
    tab.open("/")
    page.locator("#kind-custom").check()
    # No input_shape: the shape table and the job take the dataset's.
    three_classes = {"layers": [*TINY_ARCHITECTURE["layers"][:-1], {"type": "dense", "units": 3}]}
    page.locator("#job-architecture").fill(json.dumps(three_classes))
    page.locator("#layer-table td", has_text="4 × 12 × 12").wait_for()
    page.get_by_role("button", name="Start training").click()
    error = page.locator("#job-architecture-error")
    error.filter(has_text="give the last dense layer 10 units").wait_for()
    assert page.locator("#job-epochs-error").inner_text() == ""
    assert client.get("/jobs").json()["count"] == jobs_before
    tab.assert_clean(allowed_errors=("status of 422",))


def test_a_dropped_stream_resumes_without_gaps_or_duplicates(browser, served) -> None:
    server, client = served
    # Long enough to outlast the cut, the reconnection and the zoom on a fast machine (3 epochs
    # of batch 2 had ended before the reconnection), and 9,000 steps: /costs answers at most
    # 10,000 in one page.
    job = submit(client, "mnist-sample", "tiny", epochs=20, batch_size=4)
    proxy = CuttingProxy(server.port)
    tab = Tab(browser, proxy.url)
    try:
        tab.open(f"/ui/jobs/{job['id']}")
        wait_until(tab, lambda: len(chart_state(tab)["iterations"]) > 0)
        # The first points come from GET /costs, before the stream that follows them is open.
        tab.page.locator("#stream-state[data-state=live]").wait_for()
        # While it trains, the progress line has an ETA.
        eta = re.compile(r"about \d.* left")
        tab.page.locator("#progress-text").filter(has_text=eta).wait_for()
        assert proxy.cut() > 0
        tab.page.locator("#stream-state[data-state=reconnecting]").wait_for()
        tab.page.locator("#stream-state[data-state=live]").wait_for()
        # Zoom into the first points by dragging; the view stays while more points arrive.
        zoomed = drag_zoom(tab, "#iteration-chart")
        seen = len(chart_state(tab)["iterations"])
        assert zoomed[1] < seen
        tab.page.locator("#stream-state[data-state=ended]").wait_for(timeout=180_000)
    finally:
        proxy.close()
    drawn = chart_state(tab)
    history = client.get(f"/jobs/{job['id']}/costs").json()
    assert history["status"] == "succeeded"
    assert len(drawn["iterations"]) > seen, "no points arrived after zooming"
    assert x_range(tab, "iteration") == zoomed
    assert drawn["connections"] >= 2
    assert drawn["iterations"] == [p["iteration"] for p in history["iterations"]]
    assert drawn["epochs"] == list(range(1, 21))
    # Each connection, the first included, asks only for what is newer than it has.
    since = [
        int(r.headers["last-event-id"])
        for r in tab.requests
        if r.url.endswith(f"/jobs/{job['id']}/events")
    ]
    assert len(since) >= 2 and since == sorted(since), since
    # The cut connections fail as network errors: that is the point of this test.
    tab.assert_clean(allowed_errors=("net::ERR_",))
    tab.close()


def test_the_jobs_list_follows_a_running_job_and_cancels_it(tab: Tab, served) -> None:
    _, client = served
    job = submit(client, "mnist-sample", "tiny", epochs=30, batch_size=2)
    try:
        tab.open("/")
        row = tab.page.locator(f"tr[data-job-id='{job['id']}']")
        row.locator(".badge.status-running").wait_for(timeout=60_000)
        cells = row.locator("td")

        # Without a reload, the row's progress moves and its latest cost is the job's.
        fractions = set()

        def advanced() -> bool:
            fractions.add(row.locator("progress").evaluate("(bar) => bar.value"))
            return len(fractions - {0}) >= 2

        wait_until(tab, advanced)
        assert "/30" in cells.nth(2).inner_text()  # "n% · epoch e/30"
        shown = float(cells.nth(3).inner_text())
        costs = [p["cost"] for p in client.get(f"/jobs/{job['id']}/costs").json()["iterations"]]
        assert any(abs(shown - c) <= 5e-4 * max(abs(c), 1e-3) for c in costs), shown

        row.get_by_role("button", name="Cancel").click()
        row.locator(".badge.status-cancelled").wait_for()
        assert row.get_by_role("button").count() == 0
        assert client.get(f"/jobs/{job['id']}").json()["status"] == "cancelled"
        tab.assert_clean()
    finally:
        client.post(f"/jobs/{job['id']}/cancel")
        wait_for_job(client, job["id"])


def test_drop_a_zip_and_see_its_class_grid(tab: Tab, served) -> None:
    _, client = served
    tab.open("/ui/datasets")
    tab.page.locator("#dropzone").wait_for()
    payload = base64.b64encode(image_zip_bytes(per_class=5)).decode()
    # A drop event carrying the file, as the browser fires it when a file is dragged in.
    tab.page.evaluate(
        """(payload) => {
            const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "digits.zip", {type: "application/zip"}));
            const zone = document.getElementById("dropzone");
            const init = {dataTransfer: transfer, bubbles: true, cancelable: true};
            zone.dispatchEvent(new DragEvent("dragover", init));
            zone.dispatchEvent(new DragEvent("drop", init));
        }""",
        payload,
    )
    tab.page.locator("#upload-status").filter(has_text="Stored").wait_for()
    stored = [d for d in client.get("/datasets").json()["datasets"] if d["name"] == "digits.zip"]
    assert len(stored) == 1 and stored[0]["classes"] == ["3", "7"]
    card = tab.page.locator(f"[data-dataset-id='{stored[0]['id']}']")
    card.locator(".class-row canvas.tile").first.wait_for()
    for name in ("3", "7"):
        row = card.locator(f".class-row[data-class='{name}']")
        assert row.locator(".class-name").inner_text().split() == [name, "5"]  # its count
        assert row.locator(".count-bar").get_attribute("aria-label") == "5 samples"
        assert row.locator("canvas.tile").count() == 5
        # Each tile shows a digit: white strokes on black, not an empty canvas.
        ink = row.locator("canvas.tile").first.evaluate(
            "(c) => Math.max(...c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
            ".filter((_, i) => i % 4 === 0))"
        )
        assert ink > 200
    assert tab.page.locator("progress[aria-label='upload progress']").evaluate("p => p.value") == 1
    tab.assert_clean()


def test_the_upload_progress_bar_moves_while_the_file_is_sent(tab: Tab, served) -> None:
    _, client = served
    payload = digits_npz(300)
    tab.open("/ui/datasets")
    tab.page.locator("#dropzone").wait_for()
    # Every value the bar takes, and an upload slow enough (Chromium's own throttling, as
    # DevTools applies it) that the browser reports its progress on the way.
    tab.page.evaluate(
        """() => {
            const bar = document.querySelector("progress[aria-label='upload progress']");
            window.barValues = [];
            new MutationObserver(() => window.barValues.push(bar.value))
                .observe(bar, {attributes: true, attributeFilter: ["value"]});
        }"""
    )
    cdp = tab.context.new_cdp_session(tab.page)
    cdp.send("Network.enable")
    # Bytes per second: about three seconds to send the file.
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1}
    cdp.send(
        "Network.emulateNetworkConditions", {**conditions, "uploadThroughput": len(payload) / 3}
    )
    tab.page.locator("#dataset-files").set_input_files(
        {"name": "noise.npz", "mimeType": "application/octet-stream", "buffer": payload}
    )
    tab.page.locator("#upload-status").filter(has_text="Stored").wait_for(timeout=30_000)
    values = tab.page.evaluate("window.barValues")
    assert values[-1] == 1 and values == sorted(values), values
    assert [v for v in values if 0 < v < 1], f"no progress between 0 and 1: {values}"
    stored = [d for d in client.get("/datasets").json()["datasets"] if d["name"] == "noise.npz"]
    assert len(stored) == 1 and stored[0]["n_samples"] == 300
    client.delete(f"/datasets/{stored[0]['id']}")
    tab.assert_clean()


def test_draw_a_digit_with_the_mouse_and_get_a_prediction(tab: Tab, model: dict) -> None:
    tab.open(f"/ui/models/{model['id']}")
    canvas = tab.page.locator("#draw")
    canvas.wait_for()
    box = canvas.bounding_box()
    answers = []
    tab.page.on(
        "response", lambda r: answers.append(r) if r.url.endswith("/predict?top_k=5") else None
    )
    mouse = tab.page.mouse
    mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15)
    mouse.down()
    mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=6)
    wait_until(tab, lambda: answers)  # a prediction while the stroke is still being drawn
    mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.85, steps=6)
    mouse.up()
    bars = tab.page.locator("#draw-result li")

    def shown() -> list[str]:
        return [bars.nth(i).get_attribute("data-class") for i in range(bars.count())]

    def latest() -> list[str]:
        top_k = answers[-1].json()["predictions"][0]["top_k"] if answers else []
        return [score["class_name"] for score in top_k]

    # The bars show what the server answered last, best first; a vertical stroke reads as 1.
    wait_until(tab, lambda: len(answers) >= 2 and shown() == latest())
    assert len(shown()) == 5
    assert shown()[0] == "1"
    tab.assert_clean()


def test_model_page_predicts_uploaded_images_and_downloads_the_model(
    tab: Tab, served, model: dict, tmp_path: Path
) -> None:
    _, client = served
    X, _ = holdout()
    files = []
    for i in range(3):
        path = tmp_path / f"digit-{i}.png"
        path.write_bytes(png_bytes(X[i]))
        files.append(path)
    expected = client.post(
        f"/models/{model['id']}/predict",
        files=[("files", (p.name, p.read_bytes())) for p in files],
    ).json()["predictions"]
    tab.open(f"/ui/models/{model['id']}")
    tab.page.locator("#predict-files").set_input_files(files)
    rows = tab.page.locator("#predict-results tbody tr")
    rows.nth(2).wait_for()
    assert rows.count() == 3
    for i, prediction in enumerate(expected):
        cells = rows.nth(i).locator("td")
        assert cells.nth(1).inner_text() == files[i].name
        assert cells.nth(2).inner_text() == prediction["class_name"]

    with tab.page.expect_download() as saved:
        tab.page.get_by_role("button", name="Download model (.npz)").click()
    download = saved.value
    assert download.suggested_filename == f"model-{model['id']}.npz"
    assert (
        Path(download.path()).read_bytes() == client.get(f"/models/{model['id']}/download").content
    )
    tab.assert_clean()


def test_smoothing_is_a_bias_corrected_moving_average(tab: Tab) -> None:
    tab.open("/")
    tab.page.locator("#job-form").wait_for()
    smoothed = tab.page.evaluate(
        """async () => {
            const { smooth } = await import("/ui/static/chart.js");
            return [
                smooth([3, 3, 3], 0.9), smooth([0, 10], 0.5),
                smooth([1, null, 2], 0), smooth([2, null, 4], 0.5),
            ];
        }"""
    )
    assert smoothed[0] == pytest.approx([3, 3, 3])  # a constant stays put from the first point
    assert smoothed[1] == pytest.approx([0, (0.5 * 0.5 * 0 + 0.5 * 10) / (1 - 0.25)])
    assert smoothed[2] == [1, None, 2]  # no smoothing: the points as they are, gaps kept
    assert smoothed[3][1] is None and smoothed[3][2] == pytest.approx(
        (0.5 * 0.5 * 2 + 0.5 * 4) / (1 - 0.25)
    )
    tab.assert_clean()


def test_the_page_asks_for_the_api_key_once_and_uses_it_everywhere(browser, tmp_path: Path) -> None:
    with live_server(
        tmp_path / "data", tmp_path / "log", CNN_API_KEY=API_KEY, CNN_POLL_INTERVAL="0.1"
    ) as (server, client):
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        job = wait_for_job(client, submit(client, "mnist-sample", "tiny", epochs=1)["id"])
        tab = Tab(browser, server.url)
        try:
            tab.open("/")
            dialog = tab.page.locator("#key-dialog")
            dialog.wait_for()
            tab.page.locator("#key-input").fill("wrong")
            tab.page.get_by_role("button", name="Use key").click()
            tab.page.locator("#key-error").filter(has_text="refused").wait_for()
            tab.page.locator("#key-input").fill(API_KEY)
            tab.page.get_by_role("button", name="Use key").click()
            tab.page.locator(f"tr[data-job-id='{job['id']}']").wait_for()

            tab.open(f"/ui/jobs/{job['id']}")  # the stream, read with fetch and the key
            tab.page.locator("#stream-state[data-state=ended]").wait_for()
            assert len(chart_state(tab)["iterations"]) == job["progress"]["iteration"]
            assert not dialog.is_visible()
            events = [r for r in tab.requests if r.url.endswith("/events")]
            assert events and all(
                r.headers.get("authorization") == f"Bearer {API_KEY}" for r in events
            )
            assert not [r.url for r in tab.requests if API_KEY in r.url]
            # The first wrong key was answered 401, which the browser logs.
            tab.assert_clean(allowed_errors=("status of 401",))
        finally:
            tab.close()


def test_the_job_form_is_reachable_by_keyboard(tab: Tab) -> None:
    tab.open("/")
    tab.page.locator("#job-form").wait_for()
    reached = []
    for _ in range(40):
        tab.page.keyboard.press("Tab")
        reached.append(
            tab.page.evaluate("document.activeElement.id || document.activeElement.textContent")
        )
        if reached[-1] == "Start training":
            break
    for control in ("job-dataset", "kind-preset", "job-preset", "job-epochs", "job-seed"):
        assert control in reached, reached
    assert reached[-1] == "Start training", reached
    tab.assert_clean()


def test_confusion_matrix_and_its_misclassified_samples(tab: Tab, served, model: dict) -> None:
    _, client = served
    expected = client.post(
        f"/models/{model['id']}/evaluate", json={"dataset_id": "mnist-sample"}
    ).json()
    tab.open(f"/ui/models/{model['id']}")
    tab.page.locator("#eval-dataset").select_option("mnist-sample")
    tab.page.get_by_role("button", name="Evaluate").click()
    matrix = tab.page.locator("#confusion tbody tr")
    matrix.first.wait_for()
    assert matrix.count() == len(expected["classes"])
    cells = tab.page.locator("#confusion button.cell")
    shown = [int(t) for t in cells.all_inner_texts()]
    assert shown == [n for row in expected["confusion_matrix"] for n in row]
    rows = tab.page.locator("table.per-class tbody tr")
    assert rows.count() == len(expected["per_class"])
    # The most confused pair: its cell opens the samples the model got wrong there.
    k = len(expected["classes"])
    true, predicted = max(
        ((t, p) for t in range(k) for p in range(k) if t != p),
        key=lambda tp: expected["confusion_matrix"][tp[0]][tp[1]],
    )
    count = expected["confusion_matrix"][true][predicted]
    tab.page.locator(f"button.cell[data-true='{true}'][data-predicted='{predicted}']").click()
    tiles = tab.page.locator("#cell-samples canvas.tile")
    tiles.first.wait_for()
    assert tiles.count() == min(count, EXAMPLES_PER_CELL)
    assert tab.page.locator("#cell-samples").inner_text().find(f"{count} sample") >= 0
    tab.assert_clean()


def tab_through(tab: Tab, stop: str, presses: int = 60) -> list[str]:
    """Press Tab until the focused element's id or text is `stop`; what was reached, in order."""
    reached = []
    for _ in range(presses):
        tab.page.keyboard.press("Tab")
        reached.append(
            tab.page.evaluate(
                "document.activeElement.id || document.activeElement.textContent.trim()"
            )
        )
        if reached[-1] == stop:
            break
    return reached


def test_the_datasets_and_model_pages_are_reachable_by_keyboard(tab: Tab, model: dict) -> None:
    tab.open("/ui/datasets")
    tab.page.locator(".class-row canvas.tile").first.wait_for()
    reached = tab_through(tab, "dataset-name")
    assert reached[-1] == "dataset-name" and "dataset-files" in reached, reached

    tab.open(f"/ui/models/{model['id']}")
    tab.page.locator("#draw").wait_for()
    reached = tab_through(tab, "Download model (.npz)")
    for control in ("predict-files", "eval-dataset", "Evaluate"):
        assert control in reached, reached
    assert reached[-1] == "Download model (.npz)", reached
    # The file picker opens from the keyboard too (the locator's press focuses the input it
    # finds at that moment: a separate focus() then a key could land elsewhere under load).
    with tab.page.expect_file_chooser() as chooser:
        tab.page.locator("#predict-files").press("Space")
    assert chooser.value.is_multiple()
    tab.assert_clean()
