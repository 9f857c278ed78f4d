"""Predictions on images as people make them: drawn black on white, exported with transparency,
photographed in colour, any aspect ratio. A model trained here on the built-in MNIST sample must
read them as it reads the digits it was trained on."""

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFilter

from app.main import create_app
from app.settings import Settings
from tests.support.builders import holdout
from tests.support.server import submit, wait_for_job

# Small enough to train on the 2,000 sample digits in a few seconds, good enough (~95%) to read
# clear digits.
SMALL_CNN = {
    "layers": [
        {"type": "conv", "filters": 8, "kernel_size": 5, "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "conv", "filters": 16, "kernel_size": 5, "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
    "input_shape": [1, 28, 28],
}


@pytest.fixture(scope="module")
def digit_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    """(client, model) of a small CNN trained on mnist-sample."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("real") / "data", poll_interval=0.05)
    with TestClient(create_app(settings)) as client:
        job = submit(client, "mnist-sample", SMALL_CNN, epochs=4, batch_size=32)
        job = wait_for_job(client, job["id"], timeout=120)
        assert job["status"] == "succeeded", job
        yield client, client.get(f"/models/{job['model_id']}").json()


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def predict(client: TestClient, model: dict, images: dict[str, bytes], **params) -> list[dict]:
    files = [("files", (name, data)) for name, data in images.items()]
    response = client.post(f"/models/{model['id']}/predict", files=files, params=params)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def placed(ink: np.ndarray, size: tuple[int, int], at: tuple[int, int], zoom: int) -> np.ndarray:
    """Ink (0..255, 0 = none) enlarged `zoom` times onto an empty (h, w) canvas at (top, left)."""
    big = np.asarray(Image.fromarray(ink).resize((28 * zoom, 28 * zoom), Image.BICUBIC))
    canvas = np.zeros(size, dtype=np.uint8)
    canvas[at[0] : at[0] + big.shape[0], at[1] : at[1] + big.shape[1]] = big
    return canvas


def real_world_versions(ink: np.ndarray, rng: np.random.Generator) -> dict[str, Image.Image]:
    """One MNIST digit as people would send it."""
    ink = placed(ink, (150, 260), (20, 140), 4)  # wide canvas, digit off centre
    tall = placed(ink[20:132, 140:252], (120, 60), (30, 2), 2)[:, :, None]
    alpha = ink
    beige, blue = np.array([232, 220, 190]), np.array([40, 60, 170])
    share = ink[:, :, None] / 255.0
    photo = beige * (1 - share) + blue * share + rng.normal(0, 6, (*ink.shape, 3))
    return {
        "black-on-white.png": Image.fromarray(255 - ink),
        "white-on-black-tall.png": Image.fromarray(tall[:, :, 0]),
        "transparent.png": Image.fromarray(np.dstack([np.zeros_like(ink)] * 3 + [alpha]), "RGBA"),
        "photo.jpg": Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(1)
        ),
    }


def drawn(digit: int) -> Image.Image:
    """A digit drawn with a thick pen, black on a white 300x200 canvas."""
    image = Image.new("L", (200, 300), 255)
    pen = ImageDraw.Draw(image)
    strokes = {
        0: lambda: pen.ellipse((50, 40, 150, 260), outline=0, width=22),
        1: lambda: pen.line((100, 40, 100, 260), fill=0, width=22),
        7: lambda: pen.line((40, 50, 160, 50, 80, 260), fill=0, width=22, joint="curve"),
    }
    strokes[digit]()
    return image


def test_digits_sent_as_people_make_them_get_their_label(digit_model):
    client, model = digit_model
    X, y = holdout()
    rng = np.random.default_rng(0)
    plain = predict(client, model, {f"{i}.png": encode(Image.fromarray(X[i])) for i in range(40)})
    readable = [i for i, p in enumerate(plain) if p["label"] == y[i]][:12]
    assert len(readable) >= 10
    for index in readable:
        versions = real_world_versions(X[index], rng)
        sent = {
            name: encode(image, "JPEG" if name.endswith("jpg") else "PNG")
            for name, image in versions.items()
        }
        results = predict(client, model, sent)
        assert [p["filename"] for p in results] == list(sent)
        labels = {p["filename"]: p["label"] for p in results}
        assert labels == dict.fromkeys(sent, int(y[index])), (index, labels)
        inverted = {p["filename"]: p["inverted"] for p in results}
        assert inverted == {
            "black-on-white.png": True,
            "white-on-black-tall.png": False,
            "transparent.png": True,  # black ink, composited onto the black training background
            "photo.jpg": True,
        }


def test_drawn_digits_get_their_label(digit_model):
    client, model = digit_model
    results = predict(client, model, {f"{d}.png": encode(drawn(d)) for d in (0, 1, 7)})
    assert [(p["filename"], p["label"]) for p in results] == [
        ("0.png", 0),
        ("1.png", 1),
        ("7.png", 7),
    ]


def test_invert_can_be_forced(digit_model):
    client, model = digit_model
    sent = {"seven.png": encode(drawn(7))}
    forced_off = predict(client, model, sent, invert="false")[0]
    assert forced_off["inverted"] is False
    assert forced_off["top_k"] != predict(client, model, sent)[0]["top_k"]  # left as drawn
    forced_on = predict(client, model, sent, invert="true")[0]
    assert forced_on["inverted"] is True and forced_on["label"] == 7
    bad = client.post(
        f"/models/{model['id']}/predict", files={"files": sent}, params={"invert": "x"}
    )
    assert bad.status_code == 422 and "invert" in bad.text


def test_instances_out_of_the_training_scale_are_refused(digit_model):
    client, model = digit_model
    X, _ = holdout()
    url = f"/models/{model['id']}/predict"
    raw = client.post(url, json={"instances": [X[0][None].tolist()]})  # 0..255 to a 0..1 model
    assert raw.status_code == 422
    assert "0..1" in raw.json()["detail"] and "divide 8-bit pixels by 255" in raw.json()["detail"]
    scaled = client.post(url, json={"instances": [(X[0][None] / 255).tolist()]})
    assert scaled.status_code == 200
    (prediction,) = scaled.json()["predictions"]
    assert (prediction["index"], prediction["filename"], prediction["inverted"]) == (0, None, False)
