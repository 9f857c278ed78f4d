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

from dataclasses import asdict, dataclass, fields

import numpy as np

from .errors import ConfigError
from .noise import AUGMENTATION_STREAM
from .specs import check_fields

MAX_SHIFT, MAX_ROTATE = 64, 180


@dataclass(frozen=True)
class Augmentation:
    shift: int = 0
    rotate: float = 0.0
    flip: bool = False

    @classmethod
    def from_spec(cls, spec):
        """None for no augmentation (None, or every transform off), else an Augmentation."""
        if spec is None:
            return None
        check_fields(
            spec,
            "augmentation",
            [f.name for f in fields(cls)],
            example={"shift": 2, "rotate": 10},
        )
        shift, rotate, flip = spec.get("shift", 0), spec.get("rotate", 0), spec.get("flip", False)
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= MAX_SHIFT:
            raise ConfigError(f"augmentation.shift must be pixels in 0..{MAX_SHIFT}, got {shift!r}")
        if (
            isinstance(rotate, bool)
            or not isinstance(rotate, (int, float))
            or not 0 <= rotate <= MAX_ROTATE
        ):
            raise ConfigError(
                f"augmentation.rotate must be degrees in 0..{MAX_ROTATE}, got {rotate!r}"
            )
        if not isinstance(flip, bool):
            raise ConfigError(f"augmentation.flip must be true or false, got {flip!r}")
        augmentation = cls(shift, float(rotate), flip)
        return augmentation if (shift or rotate or flip) else None

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
