"""The Dataset type that every reader returns, and what a reader accepts as a source."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import BinaryIO, Union

import numpy as np

from cnn_core.errors import DatasetError

Source = Union[str, "os.PathLike[str]", bytes, BinaryIO]


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Images and labels ready for training.

    X: float32 (N, C, H, W), already scaled (see the module docstring); y: int64 (N,) in
    0..K-1; class_names: K names, label i is class_names[i]; preprocessing: the JSON-able
    record of the scaling, which prediction passes to :func:`images_to_array`.
    """

    X: np.ndarray
    y: np.ndarray
    class_names: list[str]
    preprocessing: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.X.ndim != 4 or self.X.dtype != np.float32:
            raise DatasetError(
                f"Dataset.X must be float32 (N, C, H, W), got {self.X.dtype} {self.X.shape}"
            )
        if self.y.shape != (self.X.shape[0],) or self.y.dtype != np.int64:
            raise DatasetError(
                f"Dataset.y must be int64 of shape ({self.X.shape[0]},), got "
                f"{self.y.dtype} {self.y.shape}"
            )
        if len(self.y) and not 0 <= self.y.min() <= self.y.max() < len(self.class_names):
            raise DatasetError(
                f"Dataset.y must lie in 0..{len(self.class_names) - 1}, one label per class name"
            )

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        c, h, w = self.X.shape[1:]
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
