"""Hostile uploads: body caps, formats decided from bytes, npz/IDX/zip attacks, image bombs.

Every refusal is checked for its status and for its side effects: nothing stored, no temp file
left open or on disk, no file outside the data dir, the stored data unchanged and still served,
the server still healthy. Status mapping: 413 over a limit, 415 not an accepted format, 400 bytes
that cannot be decoded, 422 decoded but unusable.
"""

import gzip
import io
import stat
import struct
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from tests.app.hostile import assert_clean, open_fds_under, tree
from tests.support.builders import (
    digits_npz,
    holdout,
    image_zip_bytes,
    npz_bytes,
    png_bytes,
    png_declaring,
)


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temp dir for this test, where the multipart parser spools big parts."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
def small(tmp_path: Path, temp_dir: Path) -> Iterator[TestClient]:
    """An app with 1 MB dataset and predict caps and a 1 KB JSON cap."""
    settings = Settings(
        data_dir=tmp_path / "data",
        max_upload_mb=1,
        max_predict_mb=1,
        max_json_kb=1,
        poll_interval=0.05,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def no_temp_files(temp_dir: Path) -> bool:
    """No upload spooled to `temp_dir` is left there or held open (multiprocessing's own
    `pymp-*` runtime dir aside)."""
    left = [p for p in temp_dir.iterdir() if not p.name.startswith("pymp-")]
    return left == [] and open_fds_under(temp_dir) == []


def assert_untouched(
    client: TestClient, root: Path, temp_dir: Path, before: dict[str, bytes] | None = None
) -> None:
    """Nothing new stored, no temp file left, nothing written outside the data dir."""
    data = root / "data"
    stored = tree(data / "datasets")
    assert stored == (before or {}), sorted(stored)
    assert no_temp_files(temp_dir)
    outside = [
        p for p in root.rglob("*") if not p.is_relative_to(data) and not p.is_relative_to(temp_dir)
    ]
    assert outside == [], outside
    assert client.get("/health").status_code == 200
    assert client.get("/datasets/mnist-sample").status_code == 200


def multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> tuple[dict, bytes]:
    """A multipart body of file parts named "files", built by hand."""
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
        f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for name, data in parts
    )
    body += f"--{boundary}--\r\n".encode()
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """The body streamed in chunks, so it is sent chunked, without Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def upload(client: TestClient, data: bytes, name: str = "d.npz", **kwargs):
    response = client.post("/datasets", files={"files": (name, data)}, **kwargs)
    assert_clean(response.text)
    return response


# ------------------------------------------------------------------------------------------
# Body caps


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_dataset_upload_over_the_cap_is_413_and_leaves_nothing(
    small: TestClient, tmp_path: Path, temp_dir: Path, chunked: bool
) -> None:
    headers, body = multipart([("big.npz", b"\0" * (3 << 20))])
    content = chunks(body) if chunked else body
    response = small.post("/datasets", content=content, headers=headers)
    assert response.status_code == 413
    assert response.json() == {"detail": "Content Too Large"}
    assert_untouched(small, tmp_path, temp_dir)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_predict_body_over_the_cap_is_413(
    trained: tuple[TestClient, dict], temp_dir: Path, chunked: bool
) -> None:
    client, model = trained
    headers, body = multipart([("x.png", DIGIT + b"\0" * (11 << 20))])
    response = client.post(
        f"/models/{model['id']}/predict", content=chunks(body) if chunked else body, headers=headers
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "Content Too Large"}
    assert no_temp_files(temp_dir)
    assert_model_still_serves(client, model)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_json_body_over_the_cap_is_413_and_creates_no_job(
    small: TestClient, tmp_path: Path, temp_dir: Path, chunked: bool
) -> None:
    body = (
        b'{"dataset_id": "mnist-sample", "architecture": "lenet5", "name": "'
        + (b"x" * 4000)
        + b'"}'
    )
    for path in ("/jobs", "/architectures/validate"):
        response = small.post(
            path,
            content=chunks(body, 512) if chunked else body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413
    assert small.get("/jobs").json()["count"] == 0
    assert_untouched(small, tmp_path, temp_dir)


def test_upload_of_many_parts_is_refused_cheaply(
    client: TestClient, tmp_path: Path, temp_dir: Path
) -> None:
    headers, body = multipart([(f"{i}.npz", b"x") for i in range(50)])
    response = client.post("/datasets", content=body, headers=headers)
    assert response.status_code == 400
    assert_untouched(client, tmp_path, temp_dir)


# ------------------------------------------------------------------------------------------
# Format from the bytes, names from the server


def test_format_is_decided_from_bytes_and_stored_names_are_generated(
    client: TestClient, tmp_path: Path, temp_dir: Path
) -> None:
    for name in ("../../escape.png", "/etc/cron.d/x", "..\\..\\win.npz", "a\x00b.zip", "."):
        response = client.post("/datasets", files={"files": (name, digits_npz(40), "image/png")})
        assert response.status_code == 201, (name, response.text)
        dataset_id = response.json()["id"]
        assert sorted(p.name for p in (tmp_path / "data" / "datasets").glob(f"{dataset_id}*")) == [
            f"{dataset_id}.json",
            f"{dataset_id}.npz",
        ]
    stored = list((tmp_path / "data" / "datasets").iterdir())
    assert len(stored) == 10
    assert [p for p in tmp_path.rglob("*") if p.name in ("escape.png", "x", "win.npz")] == []


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("d.npz", png_bytes(np.zeros((8, 8), np.uint8))),
        ("d.zip", b"GIF89a" + b"\0" * 50),
        ("d.npz", b"not a dataset at all"),
        ("d.npz", b""),
        ("d.npz", np.lib.format.magic(1, 0) + b"single .npy"),
        ("d.npz", b"\x7fELF\x02\x01\x01" + b"\0" * 64),
        ("d.npz", b"%PDF-1.7\n"),
    ],
)
def test_bytes_of_no_accepted_format_are_415(
    client: TestClient, tmp_path: Path, temp_dir: Path, name: str, payload: bytes
) -> None:
    response = upload(client, payload, name)
    assert response.status_code == 415, response.text
    assert_untouched(client, tmp_path, temp_dir)


# ------------------------------------------------------------------------------------------
# npz


class OpensAFile:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return open, (str(self.target), "w")


def npy_member(header: dict, payload: bytes) -> bytes:
    """A raw .npy: magic, a header dict (possibly lying), then payload bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + payload


