"""Data augmentation for images, applied on the fly to training batches only.

``{"shift": 2, "rotate": 10, "flip": false}``: each training image is moved by a whole number
of pixels in -shift..shift along each axis (pad with zeros and crop), rotated by an angle drawn
uniformly in [-rotate, rotate] degrees about its centre, and mirrored left-right with
probability 1/2 when ``flip`` is true (off by default: digits must not flip). The three are one
affine map per image, sampled bilinearly with zeros outside the image, for the whole batch at
once (no loop over samples); a zero angle and a whole shift copy pixels exactly.

The draws come from the step's :class:`~cnn_core.noise.StepNoise`: four uniforms per sample,
sample-major, so a resumed run and any shard count transform each image the same way.
"""

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from .noise import AUGMENTATION_STREAM
from .specs import Flag, Hyper, read_settings


@dataclass(frozen=True)
class Augmentation:
    """How far each image may move, turn and mirror; ``settings`` declares each one's default
    and bounds, for :meth:`from_spec` and for the API's schema."""

    settings: ClassVar[dict] = {
        "shift": Hyper(
            0,
            0,
            64,
            integer=True,
            description="Pixels of random shift along each axis (pad with zeros and crop).",
        ),
        "rotate": Hyper(0.0, 0, 180, description="Degrees of random rotation either way."),
        "flip": Flag(False, "Random left-right mirroring (not for digits or text)."),
    }

    shift: int
    rotate: float
    flip: bool

    @classmethod
    def from_spec(cls, spec):
        """None for no augmentation (None, or every transform off), else an Augmentation."""
        if spec is None:
            return None
        values = read_settings(
            spec, "augmentation", cls.settings, example={"shift": 2, "rotate": 10}
        )
        augmentation = cls(values["shift"], float(values["rotate"]), values["flip"])
        return augmentation if any(values.values()) else None

    def spec(self):
        return asdict(self)

    def apply(self, X, noise):
        """Transformed copies of the images X (N, C, H, W), the samples ``noise.rows`` of the
        step's batch."""
        n, c, h, w = X.shape
        u = noise.rng(AUGMENTATION_STREAM).random((noise.stop, 4))[noise.rows]
        angle = np.deg2rad((2 * u[:, 0] - 1) * self.rotate)
        shift = np.floor(u[:, 1:3] * (2 * self.shift + 1)) - self.shift  # (dy, dx)
        flip = (u[:, 3] < 0.5) & self.flip
        return warp(X, angle, shift, flip)


def warp(X, angle, shift, flip):
    """Images X (N, C, H, W) mirrored left-right where ``flip``, rotated by ``angle`` radians
    (clockwise as displayed, rows downwards) about their centre and moved by ``shift`` (N, 2)
    pixels (down, right); bilinear, zeros outside. Each output pixel p samples the input at the
    inverse map ``R(-angle) (p - centre - shift) + centre`` after undoing the flip."""
    n, c, h, w = X.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w), indexing="ij")
    cy, cx = (h - 1) / 2, (w - 1) / 2
    cols = np.where(flip[:, None, None], (w - 1) - cols, cols)  # (N, H, W)
    y = rows[None] - shift[:, 0, None, None] - cy
    x = cols - shift[:, 1, None, None] - cx
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    src_y = cos * y - sin * x + cy
    src_x = sin * y + cos * x + cx
    y0, x0 = np.floor(src_y), np.floor(src_x)
    wy, wx = (src_y - y0).reshape(n, 1, -1), (src_x - x0).reshape(n, 1, -1)
    padded = np.zeros((n, c, h + 2, w + 2), dtype=X.dtype)
    padded[:, :, 1:-1, 1:-1] = X
    flat = padded.reshape(n, c, -1)

    def gather(yy, xx):
        index = (np.clip(yy, -1, h) + 1) * (w + 2) + (np.clip(xx, -1, w) + 1)
        return np.take_along_axis(flat, index.astype(np.intp).reshape(n, 1, -1), axis=2)

    out = (
        gather(y0, x0) * ((1 - wy) * (1 - wx))
        + gather(y0, x0 + 1) * ((1 - wy) * wx)
        + gather(y0 + 1, x0) * (wy * (1 - wx))
        + gather(y0 + 1, x0 + 1) * (wy * wx)
    )
    dtype = X.dtype if X.dtype.kind == "f" else np.float32  # uint8 pixels become floats
    return out.reshape(n, c, h, w).astype(dtype, copy=False)
