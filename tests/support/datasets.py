"""What the tests of `cnn_core.datasets` share: the refusal assertion, the 8-bit scale, labels."""

import numpy as np
import pytest

from cnn_core.errors import DatasetError

BYTE = np.float32(1 / 255)


def assert_refused(match: str, fn, *args, **kwargs) -> DatasetError:
    with pytest.raises(DatasetError, match=match) as excinfo:
        fn(*args, **kwargs)
    return excinfo.value


def labels(n: int, k: int = 3) -> np.ndarray:
    return np.arange(n) % k
