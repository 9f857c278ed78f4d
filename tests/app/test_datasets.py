"""POST/GET/DELETE /datasets."""

import gzip
import io
import zipfile

import numpy as np
from fastapi.testclient import TestClient

from cnn_core.files import atomic_write
from tests.support.builders import (
    digits_npz,
    holdout,
    idx_bytes,
    image_zip_bytes,
    npz_bytes,
    png_bytes,
)
from tests.support.server import model_params, submit, wait_for_job


def test_builtin_sample_is_listed_and_described(client: TestClient) -> None:
    listing = client.get("/datasets").json()
    assert listing["count"] == 1 and listing["datasets"][0]["id"] == "mnist-sample"
    sample = client.get("/datasets/mnist-sample").json()
    assert sample["n_samples"] == 2000 and sample["input_shape"] == [1, 28, 28]
    assert sample["classes"] == [str(d) for d in range(10)]
    assert set(sample["class_counts"].values()) == {200} and sample["builtin"]


def test_upload_npz_is_stored_listed_and_described(client: TestClient, settings) -> None:
    response = client.post(
        "/datasets", files={"files": ("../../x.png", digits_npz(120))}, data={"name": "digits"}
    )
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/datasets/{body['id']}"
    assert body["name"] == "digits" and body["n_samples"] == 120
    assert sum(body["class_counts"].values()) == 120
    assert client.get(f"/datasets/{body['id']}").json() == body
    assert [d["id"] for d in client.get("/datasets").json()["datasets"]] == [
        "mnist-sample",
        body["id"],
    ]
    stored = sorted(p.name for p in (settings.data_dir / "datasets").iterdir())
    assert stored == [f"{body['id']}.json", f"{body['id']}.npz"]


def test_upload_idx_pair_gzipped_or_not(client: TestClient) -> None:
    X, y = holdout()
    files = [
        ("files", ("labels.idx1", idx_bytes(y[:50]))),
        ("files", ("images.idx3.gz", gzip.compress(idx_bytes(X[:50])))),
    ]
    body = client.post("/datasets", files=files).json()
    assert body["n_samples"] == 50 and body["input_shape"] == [1, 28, 28]


def test_upload_zip_of_class_folders(client: TestClient) -> None:
    response = client.post("/datasets", files={"files": ("d.zip", image_zip_bytes(4))})
    assert response.status_code == 201
    body = response.json()
    assert body["classes"] == ["3", "7"] and body["class_counts"] == {"3": 4, "7": 4}


def test_uint8_zip_is_stored_as_uint8_and_trains_as_float_data_and_old_files_do(
    client: TestClient, settings, tmp_path
) -> None:
    X, y = holdout()
    picked = np.concatenate([np.flatnonzero(y == d)[:12] for d in range(10)])  # in class order
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for k, i in enumerate(picked):
            zf.writestr(f"{y[i]}/{k:03d}.png", png_bytes(X[i]))
    zipped = client.post("/datasets", files={"files": ("d.zip", archive.getvalue())}).json()
    path = settings.data_dir / "datasets" / f"{zipped['id']}.npz"
    with np.load(path) as stored:
        assert stored["X"].dtype == np.uint8  # a quarter of the float32 file
        np.testing.assert_array_equal(stored["X"][:, 0], X[picked])
    scaled = X[picked].astype(np.float32) * np.float32(1 / 255)  # what uploads stored before
    floats = npz_bytes(X=scaled, y=y[picked])
    floated = client.post("/datasets", files={"files": ("f.npz", floats)}).json()

    def train_and_look(dataset_id: str) -> tuple[dict, bytes, dict]:
        job = wait_for_job(client, submit(client, dataset_id, "tiny", epochs=2)["id"])
        assert job["status"] == "succeeded", job
        samples = client.get(f"/datasets/{zipped['id']}/samples").content
        scores = client.post(
            f"/models/{job['model_id']}/evaluate", json={"dataset_id": zipped["id"]}
        ).json()
        return model_params(client, job["model_id"], tmp_path), samples, scores

    from_uint8, samples, scores = train_and_look(zipped["id"])
    from_floats, _, _ = train_and_look(floated["id"])
    # the zip's file as uploads wrote it before: float32 X, already scaled, same metadata
    atomic_write(path, lambda file: np.savez(file, X=scaled[:, None], y=y[picked]))
    from_old_file, old_samples, old_scores = train_and_look(zipped["id"])
    for params in (from_floats, from_old_file):
        assert params.keys() == from_uint8.keys()
        for name, value in from_uint8.items():
            np.testing.assert_array_equal(params[name], value)  # bit for bit
    assert old_samples == samples
    assert (old_scores["confusion_matrix"], old_scores["accuracy"]) == (
        scores["confusion_matrix"],
        scores["accuracy"],
    )


def test_unusable_uploads_are_415_and_leave_nothing(client: TestClient, settings) -> None:
    for payload in (b"not a dataset at all", b"\x89PNG\r\n\x1a\n" + b"0" * 20):
        response = client.post("/datasets", files={"files": ("x.npz", payload)})
        assert response.status_code == 415
        assert response.json()["detail"]
    assert list((settings.data_dir / "datasets").iterdir()) == []


def test_delete_dataset_then_it_is_gone(client: TestClient) -> None:
    dataset_id = client.post("/datasets", files={"files": ("d.npz", digits_npz(60))}).json()["id"]
    assert client.delete(f"/datasets/{dataset_id}").status_code == 204
    assert client.get(f"/datasets/{dataset_id}").status_code == 404
    assert client.delete(f"/datasets/{dataset_id}").status_code == 404


def test_builtin_dataset_cannot_be_deleted(client: TestClient) -> None:
    response = client.delete("/datasets/mnist-sample")
    assert response.status_code == 409
    assert client.get("/datasets/mnist-sample").status_code == 200


def test_dataset_used_by_an_active_job_cannot_be_deleted(client: TestClient) -> None:
    dataset_id = client.post("/datasets", files={"files": ("d.npz", digits_npz(100))}).json()["id"]
    job = submit(client, dataset_id, "tiny", epochs=50)
    response = client.delete(f"/datasets/{dataset_id}")
    assert response.status_code == 409
    assert "used by" in response.json()["detail"]
    client.post(f"/jobs/{job['id']}/cancel")
    assert client.delete(f"/datasets/{dataset_id}").status_code == 204


def test_ids_outside_the_allowlist_are_404(client: TestClient) -> None:
    for bad in ("%2e%2e", "..%5c..", "MNIST-SAMPLE", "0" * 31, "0" * 33, "x%00y"):
        assert client.get(f"/datasets/{bad}").status_code == 404, bad
