"""Errors that say what to do: one 422 shape, "did you mean", one message for a wrong-shaped
instance, architectures in every form, 404s that echo the id, and the jobs' log lines."""

import logging
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from app import schemas
from app.validation import closest, walk
from tests.support.builders import DIVERGING_ARCHITECTURE, TINY_ARCHITECTURE, digits_npz, holdout
from tests.support.server import submit, wait_for_job

# A small LeNet in the seed notebook's parallel lists (the schema's example), input left out.
SEED_LISTS = {
    key: value
    for key, value in schemas.SeedArchitecture.model_config["json_schema_extra"]["examples"][
        0
    ].items()
    if key != "input_shape"
}


def job_body(**changes: object) -> dict:
    return {"dataset_id": "mnist-sample", "architecture": "lenet5", **changes}


def assert_invalid_input(response) -> dict:
    """The one 422 shape: a sentence, then the problems each with loc, msg and type."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"detail", "errors"}
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["errors"] and all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    return body


# ----------------------------------------------------------------------- suggestions


@pytest.mark.parametrize(
    ("word", "candidates", "meant"),
    [
        ("lr", ["name", "learning_rate", "beta1"], "learning_rate"),  # initials
        ("bs", ["epochs", "batch_size"], "batch_size"),
        ("dataset", ["dataset_id", "architecture"], "dataset_id"),  # prefix
        ("lenet", ["lenet5", "convnet"], "lenet5"),
        ("optimiser", ["optimizer", "epochs"], "optimizer"),  # spelling
        ("colour", ["epochs", "batch_size"], None),  # nothing close: no guess
    ],
)
def test_closest_finds_what_was_meant(word: str, candidates: list[str], meant: str | None) -> None:
    assert closest(word, candidates) == meant


def test_walk_drops_union_labels_and_finds_the_model() -> None:
    loc = ("architecture", "config", "layers", 0, "conv", "filter")
    path, parent = walk(schemas.JobCreate, loc)
    assert path == ["architecture", "layers", 0, "filter"]
    assert parent is not None and "filters" in parent.model_fields


def test_every_request_model_refuses_unknown_fields() -> None:
    models = [
        *schemas.LAYER_SCHEMAS,
        *schemas.OPTIMIZER_SCHEMAS.values(),
        *schemas.SCHEDULE_SCHEMAS,
        *(m for m in vars(schemas).values() if isinstance(m, type) and issubclass(m, schemas.Body)),
    ]
    assert len(models) > 20
    for model in models:
        assert issubclass(model, BaseModel) and model.model_config.get("extra") == "forbid", model


@pytest.mark.parametrize(
    ("body", "loc", "sentence"),
    [
        (
            {"dataset": "mnist-sample", "architecture": "lenet5"},
            ["body", "dataset"],
            "Unknown field dataset: did you mean dataset_id?",
        ),
        (
            job_body(training={"optimizer": {"name": "adam", "lr": 0.01}}),
            ["body", "training", "optimizer", "lr"],
            "did you mean training.optimizer.learning_rate?",
        ),
        (  # a level too high: the field is found one level down
            job_body(training={"lr": 0.01}),
            ["body", "training", "lr"],
            "did you mean training.optimizer.learning_rate?",
        ),
        (
            job_body(architecture="lenet"),
            ["body", "architecture"],
            "architecture is 'lenet', not one of lenet5, convnet: did you mean 'lenet5'?",
        ),
        (
            job_body(training={"optimizer": {"name": "adamm"}}),
            ["body", "training", "optimizer"],
            "training.optimizer.name is 'adamm'",
        ),
        (
            job_body(architecture={"layers": [{"type": "convv", "filters": 2, "kernel_size": 3}]}),
            ["body", "architecture", "layers", 0],
            "did you mean 'conv'?",
        ),
    ],
)
def test_a_wrong_name_gets_did_you_mean(
    client: TestClient, body: dict, loc: list, sentence: str
) -> None:
    found = assert_invalid_input(client.post("/jobs", json=body))
    assert sentence in found["detail"]
    assert loc in [e["loc"] for e in found["errors"]]
    assert "did you mean" in next(e["msg"] for e in found["errors"] if e["loc"] == loc)
    assert client.get("/jobs").json()["count"] == 0


def test_a_query_value_gets_did_you_mean(client: TestClient) -> None:
    found = assert_invalid_input(client.get("/jobs", params={"status": "runing"}))
    assert found["detail"].startswith("query parameter status is 'runing'")
    assert found["detail"].endswith("did you mean 'running'?")
    assert found["errors"][0]["loc"] == ["query", "status"]


def test_a_layer_field_mistake_is_located_without_union_labels(client: TestClient) -> None:
    layer = {"type": "conv", "filter": 4, "kernel_size": 3}
    architecture = {"input_shape": [1, 28, 28], "layers": [layer, {"type": "dense", "units": 10}]}
    found = assert_invalid_input(client.post("/jobs", json=job_body(architecture=architecture)))
    assert found["detail"].startswith(
        "Unknown field architecture.layers[0].filter: did you mean architecture.layers[0].filters?"
    )
    assert "(1 more problem in errors)" in found["detail"]  # `filters` is missing too
    locs = [e["loc"] for e in found["errors"]]
    assert ["body", "architecture", "layers", 0, "filters"] in locs
    assert all("config" not in loc and "conv" not in loc for loc in locs)


def test_a_missing_field_says_what_it_is(client: TestClient) -> None:
    found = assert_invalid_input(client.post("/jobs", json={"architecture": "lenet5"}))
    assert found["detail"].startswith("Missing field dataset_id (A dataset id from GET /datasets)")


def test_many_problems_are_capped_after_the_sentence(client: TestClient) -> None:
    layers = [{"type": "conv", "filterz": 1} for _ in range(30)]
    body = job_body(architecture={"input_shape": [1, 8, 8], "layers": layers})
    found = assert_invalid_input(client.post("/jobs", json=body))
    assert len(found["errors"]) == 11 and found["errors"][-1]["type"] == "too_many_errors"
    assert "more problems in errors" in found["detail"]


def test_a_huge_unknown_key_is_not_echoed_in_full(client: TestClient) -> None:
    body = job_body(**{"x" * 100_000: 1})
    response = client.post("/jobs", json=body)
    found = assert_invalid_input(response)
    assert len(response.content) < 2000 and found["detail"].startswith("Unknown field xxx")


# ----------------------------------------------------------------------- core errors, located


def test_a_config_error_is_the_same_shape_located_at_its_layer(client: TestClient) -> None:
    config = {
        "input_shape": [1, 8, 8],
        "layers": [
            {"type": "conv", "filters": 2, "kernel_size": 5},
            {"type": "conv", "filters": 2, "kernel_size": 5},
            {"type": "dense", "units": 10},
        ],
    }
    found = assert_invalid_input(
        client.post("/architectures/validate", json={"architecture": config})
    )
    assert found["detail"].startswith("layer 1 (conv)")
    assert found["errors"] == [
        {
            "loc": ["body", "architecture", "layers", 1],
            "msg": found["detail"],
            "type": "config_error",
        }
    ]


def test_admission_errors_are_located_at_their_field(client: TestClient) -> None:
    wrong_classes = {
        **TINY_ARCHITECTURE,
        "layers": [*TINY_ARCHITECTURE["layers"][:-1], {"type": "dense", "units": 3}],
    }
    found = assert_invalid_input(client.post("/jobs", json=job_body(architecture=wrong_classes)))
    assert "give the last dense layer 10 units" in found["detail"]
    assert found["errors"][0]["loc"] == ["body", "architecture", "layers", 2]
    wrong_shape = {**TINY_ARCHITECTURE, "input_shape": [1, 32, 32]}
    found = assert_invalid_input(client.post("/jobs", json=job_body(architecture=wrong_shape)))
    assert found["errors"][0]["loc"] == ["body", "architecture", "input_shape"]
    assert "leave input_shape out" in found["detail"]


def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    response = client.post("/jobs", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["detail"]


# ------------------------------------------------------------- architectures in every form


def test_validate_takes_a_bare_config_and_seed_lists(client: TestClient) -> None:
    wrapped = client.post("/architectures/validate", json={"architecture": TINY_ARCHITECTURE})
    bare = client.post("/architectures/validate", json=TINY_ARCHITECTURE)
    assert wrapped.status_code == bare.status_code == 200
    assert bare.json() == wrapped.json()
    seed = {"input_shape": [1, 28, 28], **SEED_LISTS}
    for body in (seed, {"architecture": seed}):
        summary = client.post("/architectures/validate", json=body)
        assert summary.status_code == 200, summary.text
        assert [layer["type"] for layer in summary.json()["layers"]] == ["conv", "maxpool", "dense"]
    found = assert_invalid_input(client.post("/architectures/validate", json=SEED_LISTS))
    assert "input_shape" in found["detail"]  # no dataset to take it from here


def test_a_job_takes_its_input_shape_from_the_dataset(client: TestClient) -> None:
    layers = {"layers": TINY_ARCHITECTURE["layers"]}
    job = submit(client, "mnist-sample", layers, epochs=1)
    assert job["architecture"]["input_shape"] == [1, 28, 28]
    seeded = submit(client, "mnist-sample", SEED_LISTS, epochs=1)
    assert seeded["architecture"]["input_shape"] == [1, 28, 28]
    assert [layer["type"] for layer in seeded["architecture"]["layers"]] == [
        "conv",
        "maxpool",
        "dense",
    ]
    assert wait_for_job(client, seeded["id"])["status"] == "succeeded"


# ----------------------------------------------------------------------- predict instances


def test_an_instance_of_the_wrong_shape_is_one_short_message(trained) -> None:
    client, model = trained
    url = f"/models/{model['id']}/predict"
    flat = [0.5] * 784
    for instance, sent in (
        (flat, "shape [784] (the right 784 values: reshape them to [1, 28, 28])"),
        ([[[0.5] * 28] * 28] * 3, "shape [3, 28, 28]"),
        ([[[0.5] * 28] * 27 + [[0.5] * 5]], "nested lists of unequal lengths"),
    ):
        response = client.post(url, json={"instances": [[[[0.1] * 28] * 28], instance]})
        found = assert_invalid_input(response)
        assert len(response.content) < 1000
        assert found["detail"].startswith(f"instances[1] has {sent}")
        assert "the model takes (C, H, W) = [1, 28, 28]" in found["detail"]
        assert found["errors"] == [
            {"loc": ["body", "instances", 1], "msg": found["detail"], "type": "wrong_shape"}
        ]


def test_instances_are_checked_against_the_training_scale(trained) -> None:
    client, model = trained
    url = f"/models/{model['id']}/predict"
    X, _ = holdout()
    found = assert_invalid_input(client.post(url, json={"instances": [X[0][None].tolist()]}))
    assert (
        "trained on inputs in 0..1" in found["detail"]
        and "divide 8-bit pixels by 255" in found["detail"]
    )
    assert "send the image files instead" in found["detail"]
    assert (
        found["errors"][0]["loc"] == ["body", "instances"]
        and found["errors"][0]["type"] == "out_of_range"
    )
    overshoot = (X[0][None] / 255 * 1.01).tolist()  # a resampled image's ringing, not 0..255
    assert client.post(url, json={"instances": [overshoot]}).status_code == 200


def test_a_wrong_predict_field_gets_did_you_mean(trained) -> None:
    client, model = trained
    response = client.post(f"/models/{model['id']}/predict", json={"instance": [[[[0.0]]]]})
    assert assert_invalid_input(response)["detail"].startswith(
        "Unknown field instance: did you mean instances?"
    )


def test_a_null_among_the_numbers_is_located_not_called_a_shape(trained) -> None:
    client, model = trained
    instance = [[[0.5] * 28 for _ in range(28)]]
    instance[0][3][5] = None
    response = client.post(f"/models/{model['id']}/predict", json={"instances": [instance]})
    found = assert_invalid_input(response)
    assert found["detail"].startswith("instances[0][0][3][5]: input should be a valid number")
    assert found["errors"][0]["loc"] == ["body", "instances", 0, 0, 3, 5]


# ----------------------------------------------------------------------- not found


def test_not_found_echoes_the_id(client: TestClient) -> None:
    for kind in ("job", "model", "dataset"):
        response = client.get(f"/{kind}s/abc")
        assert response.status_code == 404
        assert response.json() == {"detail": f"No {kind} 'abc': GET /{kind}s lists them"}
    long = client.get("/models/" + "a" * 300).json()["detail"]
    assert len(long) < 120


def test_a_job_id_in_place_of_a_model_id_says_which_model(trained) -> None:
    client, model = trained
    response = client.post(f"/models/{model['job_id']}/predict", json={"instances": [[[[0.0]]]]})
    assert response.status_code == 404
    assert response.json()["detail"] == (
        f"'{model['job_id']}' is a job, not a model: it produced model '{model['id']}'"
    )
    back = client.get(f"/jobs/{model['id']}").json()["detail"]
    assert (
        back == f"'{model['id']}' is a model, not a job: it was trained by job '{model['job_id']}'"
    )


def test_a_job_without_a_model_says_so(client: TestClient) -> None:
    job = submit(client, "mnist-sample", "tiny", epochs=50)
    detail = client.get(f"/models/{job['id']}").json()["detail"]
    assert detail.startswith(f"'{job['id']}' is a job, not a model, and it has produced no model")
    client.post(f"/jobs/{job['id']}/cancel")
    wait_for_job(client, job["id"])
    assert client.get(f"/models/{job['id']}").json()["detail"].endswith("(status cancelled)")


# ----------------------------------------------------------------------- the log


def logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 10) -> list:
    """The records holding `text`, once there are any: the runner logs a run's end when it
    reaps the worker, shortly after the worker recorded the job's status."""
    deadline = time.monotonic() + timeout
    while not (found := [r for r in caplog.records if text in r.getMessage()]):
        assert time.monotonic() < deadline, f"no log line with {text!r}"
        time.sleep(0.05)
    return found


