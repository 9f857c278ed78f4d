"""Write the example images the README sends to a model: a held-out MNIST test digit, a digit
drawn black on white as people draw, and a photo-like colour image. Run from the repo root."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    out = ROOT / "examples"
    out.mkdir(exist_ok=True)
    with np.load(ROOT / "tests" / "data" / "mnist_holdout.npz") as data:
        X, y = data["X"], data["y"]
    Image.fromarray(X[np.flatnonzero(y == 7)[0]]).save(out / "digit7.png")

    drawn = Image.new("L", (240, 320), 255)
    pen = ImageDraw.Draw(drawn)
    pen.arc((50, 30, 190, 160), 200, 90, fill=0, width=20)  # the top bowl of a 3
    pen.arc((40, 150, 200, 300), 270, 160, fill=0, width=20)  # its bottom bowl
    drawn.save(out / "drawn3.png")

    rng = np.random.default_rng(7)
    ink = Image.new("L", (480, 360), 0)
    ImageDraw.Draw(ink).line((150, 70, 330, 70, 220, 300), fill=255, width=28, joint="curve")
    share = np.asarray(ink.filter(ImageFilter.GaussianBlur(3)), dtype=np.float64)[..., None] / 255
    beige, blue = np.array([226, 214, 186]), np.array([38, 62, 168])
    shade = np.linspace(0.92, 1.04, 480)[None, :, None]  # uneven light across the paper
    photo = (beige * (1 - share) + blue * share) * shade + rng.normal(0, 5, (360, 480, 3))
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(out / "photo7.jpg", quality=88)


if __name__ == "__main__":
    main()
