"""Size caps on untrusted dataset files, each overridable per call where it is used."""

from __future__ import annotations

MAX_DATASET_BYTES = 512 * 2**20
"""Cap on any file read, any array decoded, and the pixels kept (uint8 or float32, bytes)."""


MAX_ZIP_ENTRIES = 100_000
"""Cap on the number of entries in an image zip."""


MAX_ZIP_BYTES = 512 * 2**20
"""Cap on the bytes actually decompressed from an image zip, all entries together."""


MAX_RATIO = 200
"""Cap on one zip entry's decompressed size divided by its compressed size."""


MAX_IMAGE_PIXELS = 4096 * 4096
"""Cap on the width * height of one image (and of one sample's H * W)."""


MAX_CLASSES = 10_000
"""Cap on the number of classes."""


_NPY_MAX_HEADER = 10_000


_MAX_NPZ_MEMBERS = 64


_MAX_NAME_CHARS = 200
