"""The Dataset type that every reader returns, and what a reader accepts as a source."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import BinaryIO, Union

import numpy as np

from cnn_core.errors import DatasetError

from .checks import _scale_pixels

Source = Union[str, "os.PathLike[str]", bytes, BinaryIO]


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Images and labels ready for training.

    pixels: (N, C, H, W) as read and stored: uint8 for 8-bit sources, which the network sees
    multiplied by ``preprocessing["scale"]``, so they take a quarter of the memory and disk of
    floats; float32 for float sources, already the network's input. y: int64 (N,) in 0..K-1;
    class_names: K names, label i is class_names[i]; preprocessing: the JSON-able record of the
    scaling, which prediction passes to :func:`images_to_array`.
    """

    pixels: np.ndarray
    y: np.ndarray
    class_names: list[str]
    preprocessing: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.pixels.ndim != 4 or self.pixels.dtype not in (np.uint8, np.float32):
            raise DatasetError(
                f"Dataset.pixels must be uint8 or float32 (N, C, H, W), got "
                f"{self.pixels.dtype} {self.pixels.shape}"
            )
        if self.pixels.dtype == np.uint8 and not isinstance(
            self.preprocessing.get("scale"), (int, float)
        ):
            raise DatasetError("uint8 Dataset.pixels need a numeric preprocessing['scale']")
        if self.y.shape != (self.pixels.shape[0],) or self.y.dtype != np.int64:
            raise DatasetError(
                f"Dataset.y must be int64 of shape ({self.pixels.shape[0]},), got "
                f"{self.y.dtype} {self.y.shape}"
            )
        if len(self.y) and not 0 <= self.y.min() <= self.y.max() < len(self.class_names):
            raise DatasetError(
                f"Dataset.y must lie in 0..{len(self.class_names) - 1}, one label per class name"
            )

    def inputs(self, index=None) -> np.ndarray:
        """float32 (n, C, H, W): the network's input for the samples at ``index`` (a slice or
        an integer array; all by default), converted from 8-bit pixels only for those samples:
        the same values, bit for bit, as converting the whole dataset and then indexing it."""
        pixels = self.pixels if index is None else self.pixels[index]
        if pixels.dtype == np.uint8:
            return _scale_pixels(pixels, self.preprocessing["scale"])
        return pixels

    @property
    def X(self) -> np.ndarray:
        """float32 (N, C, H, W), the network's input for every sample: for 8-bit pixels a new
        array at each access (keep it in a variable, or use :meth:`inputs` for a part)."""
        return self.inputs()

    @property
    def n_samples(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        c, h, w = self.pixels.shape[1:]
        return int(c), int(h), int(w)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> list[int]:
        """Samples per class, indexed by label."""
        return np.bincount(self.y, minlength=self.n_classes).tolist()

    def __repr__(self) -> str:
        return (
            f"Dataset(n_samples={self.n_samples}, input_shape={self.input_shape}, "
            f"n_classes={self.n_classes})"
        )
