"""cnn-service: train and serve convolutional networks written in vectorized NumPy."""

__version__ = "0.1.0"
