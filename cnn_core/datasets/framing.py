"""How a dataset's images look (background polarity, digit framing), recorded when it is read,
and the conversion that makes a real-world image look the same at prediction time.

Recorded in ``Dataset.preprocessing`` (pixel levels in 0..255, whatever the stored scale):

- ``background``: the per-channel median of the training images' border pixels, and
  ``polarity``: ``"dark"`` or ``"light"`` when nearly every image agrees, else ``"mixed"``.
- ``framing`` (grayscale data whose images all share one framing, such as MNIST): ``box``, the
  longest side of every digit's bounding box, and ``centre``, where its centre of mass sits.

An image to predict is then inverted when its own background disagrees with the polarity
(``invert="auto"``; ``"true"``/``"false"`` force it), its transparent pixels composited onto
the training background, and it is resized keeping its aspect ratio, padded with that
background; for framed data the drawing is cropped to its ink, fitted into ``box`` and placed
with its centre of mass at ``centre``, as MNIST's digits were. Models whose preprocessing holds
no ``background`` (trained before it was recorded) keep the old conversion exactly.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

_SAMPLE_VALUES = 2_000_000  # pixel values looked at when recording: enough for a stable median
_DECISIVE = 0.9  # share of images that must agree on a polarity (or a framing) to record it
_INK = 0.3  # ink is at least this share of an image's strongest ink (noise and paper are less)
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's "L" conversion
INVERT_CHOICES = ("auto", "true", "false")


@functools.lru_cache(maxsize=64)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The row and the column index of every pixel of an (h, w) image (read-only, shared)."""
    grid = np.indices((h, w))
    grid.flags.writeable = False
    return grid[0], grid[1]


