"""Reading a ``.zip`` of one folder per class of images."""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from collections import Counter

import numpy as np

from cnn_core.errors import CorruptFile, DatasetError, DatasetTooLarge

from .checks import _byte_preprocessing, _check_class_names, _check_output_size, check_labels
from .dataset import Dataset, Source
from .framing import record_conventions
from .images import (
    _decoded,
    _image_pixels,
    _is_grayscale,
    _open_image,
    image_pixels_like,
)
from .limits import MAX_DATASET_BYTES, MAX_IMAGE_PIXELS, MAX_RATIO, MAX_ZIP_BYTES, MAX_ZIP_ENTRIES
from .sources import _fmt_bytes, _open_zip

_JUNK_NAMES = ("__MACOSX", "Thumbs.db", "desktop.ini")


_ARCHIVE_MAGICS = (
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!",
    b"\x28\xb5\x2f\xfd",
)


_ARCHIVE_SUFFIXES = (".zip", ".npz", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".7z", ".rar", ".zst")


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _entry_parts(info: zipfile.ZipInfo) -> list[str]:
    """Path components of a zip entry, refusing names and types that could escape or mislead."""
    name = info.filename
    raw = getattr(info, "orig_filename", name)
    if "\\" in raw:
        raise DatasetError(
            f"zip entry {raw!r} uses backslashes: re-create the zip with a tool "
            f"that writes forward slashes"
        )
    if "\x00" in raw:
        raise DatasetError(f"zip entry {raw!r} contains a NUL byte")
    if name.startswith("/") or re.match(r"[A-Za-z]:(/|$)", name):
        raise DatasetError(
            f"zip entry {name!r} has an absolute path: entries must be relative (class/image.png)"
        )
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise DatasetError(
            f"zip entry {name!r} points outside the archive ('..'): re-create "
            f"the zip from the dataset folder"
        )
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise DatasetError(f"zip entry {name!r} is a symbolic link: store the image itself")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DatasetError(f"zip entry {name!r} is a special file, not an image")
    if info.flag_bits & 0x1:
        raise DatasetError(f"zip entry {name!r} is encrypted: upload an unencrypted zip")
    return [p for p in parts if p not in ("", ".")]


def _is_junk(parts: list[str]) -> bool:
    """Files that zip tools add on their own (macOS resource forks, .DS_Store, Thumbs.db)."""
    return any(p.startswith(".") or p in _JUNK_NAMES for p in parts)


def _image_entries(zf: zipfile.ZipFile, max_entries: int) -> list[tuple[str, zipfile.ZipInfo]]:
    """(class name, entry) for every image, sorted; the folder layout checked."""
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise DatasetTooLarge(
            f"the zip holds {len(infos):,} entries, over the limit of "
            f"{max_entries:,}: use fewer images"
        )
    files = []
    for info in infos:
        parts = _entry_parts(info)
        if info.is_dir() or not parts or _is_junk(parts):
            continue
        lower = parts[-1].lower()
        if lower.endswith(_ARCHIVE_SUFFIXES):
            raise DatasetError(
                f"zip entry {info.filename!r} is an archive: nested archives are "
                f"not expanded; put the images themselves in the zip"
            )
        if not lower.endswith(_IMAGE_SUFFIXES):
            raise DatasetError(
                f"zip entry {info.filename!r} is not a PNG or JPEG image: the zip "
                f"must hold only class folders of .png/.jpg images; remove it"
            )
        files.append((parts, info))
    if not files:
        raise DatasetError(
            "the zip holds no images: expected one folder per class of PNG or JPEG images"
        )
    tops = {parts[0] for parts, _ in files}
    if len(tops) == 1 and all(len(parts) >= 3 for parts, _ in files):
        files = [(parts[1:], info) for parts, info in files]  # one top folder around the classes
    for parts, info in files:
        if len(parts) != 2:
            where = "not inside a class folder" if len(parts) < 2 else "nested too deep"
            raise DatasetError(
                f"zip entry {info.filename!r} is {where}: lay the zip out as "
                f"class_name/image.png, one folder per class"
            )
    entries = sorted(
        ((parts[0], info) for parts, info in files), key=lambda e: (e[0], e[1].filename)
    )
    classes = sorted({cls for cls, _ in entries})
    if len(classes) < 2:
        raise DatasetError(
            f"the zip holds a single class folder {classes[0]!r}: a classifier "
            f"needs at least two, one folder per class"
        )
    _check_class_names(classes, "the zip")
    return entries


