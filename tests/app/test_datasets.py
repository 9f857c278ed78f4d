"""POST/GET/DELETE /datasets."""

import gzip

from fastapi.testclient import TestClient

from tests.support.builders import digits_npz, holdout, idx_bytes, image_zip_bytes
from tests.support.server import submit


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