def test_the_log_records_each_jobs_start_and_end(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    dataset = client.post("/datasets", files={"files": ("d.npz", digits_npz())}).json()["id"]
    job = wait_for_job(client, submit(client, dataset, "tiny", epochs=1)["id"])
    assert job["status"] == "succeeded"
    (end,) = [r.getMessage() for r in logged(caplog, f"job {job['id']} ended: ")]
    assert any(r.getMessage() == f"job {job['id']} started" for r in caplog.records)
    prefix = f"job {job['id']} ended: succeeded after "
    assert end.startswith(prefix) and end.endswith(f" s, model {job['model_id']}")
    assert float(end[len(prefix) :].split(" ")[0]) > 0

    sgd = {"name": "sgd", "learning_rate": 10}
    diverging = submit(client, dataset, DIVERGING_ARCHITECTURE, optimizer=sgd, epochs=3)
    failed = wait_for_job(client, diverging["id"])
    assert failed["status"] == "failed"
    ends = logged(caplog, f"job {failed['id']} ended: failed after ")
    assert len(ends) == 1 and ends[0].getMessage().endswith(f": {failed['error']}")
    assert ends[0].levelno == logging.WARNING


def test_a_job_cancelled_while_it_trains_logs_cancelled(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Its worker is killed, which the executor reports as a death: the log says what happened."""
    caplog.set_level(logging.INFO, logger="app")
    job = submit(client, "mnist-sample", "tiny", epochs=50)
    deadline = time.monotonic() + 30
    while client.get(f"/jobs/{job['id']}").json()["status"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    client.post(f"/jobs/{job['id']}/cancel")
    assert wait_for_job(client, job["id"])["status"] == "cancelled"
    (end,) = logged(caplog, f"job {job['id']} ended: ")
    assert end.getMessage().startswith(f"job {job['id']} ended: cancelled after ")
    assert end.getMessage().endswith(" s") and end.levelno == logging.INFO
