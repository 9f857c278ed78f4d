"""Every error cnn_core raises on purpose.

    CNNError
    ├── ConfigError       an architecture or training setting that cannot work
    ├── DatasetError      a dataset file that is malformed, hostile or inconsistent
    ├── ModelFileError    a saved model or checkpoint that cannot be loaded
    └── DivergenceError   training produced a non-finite cost
"""


class CNNError(Exception):
    """Base class: catching it catches every deliberate cnn_core failure."""


class ConfigError(CNNError, ValueError):
    """Invalid network configuration; the message names the layer and the cause."""


class DatasetError(CNNError, ValueError):
    """A dataset that cannot be used; the message says what is wrong and how to fix it."""


class ModelFileError(CNNError, ValueError):
    """A model or checkpoint file that is missing, corrupt, or of another format version."""


class DivergenceError(CNNError, ArithmeticError):
    """The training cost became NaN or infinite."""