def _median(values: np.ndarray) -> float:
    """np.median of an array's values, NaN-free, in a fraction of its time (it is called per
    image): the middle value in order, or the mean of the middle two."""
    ordered = np.sort(values, axis=None)
    return (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2


def _border(levels: np.ndarray) -> np.ndarray:
    """(N, C, B) border pixels of (N, C, H, W) images."""
    return np.concatenate(
        [levels[:, :, 0, :], levels[:, :, -1, :], levels[:, :, :, 0], levels[:, :, :, -1]], axis=2
    )


def record_conventions(X: np.ndarray, image_scale: float) -> dict:
    """The ``background``, ``polarity`` and (when it applies) ``framing`` of images X (N, C,
    H, W) whose values are 8-bit levels times ``image_scale`` (1.0 for uint8 pixels)."""
    n, c, h, w = X.shape
    step = max(1, n * c * h * w // _SAMPLE_VALUES)
    levels = X[::step].astype(np.float64) / image_scale
    border = _border(levels)
    background = np.median(border, axis=(0, 2))
    own = np.median(border, axis=2) @ (_LUMA if c == 3 else np.ones(1))  # (N,) luminance
    dark, light = np.mean(own < 128), np.mean(own >= 128)
    polarity = "dark" if dark >= _DECISIVE else "light" if light >= _DECISIVE else "mixed"
    record = {"background": [round(float(b), 2) for b in background], "polarity": polarity}
    if c == 1 and polarity != "mixed":
        framing = _measure_framing(np.abs(levels[:, 0] - background[0]), h, w)
        if framing:
            record["framing"] = framing
    return record


def _ink_frame(image: np.ndarray) -> tuple[int, tuple[float, float]] | None:
    """The longest side of an (h, w) ink image's bounding box and its centre of mass (row,
    column), or None when it has no ink."""
    if image.max() <= 0:
        return None
    mask = image > 0
    r, k = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    rows, cols = _grid(*image.shape)
    total = image.sum()
    return max(r[-1] - r[0], k[-1] - k[0]) + 1, (
        (image * rows).sum() / total,
        (image * cols).sum() / total,
    )


def _measure_framing(ink: np.ndarray, h: int, w: int) -> dict | None:
    """The box and centre every image's ink is framed in, if they all share one."""
    found = [frame for frame in map(_ink_frame, ink) if frame is not None]
    if len(found) < _DECISIVE * len(ink) or not found:
        return None
    sides = np.array([side for side, _ in found])
    centres = np.array([centre for _, centre in found])
    box = int(_median(sides))
    centre = np.array([_median(centres[:, 0]), _median(centres[:, 1])])
    framed = np.count_nonzero(np.abs(sides - box) <= 1) / len(sides)
    central = np.abs(centre - (h / 2, w / 2)).max() <= 1.5
    if framed < _DECISIVE or not central or box >= min(h, w):
        return None
    return {"box": box, "centre": [round(float(v), 2) for v in centre]}


def _framed_like(plane: np.ndarray, background: np.ndarray, framing: dict) -> bool:
    """Whether an (h, w) plane's ink already fills the recorded box around the centre."""
    h, w = plane.shape
    measured = _measure_framing(np.abs(plane - background[0])[None], h, w)
    return measured is not None and (
        abs(measured["box"] - framing["box"]) <= 1
        and np.abs(np.subtract(measured["centre"], framing["centre"])).max() <= 1.5
    )


def _resize(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    """A float plane resized with Lanczos (Pillow's "F" mode keeps fractions)."""
    if plane.shape == (height, width):
        return plane
    image = Image.fromarray(plane.astype(np.float32), "F")
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)


def _fit(planes: np.ndarray, fill: np.ndarray, h: int, w: int) -> np.ndarray:
    """(C, H0, W0) planes resized to fit (h, w) keeping their aspect ratio, centred on fill."""
    _, h0, w0 = planes.shape
    scale = min(h / h0, w / w0)
    nh, nw = max(1, min(h, round(h0 * scale))), max(1, min(w, round(w0 * scale)))
    out = np.empty((len(planes), h, w))
    out[:] = fill[:, None, None]
    top, left = (h - nh) // 2, (w - nw) // 2
    for i, plane in enumerate(planes):
        out[i, top : top + nh, left : left + nw] = _resize(plane, nw, nh)
    return out


def _frame(ink: np.ndarray, framing: dict, h: int, w: int) -> np.ndarray:
    """Ink (H0, W0) cropped to its bounding box, fitted into the box, its centre of mass
    placed at the recorded centre of an (h, w) canvas: MNIST's normalisation."""
    peak = ink.max()
    if peak <= 0:
        return _fit(ink[None], np.zeros(1), h, w)[0]
    rows, cols = np.flatnonzero((ink > 0).any(axis=1)), np.flatnonzero((ink > 0).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = int(framing["box"])
    scale = box / max(crop.shape)
    nh, nw = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    digit = np.clip(_resize(crop, nw, nh), 0, None)
    total = digit.sum() or 1.0
    r, k = _grid(*digit.shape)
    cy, cx = (digit * r).sum() / total, (digit * k).sum() / total
    top = int(round(framing["centre"][0] - cy))
    left = int(round(framing["centre"][1] - cx))
    top, left = min(max(top, 0), h - nh), min(max(left, 0), w - nw)
    canvas = np.zeros((h, w))
    canvas[top : top + nh, left : left + nw] = digit[: h - top, : w - left]
    return canvas


def _flip_decision(luma: np.ndarray, alpha: np.ndarray | None, dark_training: bool) -> bool:
    """Whether an image's polarity disagrees with the training data's: for an opaque image
    (``alpha`` None), judged by its border's luminance; for a transparent one, by its (opaque)
    ink, which must contrast with the background it is composited onto."""
    if alpha is not None:
        opaque = alpha > 0.5
        if not opaque.any():
            return False
        ink_dark = luma[opaque].mean() < 128
        return ink_dark == dark_training
    border = np.concatenate([luma[0], luma[-1], luma[:, 0], luma[:, -1]])
    return (_median(border) < 128) != dark_training


def convert_image(
    img: Image.Image, c: int, h: int, w: int, preprocessing: dict, invert: str
) -> tuple[np.ndarray, bool]:
    """uint8 (h, w, c) pixels of an 8-bit "L", "LA", "RGB" or "RGBA" image, converted as the
    recorded conventions say, and whether it was inverted."""
    background = np.asarray(preprocessing["background"], dtype=np.float64)
    polarity = preprocessing.get("polarity", "mixed")
    limit = 8 * max(h, w)  # enough detail to find and fit the ink; far less work on a photo
    if max(img.size) > limit:
        img = img.copy()
        img.thumbnail((limit, limit), Image.Resampling.LANCZOS)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
    rgb, alpha = rgba[..., :3], rgba[..., 3:] / 255
    transparent = bool((alpha < 1).any())
    luma = rgb @ _LUMA
    if invert == "auto":
        flip = polarity != "mixed" and _flip_decision(
            luma, alpha[..., 0] if transparent else None, polarity == "dark"
        )
    else:
        flip = invert == "true"
    if flip:
        rgb = 255 - rgb
    fill = np.resize(background, 3) if c == 3 else np.full(3, background[0])
    if transparent:  # opaque pixels are kept exactly as they are
        rgb = rgb * alpha + fill * (1 - alpha)
    if c == 3:
        planes = rgb.transpose(2, 0, 1)
    else:
        planes = (rgb @ _LUMA if flip or transparent else luma)[None]
    framing = preprocessing.get("framing") if c == 1 else None
    if framing and planes.shape[1:] == (h, w) and _framed_like(planes[0], background, framing):
        out = planes  # a digit framed as the training digits were (one of them) is kept as is
    elif framing:
        sign = 1 if polarity == "dark" else -1  # ink is brighter than dark paper, or darker
        ink = np.clip(sign * (planes[0] - _median(_border(planes[None])[0])), 0, None)
        floor = max(_INK * ink.max(), np.percentile(_border(ink[None, None])[0], 95))
        peak = np.percentile(ink[ink > floor], 90) if (ink > floor).any() else 1.0
        ink = np.clip((ink - floor) / max(peak - floor, 1e-9), 0, 1) * 255
        ink = _frame(ink, framing, h, w)
        out = (background[0] + sign * ink)[None]
    else:
        out = _fit(planes, background[:c] if len(background) == c else fill[:c], h, w)
    pixels = np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return pixels, flip
