"""cnn_core: convolutional neural networks in vectorized NumPy.

from cnn_core import Network
net = Network.from_config(config, seed=0)
history = net.fit(X, y, epochs=5, batch_size=64, optimizer={"name": "adam", "learning_rate": 1e-3})
"""

from .errors import CNNError, ConfigError, DatasetError, DivergenceError, ModelFileError
from .history import EpochSummary, History, IterationCost
from .network import Network
from .presets import PRESETS, build_preset

__version__ = "0.1.0"
__all__ = [
    "PRESETS",
    "CNNError",
    "ConfigError",
    "DatasetError",
    "DivergenceError",
    "EpochSummary",
    "History",
    "IterationCost",
    "ModelFileError",
    "Network",
    "__version__",
    "build_preset",
]