def npz_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_npz_with_pickled_object_array_is_refused_without_running_it(
    client: TestClient, tmp_path: Path, temp_dir: Path
) -> None:
    marker = tmp_path / "pwned"
    X, y = holdout()
    payload = npz_bytes(
        X=X[:20], y=y[:20], class_names=np.array([OpensAFile(marker)] * 10, dtype=object)
    )
    response = upload(client, payload)
    assert response.status_code == 422 and "pickle" in response.json()["detail"]
    X_objects = npz_bytes(X=np.array([OpensAFile(marker)], dtype=object), y=y[:1])
    assert upload(client, X_objects).status_code == 422
    assert not marker.exists()
    assert_untouched(client, tmp_path, temp_dir)


def test_npz_declaring_a_huge_shape_is_413_before_allocating(
    client: TestClient, tmp_path: Path, temp_dir: Path
) -> None:
    members = {
        "X.npy": npy_member(
            {"descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000)}, b"\0" * 10
        ),
        "y.npy": npy_member(
            {"descr": "<i8", "fortran_order": False, "shape": (100_000,)}, b"\0" * 10
        ),
    }
    tracemalloc.start()
    started = time.perf_counter()
    response = upload(client, npz_of(members))
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert response.status_code == 413, response.text
    assert elapsed < 1 and peak < 50 << 20
    assert_untouched(client, tmp_path, temp_dir)


@pytest.mark.parametrize(
    ("case", "members", "status"),
    [
        (
            "structured dtype",
            {
                "X.npy": npy_member(
                    {"descr": [("a", "<f4")], "fortran_order": False, "shape": (2, 4, 4)},
                    b"\0" * 32,
                )
            },
            422,
        ),
        (
            "negative shape",
            {
                "X.npy": npy_member(
                    {"descr": "<f4", "fortran_order": False, "shape": (-1, 4, 4)}, b""
                )
            },
            422,
        ),
        (
            "truncated data",
            {
                "X.npy": npy_member(
                    {"descr": "|u1", "fortran_order": False, "shape": (4, 8, 8)}, b"\0" * 10
                ),
                "y.npy": npy_member(
                    {"descr": "<i8", "fortran_order": False, "shape": (4,)},
                    struct.pack("<4q", 0, 1, 0, 1),
                ),
            },
            400,
        ),
        (
            "garbage header",
            {"X.npy": b"\x93NUMPY\x01\x00\xff\xff{'descr': eval('1')}", "y.npy": b"junk"},
            400,
        ),
        ("not npy members", {"X.npy": b"hello", "y.npy": b"world"}, 400),
        (
            "member that is no .npy",
            {"evil.sh": b"rm -rf /", "X.npy": np.lib.format.magic(1, 0)},
            422,
        ),
        ("many members", {f"m{i}.npy": b"" for i in range(100)}, 413),
    ],
)
def test_malformed_npz_members_are_refused(
    client: TestClient, tmp_path: Path, temp_dir: Path, case: str, members: dict, status: int
) -> None:
    response = upload(client, npz_of(members))
    assert response.status_code == status, (case, response.text)
    assert_untouched(client, tmp_path, temp_dir)


@pytest.mark.parametrize(
    "case",
    ["nan pixels", "label out of range", "mismatched n", "one class", "4 channels", "flat X"],
)
def test_npz_with_unusable_arrays_is_422(
    client: TestClient, tmp_path: Path, temp_dir: Path, case: str
) -> None:
    X, y = holdout()
    X, y = X[:20].astype(np.float32), y[:20].copy()
    extra = {}
    if case == "nan pixels":
        X[3, 4, 5] = np.nan
    elif case == "label out of range":
        y[0] = 255
        extra = {"class_names": np.array([str(i) for i in range(10)])}
    elif case == "mismatched n":
        y = y[:10]
    elif case == "one class":
        y[:] = 1
    elif case == "4 channels":
        X = np.zeros((20, 8, 8, 4), np.float32)
    else:
        X = X.reshape(20, -1)
    response = upload(client, npz_bytes(X=X, y=y, **extra))
    assert response.status_code == 422, (case, response.text)
    assert_untouched(client, tmp_path, temp_dir)


def test_truncated_npz_is_400(client: TestClient, tmp_path: Path, temp_dir: Path) -> None:
    whole = digits_npz(40)
    for cut in (len(whole) // 2, 30, len(whole) - 10):
        assert upload(client, whole[:cut]).status_code == 400
    assert_untouched(client, tmp_path, temp_dir)


# ------------------------------------------------------------------------------------------
# IDX


def idx(dtype_code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, dtype_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


LABELS = idx(0x08, (4,), bytes([0, 1, 0, 1]))
IMAGES = idx(0x08, (4, 2, 2), b"\1" * 16)


@pytest.mark.parametrize(
    ("case", "images", "status"),
    [
        ("3 bytes", b"\0\0\x08", 415),
        ("float type", idx(0x0D, (4, 2, 2), b"\0" * 64), 422),
        ("unknown type", idx(0x42, (4, 2, 2), b"\0" * 16), 422),
        ("ndim 0", bytes([0, 0, 8, 0]), 422),
        ("ndim 255", bytes([0, 0, 8, 255]) + b"\0" * 16, 422),
        ("zero dim", idx(0x08, (0, 2, 2), b""), 422),
        ("overflowing dims", idx(0x08, (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), b"\0" * 16), 413),
        ("truncated header", bytes([0, 0, 8, 3]) + b"\0\0\0\4", 400),
        ("truncated data", idx(0x08, (4, 2, 2), b"\1" * 15), 400),
        ("trailing garbage", idx(0x08, (4, 2, 2), b"\1" * 17), 400),
        ("count mismatch", idx(0x08, (5, 2, 2), b"\1" * 20), 422),
        ("two label files", LABELS, 422),
        ("gzip of garbage", gzip.compress(b"hello world"), 415),
        ("corrupt gzip", gzip.compress(IMAGES)[:-12] + b"\xff" * 4, 400),
    ],
)
def test_malformed_idx_files_are_refused(
    client: TestClient, tmp_path: Path, temp_dir: Path, case: str, images: bytes, status: int
) -> None:
    response = client.post(
        "/datasets", files=[("files", ("images", images)), ("files", ("labels", LABELS))]
    )
    assert_clean(response.text)
    assert response.status_code == status, (case, response.text)
    assert_untouched(client, tmp_path, temp_dir)


def test_idx_gzip_bomb_is_413_after_reading_only_the_cap(
    small: TestClient, tmp_path: Path, temp_dir: Path
) -> None:
    bomb = gzip.compress(idx(0x08, (50_000, 28, 28), bytes(50_000 * 784)), 9)
    assert len(bomb) < 100_000
    started = time.perf_counter()
    response = small.post("/datasets", files=[("files", ("i.gz", bomb)), ("files", ("l", LABELS))])
    assert response.status_code == 413 and time.perf_counter() - started < 1
    assert_untouched(small, tmp_path, temp_dir)


# ------------------------------------------------------------------------------------------
# Zip of class folders


def zip_of(
    entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


DIGIT = png_bytes(holdout()[0][0])
GOOD = [("a/0.png", DIGIT), ("b/0.png", DIGIT)]


def symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.mark.parametrize(
    ("case", "entries", "status"),
    [
        ("dot-dot", [*GOOD, ("../../evil/0.png", DIGIT)], 422),
        ("nested dot-dot", [*GOOD, ("a/../../evil.png", DIGIT)], 422),
        ("absolute", [*GOOD, ("/abs/0.png", DIGIT)], 422),
        ("drive letter", [*GOOD, ("C:/win/0.png", DIGIT)], 422),
        ("backslashes", [*GOOD, ("a\\..\\..\\b.png", DIGIT)], 422),
        ("symlink", [*GOOD, symlink("a/1.png", "/etc/passwd")], 422),
        ("nested archive", [*GOOD, ("a/inner.zip", zip_of(GOOD))], 422),
        ("archive named png", [*GOOD, ("a/1.png", zip_of(GOOD))], 422),
        ("bmp inside", [*GOOD, ("a/1.png", b"BM" + b"\0" * 60)], 415),
        ("corrupt png", [*GOOD, ("a/1.png", DIGIT[:40])], 400),
        ("not an image name", [*GOOD, ("a/run.sh", b"#!/bin/sh")], 422),
        ("one class", [("a/0.png", DIGIT), ("a/1.png", DIGIT)], 422),
        ("ratio bomb", [*GOOD, ("a/1.png", b"\0" * (10 << 20))], 413),
        ("pixel bomb", [*GOOD, ("a/1.png", png_bytes(np.zeros((4200, 4200), np.uint8)))], 413),
    ],
)
def test_hostile_image_zips_are_refused_and_write_nothing(
    client: TestClient, tmp_path: Path, temp_dir: Path, case: str, entries: list, status: int
) -> None:
    response = upload(client, zip_of(entries), "d.zip")
    assert response.status_code == status, (case, response.text)
    assert_untouched(client, tmp_path, temp_dir)
    assert not (tmp_path / "evil").exists() and not Path("/abs").exists()


def test_zip_entry_whose_header_understates_its_size_is_not_inflated_past_it(
    client: TestClient, tmp_path: Path, temp_dir: Path
) -> None:
    archive = bytearray(zip_of([*GOOD, ("a/1.png", b"\0" * (10 << 20))]))
    central = archive.rfind(b"PK\x01\x02")  # the last entry's central directory record
    archive[central + 24 : central + 28] = struct.pack("<I", 100)  # "uncompressed: 100 bytes"
    assert zipfile.ZipFile(io.BytesIO(archive)).infolist()[-1].file_size == 100
    started = time.perf_counter()
    response = upload(client, bytes(archive), "d.zip")
    assert response.status_code == 400 and "cannot be read" in response.text
    assert time.perf_counter() - started < 0.5
    assert_untouched(client, tmp_path, temp_dir)


def test_zip_with_too_many_entries_is_413(
    client: TestClient, tmp_path: Path, temp_dir: Path
) -> None:
    entries = [(f"a/{i}.png", b"") for i in range(100_001)]
    response = upload(client, zip_of(entries, zipfile.ZIP_STORED), "d.zip")
    assert response.status_code == 413, response.text
    assert_untouched(client, tmp_path, temp_dir)


def test_refusals_leave_stored_datasets_unchanged_and_served(
    client: TestClient, tmp_path: Path, temp_dir: Path
) -> None:
    kept = upload(client, image_zip_bytes(3), "d.zip").json()
    before = tree(tmp_path / "data" / "datasets")
    for payload in (zip_of([*GOOD, ("../../x.png", DIGIT)]), b"junk", digits_npz(40)[:100]):
        assert upload(client, payload, f"{kept['id']}.zip").status_code in (400, 415, 422)
    assert_untouched(client, tmp_path, temp_dir, before)
    assert client.get(f"/datasets/{kept['id']}").json() == kept


# ------------------------------------------------------------------------------------------
# Images for prediction


def image_bytes(fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(holdout()[0][1]).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def predict(client: TestClient, model: dict, data: bytes, name: str = "x.png"):
    response = client.post(f"/models/{model['id']}/predict", files={"files": (name, data)})
    assert_clean(response.text)
    return response


def assert_model_still_serves(client: TestClient, model: dict) -> None:
    assert client.get(f"/models/{model['id']}").json() == model
    assert predict(client, model, DIGIT).status_code == 200
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [("GIF", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {}), ("ICO", {}), ("PPM", {})],
)
def test_images_other_than_png_and_jpeg_are_415(
    trained: tuple[TestClient, dict], fmt: str, kwargs: dict
) -> None:
    client, model = trained
    response = predict(client, model, image_bytes(fmt, **kwargs), "digit.png")
    assert response.status_code == 415, response.text
    assert_model_still_serves(client, model)


@pytest.mark.parametrize(
    ("width", "height"), [(20_000, 10_000), (12_000, 10_000), (5_000, 5_000), (1, 20_000_000)]
)
def test_decompression_bomb_is_413_well_under_a_second(
    trained: tuple[TestClient, dict], width: int, height: int
) -> None:
    client, model = trained
    started = time.perf_counter()
    response = predict(client, model, png_declaring(width, height))
    assert response.status_code == 413, response.text
    assert time.perf_counter() - started < 0.5
    assert_model_still_serves(client, model)


@pytest.mark.parametrize(
    "case",
    [
        "truncated png",
        "truncated jpeg",
        "corrupt png crc",
        "jpeg header only",
        "png signature only",
    ],
)
def test_truncated_or_corrupt_images_are_400(trained: tuple[TestClient, dict], case: str) -> None:
    client, model = trained
    jpeg = image_bytes("JPEG")
    data = {
        "truncated png": DIGIT[: len(DIGIT) // 2],
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "corrupt png crc": DIGIT[:30] + bytes([DIGIT[30] ^ 0xFF]) + DIGIT[31:],
        "jpeg header only": jpeg[:20],
        "png signature only": b"\x89PNG\r\n\x1a\n",
    }[case]
    response = predict(client, model, data)
    assert response.status_code == 400, (case, response.text)
    assert_model_still_serves(client, model)


def test_animated_png_is_predicted_from_its_first_frame(trained: tuple[TestClient, dict]) -> None:
    client, model = trained
    X, _ = holdout()
    first = Image.fromarray(X[0])
    buffer = io.BytesIO()
    others = [Image.fromarray(X[i]) for i in (1, 2, 3)]
    first.save(buffer, format="PNG", save_all=True, append_images=others, duration=100)
    apng = buffer.getvalue()
    assert Image.open(io.BytesIO(apng)).n_frames == 4
    animated = predict(client, model, apng).json()["predictions"][0]
    still = predict(client, model, png_bytes(X[0])).json()["predictions"][0]
    assert animated == still
    assert_model_still_serves(client, model)


def test_image_named_and_typed_as_png_but_holding_jpeg_bytes_is_decoded_as_jpeg(
    trained: tuple[TestClient, dict],
) -> None:
    client, model = trained
    response = client.post(
        f"/models/{model['id']}/predict",
        files={"files": ("digit.gif", image_bytes("JPEG"), "image/gif")},
    )
    assert response.status_code == 200
