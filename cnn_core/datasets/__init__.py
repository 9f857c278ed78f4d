"""Read image-classification datasets from untrusted files into arrays ready for training.

Three formats are read, recognised from their bytes and never from file names:

- ``.npz``: arrays ``X`` (N,H,W), (N,C,H,W) or (N,H,W,C) with C of 1 or 3, ``y`` (N,) integer
  labels and optionally ``class_names`` (K,) strings. X is uint8 (or any integer type holding
  0..255) or float in 0..1 or 0..255.
- MNIST IDX: an images file (magic ``00 00 08 03``, uint8 (N,H,W)) and a labels file (magic
  ``00 00 08 01``, uint8 (N,)), each optionally gzipped.
- ``.zip`` of one folder per class (optionally all under one top folder) of PNG/JPEG images.

**Sources.** Every ``source`` is a path (``str`` or ``os.PathLike``), the file's ``bytes``, or a
binary file object read from its current position (seekable for zip-based formats).

**Scaling rule.** A loaded dataset keeps ``Dataset.pixels`` (N, C, H, W) as its source had
them: uint8 for integer (8-bit) data, a quarter of the size of floats, float32 for float data.
``Dataset.X`` (or ``Dataset.inputs(index)`` for some samples) is the network's float32 input,
and ``Dataset.preprocessing`` records how raw pixels became it, so that prediction repeats it
exactly:

- ``scale``: the factor applied to the stored values: 1/255 for integer (8-bit) data, so X is
  ``pixels * float32(1/255)`` in 0..1, one correctly rounded multiply per value (the same
  numbers whether a whole dataset or one batch is converted); 1.0 for float data, which is
  used as given.
- ``image_scale``: the factor an 8-bit image's pixels must be multiplied by at prediction time:
  1/255 for integer data and for float data whose maximum is <= 1; 1.0 for float data in 0..255.
- ``source_dtype`` (e.g. ``"uint8"``) and ``source_format`` (``"npz"``, ``"idx"``,
  ``"image_zip"``) describe where X came from.

Float data must lie in 0..255 (negative or larger values are refused), because an image posted
for prediction could not be scaled to match standardised data. Every reader also records how
its images look (``background``, ``polarity``, and ``framing`` for MNIST-style digits: see
:mod:`.framing`). Images in a zip are converted to the dataset's channels ("L" or "RGB",
transparency composited on black); those of another size than the most common one go through
prediction's conversion, :func:`convert_images` (resized keeping their aspect ratio, padded
with the background, framed as the digits are), which makes any image look like the training
images (polarity, transparency, aspect ratio, framing) as those records say. Open untrusted
images with
:func:`open_image` (PNG and JPEG only, at most ``MAX_IMAGE_PIXELS`` pixels, checked before
decoding).

**Limits.** Every size is checked from headers before anything large is allocated, and again
while reading (a header can lie): see the ``MAX_*`` defaults below, overridable per call.
Problems raise :class:`~cnn_core.errors.DatasetError` with a message that says what is wrong and
how to fix it; three subclasses tell the kinds apart: ``DatasetTooLarge`` (over a limit),
``UnsupportedFormat`` (bytes of no accepted format) and ``CorruptFile`` (truncated or corrupt).

One module per job: :mod:`.dataset` (the Dataset type), :mod:`.limits`, :mod:`.sources`
(reading bounded bytes), :mod:`.checks` (labels, shapes, scaling), :mod:`.images` (decoding and
conversion, which prediction uses too), :mod:`.framing` (the look of the images), and one
module per format: :mod:`.npz`, :mod:`.idx`, :mod:`.image_zip`; :func:`load_dataset`
recognises the format.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from importlib import resources

from cnn_core.errors import DatasetError, UnsupportedFormat

from .dataset import Dataset, Source
from .idx import _GZIP_MAGIC, _idx_dataset, _read_idx, load_idx
from .image_zip import load_image_zip
from .images import IMAGE_SIGNATURES, convert_images, images_to_array, open_image
from .limits import (
    MAX_CLASSES,
    MAX_DATASET_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_RATIO,
    MAX_ZIP_BYTES,
    MAX_ZIP_ENTRIES,
)
from .npz import load_npz
from .sources import _open_zip, _peek

__all__ = [
    "IMAGE_SIGNATURES",
    "MAX_CLASSES",
    "MAX_DATASET_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_RATIO",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_ENTRIES",
    "Dataset",
    "Source",
    "convert_images",
    "images_to_array",
    "load_dataset",
    "load_idx",
    "load_image_zip",
    "load_mnist_sample",
    "load_npz",
    "open_image",
]


_NPY_MAGIC = b"\x93NUMPY"


_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _is_npz(source: Source) -> bool:
    """Whether a zip holds .npy arrays (an npz) rather than image folders."""
    with _open_zip(source, "the zip file") as zf:
        names = zf.namelist()
    if not names:
        raise DatasetError(
            "the zip file is empty: upload an npz of X and y, or a zip of class folders of images"
        )
    return "X.npy" in names or "y.npy" in names or all(n.endswith(".npy") for n in names)


def load_dataset(
    sources: Sequence[Source],
    *,
    max_bytes: int = MAX_DATASET_BYTES,
    max_entries: int = MAX_ZIP_ENTRIES,
    max_total_bytes: int = MAX_ZIP_BYTES,
    max_ratio: float = MAX_RATIO,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> Dataset:
    """Read one dataset from one file (npz or image zip) or two (IDX images and labels).

    The format is decided from the bytes, never from file names: a zip holding X.npy/y.npy is an
    npz, any other zip an image zip; IDX files (gzipped or not) are paired by their number of
    dimensions, 3 for images and 1 for labels, in either order.
    """
    if isinstance(sources, (bytes, str, os.PathLike)) or hasattr(sources, "read"):
        sources = [sources]
    sources = list(sources)
    if not 1 <= len(sources) <= 2:
        raise DatasetError(
            f"got {len(sources)} files: upload one .npz, one .zip of class "
            f"folders, or two IDX files (images and labels)"
        )
    heads = [_peek(s, 8) for s in sources]
    zips = [h.startswith(_ZIP_MAGICS) for h in heads]
    if any(zips):
        if len(sources) != 1:
            raise DatasetError("an .npz or image .zip is a whole dataset: upload it alone")
        if _is_npz(sources[0]):
            return load_npz(sources[0], max_bytes=max_bytes)
        return load_image_zip(
            sources[0],
            max_entries=max_entries,
            max_total_bytes=max_total_bytes,
            max_ratio=max_ratio,
            max_image_pixels=max_image_pixels,
            max_bytes=max_bytes,
        )
    for head in heads:
        if not (head.startswith(_GZIP_MAGIC) or head[:2] == b"\x00\x00"):
            raise UnsupportedFormat(
                f"a file starting with the bytes {head[:8].hex(' ')} is not a "
                f"dataset: {_unknown_hint(head)}"
            )
    if len(sources) != 2:
        raise DatasetError(
            "an IDX file needs its partner: upload both the images file and the labels file"
        )
    arrays = [_read_idx(s, max_bytes, f"IDX file {i + 1}") for i, s in enumerate(sources)]
    ndims = sorted(a.ndim for a in arrays)
    if ndims != [1, 3]:
        kind = "labels" if ndims[0] == 1 else "images"
        raise DatasetError(
            f"both IDX files hold {kind}: upload one images file and one labels file"
        )
    images, labels = sorted(arrays, key=lambda a: -a.ndim)
    return _idx_dataset(images, labels)


def _unknown_hint(head: bytes) -> str:
    if head.startswith(_NPY_MAGIC):
        return "a single .npy holds one array; save X and y together with np.savez"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff")):
        return "a single image is not a dataset; zip one folder per class of images"
    return (
        "expected an .npz of X and y, a .zip of class folders of PNG/JPEG images, or MNIST "
        "IDX images and labels files (gzipped or not)"
    )


@functools.cache
def _mnist_sample() -> Dataset:
    """The shipped sample, read and parsed once per process, its arrays made read-only."""
    data = (resources.files("cnn_core") / "data" / "mnist_sample.npz").read_bytes()
    dataset = load_npz(data)
    dataset.pixels.flags.writeable = False
    dataset.y.flags.writeable = False
    return dataset


def load_mnist_sample() -> Dataset:
    """The shipped sample: 2,000 real MNIST digits (200 per class), 1x28x28, classes "0".."9".

    Its uint8 pixels and y are shared by every call and read-only (copy them to change them);
    the class names and preprocessing are each caller's own.
    """
    sample = _mnist_sample()
    return Dataset(
        pixels=sample.pixels,
        y=sample.y,
        class_names=list(sample.class_names),
        preprocessing=dict(sample.preprocessing),
    )
