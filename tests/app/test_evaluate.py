"""POST /models/{id}/evaluate (scores and heat map) and GET /models/{id}/download?format=onnx."""

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.plotting import confusion_matrix_png
from cnn_core import Network
from cnn_core.evaluation import EXAMPLES_PER_CELL
from tests.support.builders import holdout, npz_bytes

X, Y = holdout()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def client(trained: tuple[TestClient, dict]) -> TestClient:
    return trained[0]


@pytest.fixture
def model(trained: tuple[TestClient, dict]) -> dict:
    return trained[1]


@pytest.fixture
def net(client: TestClient, model: dict, tmp_path) -> Network:
    """The model as the library loads it from its download: the oracle for the service."""
    path = tmp_path / "model.npz"
    path.write_bytes(client.get(f"/models/{model['id']}/download").content)
    return Network.load(path)


def upload(client: TestClient, **arrays: object) -> str:
    response = client.post("/datasets", files={"files": ("d.npz", npz_bytes(**arrays))})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def evaluate(client: TestClient, model: dict, dataset_id: str, **params: str):
    return client.post(
        f"/models/{model['id']}/evaluate", json={"dataset_id": dataset_id}, params=params
    )


def test_evaluate_answers_the_library_scores(client: TestClient, model: dict, net: Network):
    dataset_id = upload(client, X=X[300:], y=Y[300:])  # 200 digits the model never saw
    response = evaluate(client, model, dataset_id)
    assert response.status_code == 200, response.text
    out = response.json()
    expected = net.evaluate(X[300:, None].astype(np.float32) / 255, Y[300:])
    assert out["model_id"] == model["id"] and out["dataset_id"] == dataset_id
    assert out["n_samples"] == 200 and out["classes"] == model["classes"]
    assert out["confusion_matrix"] == expected.confusion_matrix.tolist()
    assert out["accuracy"] == pytest.approx(expected.accuracy)
    assert out["cost"] == pytest.approx(expected.cost, rel=1e-5)
    assert [c["class_name"] for c in out["per_class"]] == model["classes"]
    assert [c["support"] for c in out["per_class"]] == np.bincount(Y[300:], minlength=10).tolist()
    assert [c["f1"] for c in out["per_class"]] == pytest.approx(expected.f1.tolist())
    pairs = out["most_confused"]
    assert [p["count"] for p in pairs] == sorted((p["count"] for p in pairs), reverse=True)
    predicted = net.predict(X[300:, None].astype(np.float32) / 255)
    for cell in out["misclassified"]:
        t, p = cell["true"], cell["predicted"]
        in_cell = np.flatnonzero((Y[300:] == t) & (predicted == p))
        assert cell["indices"] == in_cell[:EXAMPLES_PER_CELL].tolist()


def test_a_subset_of_classes_in_another_order_is_matched_by_name(
    client: TestClient, model: dict, net: Network
):
    keep = np.flatnonzero((Y == 3) | (Y == 7))[:60]
    relabelled = (Y[keep] == 3).astype(np.int64)  # label 0 is "7", label 1 is "3"
    dataset_id = upload(client, X=X[keep], y=relabelled, class_names=np.array(["7", "3"]))
    out = evaluate(client, model, dataset_id).json()
    expected = net.evaluate(X[keep, None].astype(np.float32) / 255, Y[keep])
    assert out["confusion_matrix"] == expected.confusion_matrix.tolist()
    support = {c["class_name"]: c["support"] for c in out["per_class"]}
    assert support["3"] == np.count_nonzero(Y[keep] == 3) and support["0"] == 0


def test_data_scaled_0_to_255_is_rescaled_to_the_model(client: TestClient, model: dict):
    as_bytes = upload(client, X=X[:100], y=Y[:100])
    as_floats = upload(client, X=X[:100].astype(np.float32), y=Y[:100])  # floats in 0..255
    one, other = evaluate(client, model, as_bytes).json(), evaluate(client, model, as_floats).json()
    assert one["confusion_matrix"] == other["confusion_matrix"]
    assert one["accuracy"] > 0.5  # the model did learn: equal scores are not both chance


