"""Every error cnn_core raises on purpose.

CNNError
├── ConfigError       an architecture or training setting that cannot work
├── DatasetError      a dataset file that is malformed, hostile or inconsistent
│   ├── UnsupportedFormat   bytes that are none of the accepted formats
│   ├── CorruptFile         a file of an accepted format whose bytes cannot be decoded
│   └── DatasetTooLarge     over a size limit (bytes, decoded size, ratio, entries, pixels)
├── ModelFileError    a saved model or checkpoint that cannot be loaded
└── DivergenceError   training produced a non-finite cost
"""


class CNNError(Exception):
    """Base class: catching it catches every deliberate cnn_core failure."""


class ConfigError(CNNError, ValueError):
    """Invalid network configuration; the message names the layer and the cause, and `layer`
    is that layer's index in the config's layers (None when no one layer is at fault)."""

    def __init__(self, message: str, *, layer: int | None = None) -> None:
        super().__init__(message)
        self.layer = layer


class DatasetError(CNNError, ValueError):
    """A dataset that cannot be used; the message says what is wrong and how to fix it."""


class UnsupportedFormat(DatasetError):
    """The bytes are none of the accepted formats (decided from the bytes, never the name)."""


class CorruptFile(DatasetError):
    """A file of an accepted format that is truncated or corrupt, so it cannot be decoded."""


class DatasetTooLarge(DatasetError):
    """Over a size limit: file bytes, decoded array size, decompressed bytes, compression ratio,
    number of entries or pixels per image."""


class ModelFileError(CNNError, ValueError):
    """A model or checkpoint file that is missing, corrupt, or of another format version."""


class DivergenceError(CNNError, ArithmeticError):
    """The training cost became NaN or infinite."""
