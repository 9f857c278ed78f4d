"""POST /jobs with the issue-11 training settings: a learning-rate schedule, augmentation,
weight decay and adamw, the convnet preset; each epoch's learning rate in the job's metrics and
costs; wrong settings refused with a 422 that names them."""

import httpx
import pytest
from fastapi.testclient import TestClient

from cnn_core.augmentation import Augmentation
from cnn_core.specs import Hyper
from cnn_core.training import EarlyStopping
from tests.app.conftest import digits_npz, submit, wait_for_job

CONVNET_SMALL = {  # the convnet's layer types on a budget that trains in a second
    "input_shape": [1, 28, 28],
    "layers": [
        {"type": "conv", "filters": 4, "kernel_size": 3, "stride": 2},
        {"type": "batchnorm"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dropout", "rate": 0.25},
        {"type": "globalavgpool"},
        {"type": "dense", "units": 10},
    ],
}


@pytest.fixture
def dataset_id(client: TestClient) -> str:
    return client.post("/datasets", files={"files": ("d.npz", digits_npz(120))}).json()["id"]


def test_a_job_with_a_schedule_and_augmentation_records_each_epochs_rate(
    client: TestClient, dataset_id: str
) -> None:
    job = submit(
        client,
        dataset_id,
        CONVNET_SMALL,
        epochs=3,
        optimizer={"name": "adamw", "learning_rate": 0.01},
        lr_schedule={"name": "step", "step_size": 1, "gamma": 0.5},
        augmentation={"shift": 2, "rotate": 10},
    )
    assert job["training"]["lr_schedule"] == {"name": "step", "step_size": 1, "gamma": 0.5}
    assert job["training"]["augmentation"] == {"shift": 2, "rotate": 10.0, "flip": False}
    assert job["training"]["optimizer"]["weight_decay"] == 0.01
    job = wait_for_job(client, job["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["learning_rate"] == pytest.approx(0.0025)
    epochs = client.get(f"/jobs/{job['id']}/costs").json()["epochs"]
    assert [e["learning_rate"] for e in epochs] == pytest.approx([0.01, 0.005, 0.0025])
    model = client.get(f"/models/{job['model_id']}").json()
    assert [entry["type"] for entry in model["layers"]].count("batchnorm") == 1


def test_the_convnet_preset_is_offered_and_adapts(client: TestClient, dataset_id: str) -> None:
    job = submit(client, dataset_id, "convnet", epochs=1)
    layers = job["architecture"]["layers"]
    assert layers[0]["type"] == "conv" and layers[-1]["units"] == 10
    assert [layer["type"] for layer in layers].count("batchnorm") == 5
    assert layers[1] == {
        "type": "batchnorm",
        "momentum": 0.1,
        "epsilon": 1e-5,
        "activation": "relu",
    }
    assert layers[0]["init"] == "pytorch"
    client.post(f"/jobs/{job['id']}/cancel")


@pytest.mark.parametrize(
    "training, where",
    [
        ({"lr_schedule": {"name": "linear"}}, "lr_schedule"),
        ({"lr_schedule": {"name": "step", "gamma": 1.5}}, "gamma"),
        ({"lr_schedule": {"name": "cosine", "warmup_epochs": 1.5}}, "warmup_epochs"),
        ({"augmentation": {"shift": 100}}, "shift"),
        ({"augmentation": {"zoom": 2}}, "zoom"),
        ({"optimizer": {"name": "adam", "weight_decay": 2}}, "weight_decay"),
        ({"epochs": 2, "lr_schedule": {"name": "cosine", "warmup_epochs": 2}}, "warmup_epochs"),
    ],
)
def test_bad_settings_are_a_422_naming_them(
    client: TestClient, dataset_id: str, training: dict, where: str
) -> None:
    body = {"dataset_id": dataset_id, "architecture": "convnet", "training": training}
    response = client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    assert where in response.text


@pytest.mark.parametrize(
    "section, schema, declared",
    [
        ("augmentation", "Augmentation", Augmentation.settings),
        ("early_stopping", "EarlyStopping", EarlyStopping.settings),
    ],
)
def test_augmentation_and_early_stopping_bodies_are_the_librarys_declarations(
    client: TestClient, dataset_id: str, section: str, schema: str, declared: dict
) -> None:
    """Each default and bound the library declares is the schema's, and a value past a bound
    is a 422 naming the field; restore_best stays the library's (the service always restores)."""
    properties = client.get("/openapi.json").json()["components"]["schemas"][schema]["properties"]
    assert list(properties) == [key for key in declared if key != "restore_best"]
    required = {"patience": 2} if section == "early_stopping" else {}

    def post(settings: dict) -> httpx.Response:
        training = {section: {**required, **settings}}
        body = {"dataset_id": dataset_id, "architecture": "convnet", "training": training}
        return client.post("/jobs", json=body)

    for key, field in properties.items():
        assert field["default"] == declared[key].default
        if isinstance(declared[key], Hyper):
            hyper = declared[key]
            assert (field["minimum"], field["maximum"]) == (hyper.low, hyper.high)
            for outside in (hyper.low - 1, hyper.high + 1):
                response = post({key: outside})
                assert response.status_code == 422 and key in response.text, response.text
    if section == "early_stopping":
        response = post({"restore_best": False})
        assert response.status_code == 422 and "restore_best" in response.text, response.text
