"""The cost curve as a PNG, drawn as the seed's `show_cost` drew it: cost against iteration.

The title, the one string a user chose, is drawn as plain text (`parse_math=False`): a job
named `$x^$` gets that title, not mathtext that matplotlib fails to parse.
"""

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
