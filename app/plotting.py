"""Images the service draws: the cost curve as the seed's `show_cost` drew it (cost against
iteration), sheets of dataset samples, and the heat map of a confusion matrix.

Strings a user chose (a job's name, a model's, class names) are drawn as plain text
(`parse_math=False`): a job named `$x^$` gets that title, not mathtext that matplotlib fails to
parse.
"""

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from app.storage.jobs import EpochSummary, IterationCost


def cost_curve_png(
    iterations: Sequence[IterationCost],
    epochs: Sequence[EpochSummary],
    learning_rate: float,
    title: str,
) -> bytes:
    """Per-iteration cost, with each epoch's validation cost as markers at its last iteration."""
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    points = [(i.iteration, i.cost) for i in iterations if i.cost is not None]
    if points:
        axes.plot(*zip(*points, strict=True), linewidth=1, label="training cost (per iteration)")
    validation = [(e.last_iteration, e.val_cost) for e in epochs if e.val_cost is not None]
    if validation:
        axes.plot(*zip(*validation, strict=True), "o--", label="validation cost (per epoch)")
    if points or validation:
        axes.legend()
    axes.set_ylabel("Cost")
    axes.set_xlabel("# Iteration")
    axes.set_title(f"{title}\nLearning rate = {learning_rate}", parse_math=False)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def sample_sheet_png(rows: Sequence[np.ndarray], image_scale: float) -> bytes:
    """Samples as one PNG of tiles: `rows[r]` holds row r's samples, each (C, H, W) in the
    dataset's scale (C of 1 or 3); a short row is padded with black tiles. Pixels are divided
    by `image_scale` (how 8-bit images became the dataset's values), so they show as stored."""
    columns = max(len(row) for row in rows)
    c, h, w = rows[0].shape[1:]
    sheet = np.zeros((len(rows), columns, c, h, w), dtype=np.uint8)  # floats one row at a time
    for r, row in enumerate(rows):
        sheet[r, : len(row)] = np.clip(np.rint(row / image_scale), 0, 255)
    # (rows, columns, C, H, W) -> (rows * H, columns * W, C): tiles side by side.
    pixels = sheet.transpose(0, 3, 1, 4, 2).reshape(len(rows) * h, columns * w, c)
    image = Image.fromarray(pixels[:, :, 0] if c == 1 else pixels, "L" if c == 1 else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


MAX_ANNOTATED_CLASSES = 20  # beyond this, counts in the cells would not be legible
MAX_LABELLED_CLASSES = 60


def confusion_matrix_png(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str
) -> bytes:
    """The confusion matrix as a heat map, rows the true class, columns the predicted one.

    Each row is coloured by its share of the row (recall-normalized), so small classes show
    their confusions as clearly as large ones; the cells carry the counts. Class names and the
    title are user strings: drawn as plain text (never mathtext), and shortened.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    side = min(4 + 0.45 * k, 16)
    figure = Figure(figsize=(side + 1.5, side), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= MAX_LABELLED_CLASSES:
        names = [_short(name) for name in classes]
        axes.set_xticks(range(k), names, rotation=90 if k > 10 else 0, parse_math=False)
        axes.set_yticks(range(k), names, parse_math=False)
    if k <= MAX_ANNOTATED_CLASSES:
        for (t, p), count in np.ndenumerate(counts):
            axes.text(
                p,
                t,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shares[t, p] > 0.5 else "black",
            )
    axes.set_xlabel("Predicted class")
    axes.set_ylabel("True class")
    axes.set_title(title, parse_math=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
