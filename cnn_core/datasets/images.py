"""Opening untrusted PNG/JPEG images and converting them to arrays: used by the image zip
reader and by prediction, so both scale pixels the same way."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import ExifTags, Image, ImageOps

from cnn_core.config import check_input_shape
from cnn_core.errors import CorruptFile, DatasetError, DatasetTooLarge, UnsupportedFormat

from .checks import _check_sample_shape, _scale_pixels
from .dataset import Source
from .framing import INVERT_CHOICES, convert_image
from .limits import MAX_DATASET_BYTES, MAX_IMAGE_PIXELS
from .sources import _read_limited

_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
"""How PNG and JPEG files start: bytes that do but fail to open are corrupt, not another format."""


IMAGE_FORMATS = ("PNG", "JPEG")


def _open_image(data: bytes, max_pixels: int, what: str) -> Image.Image:
    """Open PNG/JPEG bytes, reading only the header; refuse too many pixels before decoding."""
    try:
        with warnings.catch_warnings():  # Pillow only warns between 1x and 2x its own limit
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DatasetTooLarge(
            f"{what} declares far too many pixels (a decompression bomb): use "
            f"images of at most {max_pixels:,} pixels"
        ) from None
    except Image.UnidentifiedImageError:
        if data.startswith(IMAGE_SIGNATURES):
            raise CorruptFile(f"{what} is a truncated or corrupt PNG or JPEG image") from None
        raise UnsupportedFormat(
            f"{what} is not a PNG or JPEG image: convert it to PNG or JPEG"
        ) from None
    except _DECODE_ERRORS as exc:
        raise CorruptFile(f"{what} is not a readable PNG or JPEG image ({exc})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise DatasetTooLarge(
            f"{what} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}: downscale it"
        )
    return img


def open_image(
    source: Source, *, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None
) -> Image.Image:
    """Decode one untrusted PNG or JPEG (frame 0 of an animated one), refusing other formats
    and over max_pixels pixels. A given name (such as the uploaded file's) starts every error
    message, as in "digit.png: the image is not a PNG or JPEG image: ..."."""
    what = "the image" if name is None else f"{name}: the image"
    return _decoded(_read_limited(source, MAX_DATASET_BYTES, what), max_pixels, what)


def _decoded(data: bytes, max_pixels: int, what: str) -> Image.Image:
    """The image of PNG/JPEG bytes, decoded; a CorruptFile naming ``what`` if it cannot be."""
    img = _open_image(data, max_pixels, what)
    try:
        img.load()
    except _DECODE_ERRORS as exc:  # truncated or corrupt pixel data
        raise CorruptFile(
            f"{what} could not be decoded ({exc}): it is truncated or corrupt"
        ) from None
    return img


def _is_grayscale(img: Image.Image) -> bool:
    """Whether an image has no colour, judged by its mode (and palette) rather than pixels."""
    if img.mode in _GRAY_MODES:
        return True
    if img.mode == "P":  # optimisers often store grayscale PNGs with a gray palette
        rgb = np.asarray(img.getpalette("RGB") or [0, 0, 0], dtype=np.uint8).reshape(-1, 3)
        return bool((rgb == rgb[:, :1]).all())
    return False


def _upright_8_bit(img: Image.Image) -> Image.Image:
    """img turned as its EXIF orientation says, 16-bit and float pixels brought to 8 bits."""
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I"):
        wide = np.asarray(img).astype(np.int64)
        img = Image.fromarray(((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8))
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).round().astype(np.uint8))
    return img


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """An 8-bit img as "L" or "RGB", transparency composited on black."""
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if img.mode not in ("1", "L", "P", "RGB", "RGBA"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, ...
    return img if img.mode == mode else img.convert(mode)


def _image_pixels(img: Image.Image, channels: int, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, C) pixels of img in the wanted channels and size."""
    img = _to_mode(_upright_8_bit(img), "L" if channels == 1 else "RGB")
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).reshape(height, width, channels)


def convert_images(
    images: Sequence[Image.Image],
    input_shape: Sequence[int],
    preprocessing: dict,
    invert: str = "auto",
) -> tuple[np.ndarray, list[bool]]:
    """Convert images to a model's input: float32 (N, C, H, W), and whether each was inverted.

    With the conventions :func:`~cnn_core.datasets.framing.record_conventions` records (a
    ``background``), each image is inverted when its polarity disagrees with the training data
    (``invert="auto"``; ``"true"`` and ``"false"`` force it), composited onto the training
    background, resized keeping its aspect ratio and padded with that background, and for framed
    digit data fitted and centred as the training digits were. Without them (records older
    than these conventions) each image is converted to C channels (1: "L", 3: "RGB";
    transparency composited on black), resized to (H, W) with Lanczos, and inverted only when
    ``invert="true"``. Either way the pixels are multiplied by ``preprocessing["image_scale"]``.
    An input_shape that is no model's raises the config's ConfigError; one of other than 1 or 3
    channels, a DatasetError.
    """
    if invert not in INVERT_CHOICES:
        raise DatasetError(f"invert must be one of {', '.join(INVERT_CHOICES)}, not {invert!r}")
    c, h, w = check_input_shape(input_shape)
    _check_sample_shape(c, h, w, f"input_shape {[c, h, w]}")
    try:
        image_scale = float(preprocessing["image_scale"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError("preprocessing must hold a numeric 'image_scale'") from None
    pixels = np.empty((len(images), h, w, c), dtype=np.uint8)
    inverted = []
    for i, img in enumerate(images):
        try:
            pixels[i], flipped = image_pixels_like(img, (c, h, w), preprocessing, invert)
        except _DECODE_ERRORS as exc:  # decoding happens here for images not yet loaded
            raise CorruptFile(
                f"image {i} could not be decoded ({exc}): it is truncated or corrupt"
            ) from None
        inverted.append(flipped)
    return _scale_pixels(pixels.transpose(0, 3, 1, 2), image_scale), inverted


def image_pixels_like(
    img: Image.Image, input_shape: tuple[int, int, int], preprocessing: dict, invert: str
) -> tuple[np.ndarray, bool]:
    """uint8 (H, W, C) pixels of one image converted as :func:`convert_images` says, and
    whether it was inverted: the one conversion of both prediction images and the training
    images of an image zip that are not of the dataset's size, so both look alike."""
    c, h, w = input_shape
    if "background" in preprocessing:
        return convert_image(_upright_8_bit(img), c, h, w, preprocessing, invert)
    pixels = _image_pixels(img, c, h, w)
    flipped = invert == "true"
    return (255 - pixels if flipped else pixels), flipped


def images_to_array(
    images: Sequence[Image.Image], input_shape: Sequence[int], preprocessing: dict
) -> np.ndarray:
    """The float32 (N, C, H, W) input of :func:`convert_images` (polarity detected)."""
    return convert_images(images, input_shape, preprocessing)[0]
