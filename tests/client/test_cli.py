"""The `cnn` command against a live server: output streams, --json, and every exit code."""

import csv
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from benchmarks.live_server import free_port
from cnn_client import Client
from cnn_client.cli import IMAGES_PER_REQUEST, app, show_progress_bar
from cnn_client.models import CostHistory, CostsEvent, EndEvent, Job, ProgressEvent
from cnn_core import Network
from tests.client.conftest import Cnn, write_architecture
from tests.support.builders import (
    TINY_ARCHITECTURE,
    digits_npz,
    holdout,
    idx_bytes,
    image_zip_bytes,
    png_bytes,
)
from tests.support.server import REPO, LiveServer

DIVERGING = {  # linear layers trained with SGD at learning rate 10: the cost becomes NaN
    "input_shape": [1, 28, 28],
    "layers": [
        {"type": "dense", "units": 64, "activation": "linear"},
        {"type": "dense", "units": 10},
    ],
}


def json_lines(text: str) -> list[dict]:
    """Every line of `text` parsed as one JSON object."""
    lines = text.splitlines()
    assert lines, "no output"
    return [json.loads(line) for line in lines]


def one_line_error(stderr: str) -> str:
    """The message of a failed command: one line, no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# -- datasets: each upload format ----------------------------------------------------------------


def class_folders(root: Path) -> Path:
    """A folder of class folders of PNG digits, as a user keeps images on disk."""
    X, y = holdout()
    for label in (1, 4):
        folder = root / "digits" / str(label)
        folder.mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(y == label)[:5]):
            (folder / f"{i}.png").write_bytes(png_bytes(X[index]))
    return root / "digits"


@pytest.mark.parametrize("kind", ["npz", "idx", "zip", "folder"])
def test_datasets_upload_each_format_then_show_and_delete(
    cnn: Cnn, tmp_path: Path, kind: str
) -> None:
    X, y = holdout()
    if kind == "npz":
        paths, expected = [tmp_path / "digits.npz"], 300
        paths[0].write_bytes(digits_npz(300))
    elif kind == "idx":
        paths, expected = [tmp_path / "images.idx3.gz", tmp_path / "labels.idx1"], 40
        paths[0].write_bytes(gzip.compress(idx_bytes(X[:40])))
        paths[1].write_bytes(idx_bytes(y[:40]))
    elif kind == "zip":
        paths, expected = [tmp_path / "digits.zip"], 8
        paths[0].write_bytes(image_zip_bytes(per_class=4))
    else:
        paths, expected = [class_folders(tmp_path)], 10

    uploaded = cnn("datasets", "upload", *map(str, paths), "--name", f"upload {kind}")
    assert uploaded.exit_code == 0, uploaded.stderr
    dataset_id = uploaded.stdout.strip()
    assert f"uploaded {expected} samples" in uploaded.stderr

    shown = cnn("datasets", "show", dataset_id, "--json")
    assert shown.exit_code == 0
    [dataset] = json_lines(shown.stdout)
    assert dataset["id"] == dataset_id and dataset["name"] == f"upload {kind}"
    assert dataset["n_samples"] == expected and dataset["input_shape"][1:] == [28, 28]
    listed = json_lines(cnn("datasets", "list", "--json").stdout)[0]
    assert dataset_id in [d["id"] for d in listed["datasets"]]

    assert cnn("datasets", "delete", dataset_id).exit_code == 0
    gone = cnn("datasets", "show", dataset_id)
    assert gone.exit_code == 4 and gone.stdout == ""
    assert (
        one_line_error(gone.stderr)
        == f"error: 404: No dataset '{dataset_id}': GET /datasets lists them"
    )


# -- train and follow: exit codes 0, 1, 3 --------------------------------------------------------


def test_train_follow_prints_one_line_per_epoch_and_exits_0(
    cnn: Cnn, digits_id: str, tmp_path: Path
) -> None:
    config = write_architecture(tmp_path, TINY_ARCHITECTURE)
    result = cnn(
        "train", "--dataset", digits_id, "--architecture", str(config), "--epochs", "3",
        "--batch-size", "32", "--optimizer", "adam", "--learning-rate", "0.01", "--name", "tiny",
        "--follow",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    job_id = result.stdout.strip()  # the job id is the only data on stdout
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    assert f"job {job_id} succeeded: model " in result.stderr.splitlines()[-1]
    shown = json_lines(cnn("jobs", "show", job_id, "--json").stdout)[0]
    assert shown["name"] == "tiny" and shown["training"]["batch_size"] == 32
    optimizer = shown["training"]["optimizer"]
    assert optimizer["name"] == "adam" and optimizer["learning_rate"] == 0.01


def test_train_follow_json_is_one_object_per_line(cnn: Cnn, digits_id: str, tmp_path: Path) -> None:
    config = write_architecture(tmp_path, TINY_ARCHITECTURE)
    result = cnn(
        "train", "--dataset", digits_id, "--architecture", str(config), "--epochs", "2",
        "--follow", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    job, *events = json_lines(result.stdout)
    assert job["status"] == "queued" and "event" not in job
    assert {e["event"] for e in events} <= {"costs", "progress", "end"}
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "succeeded"
    costs = [e["data"] for e in events if e["event"] == "costs"]
    total = events[-1]["data"]["progress"]["total_iterations"]
    assert [p["iteration"] for c in costs for p in c["iterations"]] == list(range(1, total + 1))
    assert [summary["epoch"] for c in costs for summary in c["epochs"]] == [1, 2]


def test_a_failed_job_exits_1_with_its_error(cnn: Cnn, digits_id: str, tmp_path: Path) -> None:
    config = write_architecture(tmp_path, DIVERGING)
    result = cnn(
        "train", "--dataset", digits_id, "--architecture", str(config), "--epochs", "3",
        "--optimizer", "sgd", "--learning-rate", "10", "--wait",
    )  # fmt: skip
    assert result.exit_code == 1, result.stderr
    assert f"job {result.stdout.strip()} failed: cost became" in result.stderr


def test_a_cancelled_job_exits_3(cnn: Cnn, client: Client) -> None:
    job = client.submit_job("mnist-sample", "lenet5", {"epochs": 50, "batch_size": 8})
    cancelled = cnn("jobs", "cancel", job.id, "--json")
    assert cancelled.exit_code == 0
    assert json_lines(cancelled.stdout)[0]["status"] == "cancelled"
    waited = cnn("jobs", "wait", job.id)
    assert waited.exit_code == 3 and f"job {job.id} cancelled" in waited.stderr
    followed = cnn("jobs", "follow", job.id, "--json")
    assert followed.exit_code == 3
    assert json_lines(followed.stdout)[-1]["event"] == "end"


def test_wait_timeout_exits_124_and_leaves_the_job_running(cnn: Cnn, client: Client) -> None:
    job = client.submit_job("mnist-sample", "lenet5", {"epochs": 50, "batch_size": 8})
    try:
        started = time.monotonic()
        result = cnn("jobs", "wait", job.id, "--timeout", "1")
        assert result.exit_code == 124, result.stderr
        assert 1 <= time.monotonic() - started < 10
        assert f". Wait again with: cnn jobs wait {job.id}" in result.stderr
        assert client.get_job(job.id).status.is_active
    finally:
        client.cancel_job(job.id)


def test_ctrl_c_while_following_detaches_exits_130_and_the_job_keeps_running(
    server: LiveServer, client: Client
) -> None:
    job = client.submit_job("mnist-sample", "lenet5", {"epochs": 50, "batch_size": 8})
    env = {**os.environ, "PYTHONPATH": str(REPO), "CNN_URL": server.url}
    follower = subprocess.Popen(
        [sys.executable, "-m", "cnn_client", "jobs", "follow", job.id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # "job ... queued" or "running", or an epoch the job finished before the follower
        # connected (the stream replays it first): either way it is following.
        first = follower.stderr.readline()
        assert first.startswith((f"job {job.id} ", "epoch ")), first
        follower.send_signal(signal.SIGINT)
        _, stderr = follower.communicate(timeout=20)
        assert follower.returncode == 130
        assert f"Follow it again with: cnn jobs follow {job.id}" in stderr
        assert "Traceback" not in stderr
        assert client.get_job(job.id).status.is_active
    finally:
        follower.kill()
        client.cancel_job(job.id)


# -- exit codes 2 and 4 --------------------------------------------------------------------------


def test_usage_errors_exit_2(cnn: Cnn, tmp_path: Path) -> None:
    assert cnn("train").exit_code == 2  # --dataset is required
    assert cnn("jobs", "frobnicate").exit_code == 2
    assert cnn("predict", "some-model", str(tmp_path / "missing.png")).exit_code == 2
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = cnn("train", "--dataset", "mnist-sample", "--architecture", str(broken))
    assert result.exit_code == 2 and "not valid JSON" in one_line_error(result.stderr)
    result = cnn("models", "download", "some-model", "--format", "pt")
    assert result.exit_code == 2 and "npz or onnx" in result.stderr


def test_http_errors_exit_4_with_the_servers_message(cnn: Cnn) -> None:
    result = cnn("jobs", "show", "0" * 32)
    assert result.exit_code == 4 and result.stdout == ""
    assert one_line_error(result.stderr) == f"error: 404: No job '{'0' * 32}': GET /jobs lists them"
    invalid = cnn("train", "--dataset", "mnist-sample", "--architecture", "no-such-preset")
    message = one_line_error(invalid.stderr)
    assert invalid.exit_code == 4 and message.startswith("error: 422: ") and "lenet5" in message


def test_the_key_comes_from_cnn_api_key_and_url_overrides_cnn_url(tmp_path: Path) -> None:
    keyed = LiveServer(
        tmp_path / "data", tmp_path / "server.log", inherit_settings=False, CNN_API_KEY="cli-key"
    )
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        keyed.start()

        def run(*args: str, **env: str) -> Result:
            env = {"CNN_URL": dead, "CNN_API_KEY": "", **env}
            return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)

        refused = run("--url", keyed.url, "datasets", "list")
        assert refused.exit_code == 4 and one_line_error(refused.stderr).startswith("error: 401: ")
        wrong = run("--url", keyed.url, "datasets", "list", CNN_API_KEY="not-the-key")
        assert wrong.exit_code == 4
        listed = run("--url", keyed.url, "datasets", "list", "--json", CNN_API_KEY="cli-key")
        assert listed.exit_code == 0, listed.stderr
        assert "mnist-sample" in [d["id"] for d in json_lines(listed.stdout)[0]["datasets"]]
        health = run("health", "--json", CNN_URL=keyed.url, CNN_API_KEY="cli-key")
        assert health.exit_code == 0 and json_lines(health.stdout)[0]["status"] == "ok"
    finally:
        keyed.kill_group()


def test_train_uploads_a_path_first_and_models_delete(cnn: Cnn, tmp_path: Path) -> None:
    path = tmp_path / "digits.npz"
    path.write_bytes(digits_npz(300))
    config = write_architecture(tmp_path, TINY_ARCHITECTURE)
    result = cnn(
        "train", "--dataset", str(path), "--architecture", str(config), "--epochs", "1",
        "--seed", "7", "--wait", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    submitted, final = json_lines(result.stdout)  # the job as queued, then as it ended
    assert f"uploaded {path} as dataset {submitted['dataset_id']}" in result.stderr
    assert submitted["training"]["seed"] == 7 and submitted["training"]["epochs"] == 1
    assert final["id"] == submitted["id"] and final["status"] == "succeeded"
    dataset = json_lines(cnn("datasets", "show", submitted["dataset_id"], "--json").stdout)[0]
    assert dataset["n_samples"] == 300

    deleted = cnn("models", "delete", final["model_id"], "--json")
    assert deleted.exit_code == 0 and json_lines(deleted.stdout) == [{"deleted": final["model_id"]}]
    assert cnn("models", "show", final["model_id"]).exit_code == 4


def test_every_command_takes_json() -> None:
    def leaves(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        """Every command that runs (not a group), by its full name."""
        if hasattr(command, "commands"):  # typer's own (vendored) click Group
            for name, sub in command.commands.items():
                yield from leaves(sub, f"{path} {name}")
        else:
            yield path, command

    commands = dict(leaves(typer.main.get_command(app), "cnn"))
    assert {"cnn train", "cnn predict", "cnn jobs follow", "cnn models download"} <= set(commands)
    without = [p for p, c in commands.items() if not any("--json" in o.opts for o in c.params)]
    assert without == []


def test_an_unreachable_server_exits_4(cnn: Cnn) -> None:
    result = cnn("datasets", "list", url=f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 4
    assert "cannot reach" in one_line_error(result.stderr)


# -- jobs, models, predict -----------------------------------------------------------------------


def test_jobs_list_and_costs_as_json_csv_and_png(
    cnn: Cnn, client: Client, model_id: str, tmp_path: Path
) -> None:
    job_id = client.get_model(model_id).job_id
    listed = json_lines(cnn("jobs", "list", "--status", "succeeded", "--json").stdout)[0]
    assert job_id in [j["id"] for j in listed["jobs"]]
    assert {j["status"] for j in listed["jobs"]} == {"succeeded"}
    table = cnn("jobs", "list")
    assert table.exit_code == 0 and job_id in table.stdout

    costs = json_lines(cnn("jobs", "costs", job_id, "--json").stdout)[0]
    rows = list(csv.reader(io.StringIO(cnn("jobs", "costs", job_id, "--csv").stdout)))
    assert rows[0] == ["epoch", "iteration", "cost"]
    assert [int(r[1]) for r in rows[1:]] == [p["iteration"] for p in costs["iterations"]]
    plot = tmp_path / "costs.png"
    result = cnn("jobs", "costs", job_id, "--png", str(plot))
    assert result.exit_code == 0 and plot.read_bytes().startswith(b"\x89PNG")
    assert len(result.stdout.splitlines()) == 1 + len(costs["epochs"])  # header + one per epoch


def test_models_list_show_and_download_a_file_that_loads(
    cnn: Cnn, model_id: str, tmp_path: Path
) -> None:
    listed = json_lines(cnn("models", "list", "--json").stdout)[0]
    assert model_id in [m["id"] for m in listed["models"]]
    shown = json_lines(cnn("models", "show", model_id, "--json").stdout)[0]
    assert shown["input_shape"] == [1, 28, 28] and len(shown["classes"]) == 10
    target = tmp_path / "tiny.npz"
    result = cnn("models", "download", model_id, "-o", str(target))
    assert result.exit_code == 0 and result.stdout.strip() == str(target)
    net = Network.load(target)
    assert sum(p.size for name, p in net.params.items()) == shown["param_count"]
    assert not list(tmp_path.glob("*.part"))
    unwritable = cnn("models", "download", model_id, "-o", str(tmp_path / "missing" / "m.npz"))
    assert unwritable.exit_code == 2 and "No such file or directory" in unwritable.stderr


def test_predict_a_folder(cnn: Cnn, model_id: str, tmp_path: Path) -> None:
    X, y = holdout()
    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    count = IMAGES_PER_REQUEST + 3  # two requests
    for i in range(count):
        (folder / f"{i:02d}.png").write_bytes(png_bytes(X[100 + i]))
    (folder / "more" / "extra.png").write_bytes(png_bytes(X[99]))
    (folder / "notes.txt").write_text("not an image")

    result = cnn("predict", model_id, str(folder), "--top-k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    [answer] = json_lines(result.stdout)
    predictions = answer["predictions"]
    assert [Path(p["filename"]).name for p in predictions] == [f"{i:02d}.png" for i in range(count)]
    assert all(len(p["top_k"]) == 2 and 0 <= p["probability"] <= 1 for p in predictions)
    correct = sum(p["label"] == y[100 + i] for i, p in enumerate(predictions))
    assert correct >= count // 2  # a model trained for two epochs on 300 digits

    recursive = cnn("predict", model_id, str(folder), "--recursive", "--json")
    assert len(json_lines(recursive.stdout)[0]["predictions"]) == count + 1
    table = cnn("predict", model_id, str(folder / "00.png"))
    assert table.exit_code == 0 and str(folder / "00.png") in table.stdout


def test_a_terminal_gets_a_live_progress_bar(cnn: Cnn, digits_id: str, tmp_path: Path) -> None:
    config = write_architecture(tmp_path, TINY_ARCHITECTURE)
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120"}
    result = cnn(
        "train", "--dataset", digits_id, "--architecture", str(config), "--epochs", "2",
        "--batch-size", "8", "--follow", **terminal,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "\x1b[" in result.stderr and "━" in result.stderr  # redrawn in place
    assert "running epoch " in result.stderr and "iteration " in result.stderr
    assert "epoch 1/2  cost " in result.stderr and "epoch 2/2  cost " in result.stderr
    assert result.stdout.strip().isalnum()  # stdout still holds the job id alone


def test_the_progress_bar_shows_epoch_iteration_cost_accuracy_and_eta(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "160")

    def job(status: str, epoch: int, iteration: int, eta: float | None) -> Job:
        progress = {"epoch": epoch, "epochs": 2, "iteration": iteration, "eta_seconds": eta}
        return Job.model_validate(
            {
                "id": "j1", "name": None, "status": status, "dataset_id": "d1",
                "architecture": {}, "training": {}, "created_at": "2026-12-01T20:00:00Z",
                "started_at": None, "finished_at": None, "queue_position": None,
                "progress": {**progress, "iterations_per_epoch": 4, "total_iterations": 8,
                             "fraction": iteration / 8},
                "metrics": None, "error": None, "model_id": None,
            }
        )  # fmt: skip

    epoch = {"epoch": 1, "cost": 0.6, "train_accuracy": 0.7, "val_cost": 0.55,
             "val_accuracy": 0.75, "seconds": 1.5}  # fmt: skip
    costs = CostHistory.model_validate(
        {"status": "running", "iterations": [{"epoch": 2, "iteration": 5, "cost": 0.5}],
         "epochs": [epoch], "last_iteration": 5}
    )  # fmt: skip
    events = [
        ProgressEvent(data=job("running", 1, 2, 12.0)),
        CostsEvent(id=5, data=costs),
        ProgressEvent(data=job("running", 2, 6, 7.4)),
        EndEvent(data=job("succeeded", 2, 8, None)),
    ]
    final = show_progress_bar(iter(events), 2)
    assert final is not None and final.status == "succeeded"
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capsys.readouterr().err)
    assert "epoch 1/2  cost 0.6000  accuracy 0.7000  val_cost 0.5500" in drawn
    assert re.search(
        r"running epoch 2/2 .* iteration 6/8  cost 0\.5000  accuracy 0\.7500  eta 7 s", drawn
    ), drawn


# -- what DESIGN.md announces and the server may not serve yet -----------------------------------


def test_train_the_convnet_preset(cnn: Cnn, spec: dict, digits_id: str) -> None:
    presets = spec["components"]["schemas"].get("PresetName", {}).get("enum", [])
    if "convnet" not in presets:
        pytest.skip(f"this server's presets are {presets}: no convnet yet")
    result = cnn(
        "train", "--dataset", digits_id, "--architecture", "convnet", "--epochs", "1", "--wait"
    )
    assert result.exit_code == 0, result.stderr


def test_evaluate_prints_accuracy_and_a_confusion_matrix(
    cnn: Cnn, spec: dict, model_id: str, digits_id: str
) -> None:
    if "/models/{model_id}/evaluate" not in spec["paths"]:
        pytest.skip("POST /models/{model_id}/evaluate is not on this server yet")
    result = cnn("evaluate", model_id, "--dataset", digits_id, "--json")
    assert result.exit_code == 0, result.stderr
    [report] = json_lines(result.stdout)
    assert report["n_samples"] == 300 and 0 <= report["accuracy"] <= 1
    assert sum(map(sum, report["confusion_matrix"])) == 300
    table = cnn("evaluate", model_id, "--dataset", digits_id)
    assert table.exit_code == 0 and "precision" in table.stdout and "accuracy" in table.stderr


def test_download_as_onnx(cnn: Cnn, spec: dict, model_id: str, tmp_path: Path) -> None:
    parameters = spec["paths"]["/models/{model_id}/download"]["get"].get("parameters", [])
    if "format" not in {p["name"] for p in parameters}:
        pytest.skip("GET /models/{model_id}/download?format=onnx is not served yet")
    target = tmp_path / "tiny.onnx"
    result = cnn("models", "download", model_id, "--format", "onnx", "-o", str(target))
    assert result.exit_code == 0, result.stderr
    import onnx  # the server exports with it, so it is installed where the endpoint exists

    onnx.checker.check_model(onnx.load(target), full_check=True)