def _read_entry(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, max_ratio: float, max_total_bytes: int
) -> bytes:
    """The entry's bytes, counting what is really decompressed rather than trusting headers."""
    ratio_limit = int(max_ratio * max(info.compress_size, 1))

    def too_big(size: int) -> DatasetTooLarge:
        if size > ratio_limit:
            return DatasetTooLarge(
                f"zip entry {info.filename!r} expands more than "
                f"{max_ratio:g} times its compressed size "
                f"({info.compress_size:,} bytes): refused as a possible zip "
                f"bomb"
            )
        return DatasetTooLarge(
            f"the zip's images decompress to more than "
            f"{_fmt_bytes(max_total_bytes)}: use fewer or smaller images"
        )

    limit = min(budget, ratio_limit)
    if info.file_size > limit:  # the header alone already says no
        raise too_big(info.file_size)
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)  # the header may lie: stop one byte past the limit
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        zlib.error,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        raise CorruptFile(
            f"zip entry {info.filename!r} cannot be read ({exc}): the zip is "
            f"corrupt or uses an unsupported compression"
        ) from None
    if len(data) > limit:
        raise too_big(len(data))
    return data


def load_image_zip(
    source: Source,
    *,
    max_entries: int = MAX_ZIP_ENTRIES,
    max_total_bytes: int = MAX_ZIP_BYTES,
    max_ratio: float = MAX_RATIO,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_DATASET_BYTES,
) -> Dataset:
    """Read a zip of class folders of PNG/JPEG images; class names are the sorted folder names.

    All images take one shape: 1 channel if every image is grayscale, else 3; the most common
    size (ties: the first, in sorted entry order). Images of that size are taken as they are
    (transparency composited on black), and the conventions (background, framing) recorded
    from them; every other image is converted by prediction's conversion with those records
    (:func:`~cnn_core.datasets.images.image_pixels_like`, never inverted): resized keeping its
    aspect ratio and padded with the background, or framed as the digits are, so the model
    sees at prediction time what it saw in training.
    """
    with _open_zip(source, "the zip file") as zf:
        entries = _image_entries(zf, max_entries)
        raws, sizes, gray = [], [], True
        used = 0
        for _, info in entries:
            data = _read_entry(zf, info, max_total_bytes - used, max_ratio, max_total_bytes)
            used += len(data)
            if data.startswith(_ARCHIVE_MAGICS):
                raise DatasetError(
                    f"zip entry {info.filename!r} is an archive, not an image: "
                    f"nested archives are not expanded"
                )
            img = _open_image(data, max_image_pixels, f"zip entry {info.filename!r}")
            sizes.append(img.size)
            gray = gray and _is_grayscale(img)
            img.close()
            raws.append(data)

    class_names = sorted({cls for cls, _ in entries})
    y = np.searchsorted(class_names, [cls for cls, _ in entries]).astype(np.int64)
    y, _ = check_labels(y, len(y), len(class_names), "the zip")
    (width, height), _ = Counter(sizes).most_common(1)[0]
    shape = (1 if gray else 3, height, width)
    _check_output_size((len(raws), *shape), np.uint8, max_bytes, "the zip's images")
    pixels = np.empty((len(raws), height, width, shape[0]), dtype=np.uint8)
    odd = [i for i, size in enumerate(sizes) if size != (width, height)]
    for i in np.setdiff1d(np.arange(len(raws)), odd):
        pixels[i] = _image_pixels(_decoded(raws[i], max_image_pixels, _what(entries[i])), *shape)
    same = np.delete(pixels, odd, axis=0) if odd else pixels
    prep = _byte_preprocessing("image_zip")
    prep |= record_conventions(same.transpose(0, 3, 1, 2), 1.0)
    for i in odd:  # never inverted: the training images define the polarity
        img = _decoded(raws[i], max_image_pixels, _what(entries[i]))
        pixels[i] = image_pixels_like(img, shape, prep, invert="false")[0]
    return Dataset(
        pixels=np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)),
        y=y,
        class_names=class_names,
        preprocessing=prep,
    )


def _what(entry: tuple[str, zipfile.ZipInfo]) -> str:
    return f"zip entry {entry[1].filename!r}"