def test_unknown_model_and_dataset_are_404(client: TestClient, model: dict):
    missing = client.post("/models/" + "0" * 32 + "/evaluate", json={"dataset_id": "mnist-sample"})
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"No model '{'0' * 32}': GET /models lists them"
    for dataset_id in ("0" * 32, "../etc/passwd"):
        response = evaluate(client, model, dataset_id)
        assert response.status_code == 404
        assert response.json()["detail"].startswith(f"No dataset {dataset_id!r}")


def test_a_dataset_of_another_shape_is_refused_with_the_shapes(client: TestClient, model: dict):
    small = np.zeros((20, 8, 8), np.uint8)
    response = evaluate(client, model, upload(client, X=small, y=np.arange(20) % 2))
    assert response.status_code == 422
    assert "[1, 8, 8]" in response.json()["detail"] and "[1, 28, 28]" in response.json()["detail"]


def test_classes_the_model_does_not_know_are_refused(client: TestClient, model: dict):
    names = np.array(["cat", "dog"])
    dataset_id = upload(client, X=X[:20], y=Y[:20] % 2, class_names=names)
    response = evaluate(client, model, dataset_id)
    assert response.status_code == 422
    assert "'cat'" in response.json()["detail"] and "model's classes" in response.json()["detail"]


def test_a_body_without_a_dataset_id_is_422(client: TestClient, model: dict):
    response = client.post(f"/models/{model['id']}/evaluate", json={"dataset": "mnist-sample"})
    assert response.status_code == 422


def test_evaluate_as_png_is_a_heat_map(client: TestClient, model: dict):
    response = evaluate(client, model, "mnist-sample", format="png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and min(image.size) >= 400
    assert evaluate(client, model, "mnist-sample", format="gif").status_code == 422


@pytest.mark.parametrize("k", [2, 30])  # counts drawn in the cells, and names only
def test_heat_map_draws_user_strings_as_plain_text(k):
    # as mathtext these raise ValueError (unbalanced \\frac{, \\sqrt{ between two dollars)
    names = [f"${i}\\frac{{$" if i % 2 else f"a_{i}^$\\sqrt{{x$" for i in range(k)]
    matrix = np.random.default_rng(0).integers(0, 50, (k, k)).tolist()
    png = confusion_matrix_png(matrix, names, "model $\\frac{$ on data")
    assert png.startswith(PNG_SIGNATURE)


def test_onnx_download_runs_in_onnxruntime_like_predict(client: TestClient, model: dict):
    ort = pytest.importorskip("onnxruntime")
    response = client.get(f"/models/{model['id']}/download", params={"format": "onnx"})
    assert response.status_code == 200
    assert response.headers["content-disposition"].endswith(f'model-{model["id"]}.onnx"')
    session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    batch = X[400:410, None].astype(np.float32) / 255
    (probabilities,) = session.run(None, {"input": batch})
    served = client.post(
        f"/models/{model['id']}/predict", params={"top_k": 10}, json={"instances": batch.tolist()}
    ).json()["predictions"]
    for row, prediction in zip(probabilities, served, strict=True):
        by_label = {s["label"]: s["probability"] for s in prediction["top_k"]}
        assert np.abs(row - [by_label[i] for i in range(10)]).max() <= 1e-5
    meta = {
        p.key: p.value
        for p in pytest.importorskip("onnx").load_from_string(response.content).metadata_props
    }
    assert '"image_scale"' in meta["preprocessing"] and meta["classes"].startswith('["0"')


def test_download_format_is_checked(client: TestClient, model: dict):
    response = client.get(f"/models/{model['id']}/download", params={"format": "pt"})
    assert response.status_code == 422
    default = client.get(f"/models/{model['id']}/download")
    assert default.content.startswith(b"PK")  # the npz, as before
