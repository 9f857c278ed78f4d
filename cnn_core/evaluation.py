"""How well a classifier does on labelled data: accuracy, the confusion matrix, per-class
precision, recall, F1 and support, the most confused pairs and a few misclassified samples.

Everything derives from the (K, K) confusion matrix, rows the true class and columns the
predicted one, so a dataset is scored a chunk at a time (:class:`Tally`) in memory that does not
grow with N. A ratio whose denominator is zero (a class never predicted has no precision, a
class absent from the data no recall) is 0, as scikit-learn's ``zero_division=0`` makes it.
"""

from dataclasses import dataclass

import numpy as np

EXAMPLES_PER_CELL = 10
MOST_CONFUSED = 10


def confusion_matrix(y_true, y_pred, n_classes):
    """(K, K) int64 counts: entry (t, p) is the number of samples of class t predicted as p."""
    cells = np.asarray(y_true, np.intp) * n_classes + np.asarray(y_pred, np.intp)
    return np.bincount(cells, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(numerator, denominator):
    out = np.zeros(len(numerator), np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


@dataclass(frozen=True)
class Evaluation:
    """The scores of one dataset. ``precision``, ``recall``, ``f1`` and ``support`` are (K,)
    arrays indexed by label; ``most_confused`` lists (true, predicted, count) off-diagonal cells,
    largest first (ties: by true then predicted label), at most ``MOST_CONFUSED``;
    ``misclassified`` maps an off-diagonal cell (true, predicted) to the indices of its first
    few samples, in dataset order. ``cost`` is the mean loss, or None when only labels were
    scored."""

    n_samples: int
    accuracy: float
    confusion_matrix: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    most_confused: list
    misclassified: dict
    cost: float | None = None

    @classmethod
    def from_confusion(cls, matrix, misclassified=None, cost=None):
        """The scores a confusion matrix implies."""
        matrix = np.asarray(matrix, np.int64)
        correct = np.diag(matrix)
        support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
        precision, recall = _ratio(correct, predicted), _ratio(correct, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        off = matrix.copy()
        np.fill_diagonal(off, 0)
        cells = np.flatnonzero(off)
        order = cells[np.argsort(-off.flat[cells], kind="stable")][:MOST_CONFUSED]
        k = len(matrix)
        n = int(matrix.sum())
        return cls(
            n_samples=n,
            accuracy=float(correct.sum() / n) if n else 0.0,
            confusion_matrix=matrix,
            precision=precision,
            recall=recall,
            f1=f1,
            support=support,
            most_confused=[(int(c // k), int(c % k), int(off.flat[c])) for c in order],
            misclassified=dict(misclassified or {}),
            cost=cost,
        )

    @classmethod
    def from_labels(cls, y_true, y_pred, n_classes, examples_per_cell=EXAMPLES_PER_CELL):
        """Score predicted labels against true ones (both (N,) integers in 0..K-1)."""
        tally = Tally(n_classes, examples_per_cell)
        tally.add(y_true, y_pred)
        return tally.result()

    def to_dict(self, class_names=None):
        """The JSON-able form the service answers (labels index ``classes``)."""
        names = list(class_names) if class_names is not None else None
        names = names or [str(i) for i in range(len(self.confusion_matrix))]
        return {
            "n_samples": self.n_samples,
            "accuracy": self.accuracy,
            "cost": self.cost,
            "classes": names,
            "confusion_matrix": self.confusion_matrix.tolist(),
            "per_class": [
                {
                    "class_name": name,
                    "precision": float(p),
                    "recall": float(r),
                    "f1": float(f),
                    "support": int(s),
                }
                for name, p, r, f, s in zip(
                    names, self.precision, self.recall, self.f1, self.support, strict=True
                )
            ],
            "most_confused": [
                {"true": t, "predicted": p, "count": c} for t, p, c in self.most_confused
            ],
            "misclassified": [
                {"true": t, "predicted": p, "indices": indices}
                for (t, p), indices in sorted(self.misclassified.items())
            ],
        }


class Tally:
    """Accumulates chunks of (true, predicted) labels, and optionally their summed loss, into
    one :class:`Evaluation`; keeps the first ``examples_per_cell`` sample indices of each
    off-diagonal cell. Memory: K*K counts plus at most K*K*examples_per_cell indices."""

    def __init__(self, n_classes, examples_per_cell=EXAMPLES_PER_CELL):
        self.n_classes = n_classes
        self.examples_per_cell = examples_per_cell
        self.matrix = np.zeros((n_classes, n_classes), np.int64)
        self.examples = {}
        self.loss_sum = 0.0
        self.seen = 0

    def add(self, y_true, y_pred, loss_sum=None):
        """Count one chunk: the next ``len(y_true)`` samples of the dataset."""
        y_true, y_pred = np.asarray(y_true, np.intp), np.asarray(y_pred, np.intp)
        self.matrix += confusion_matrix(y_true, y_pred, self.n_classes)
        if loss_sum is not None:
            self.loss_sum += float(loss_sum)
        wrong = np.flatnonzero(y_true != y_pred)
        if self.examples_per_cell and len(wrong):
            cells = y_true[wrong] * self.n_classes + y_pred[wrong]
            order = np.argsort(cells, kind="stable")  # by cell, in dataset order within one
            unique, starts = np.unique(cells[order], return_index=True)
            for cell, start in zip(unique.tolist(), starts.tolist(), strict=True):
                key = divmod(cell, self.n_classes)
                kept = self.examples.setdefault(key, [])
                room = self.examples_per_cell - len(kept)
                run = order[start : start + room]
                kept.extend(int(self.seen + i) for i in wrong[run[cells[run] == cell]])
        self.seen += len(y_true)

    def result(self, with_cost=False):
        """The :class:`Evaluation` of everything added."""
        cost = self.loss_sum / self.seen if with_cost and self.seen else None
        return Evaluation.from_confusion(self.matrix, self.examples, cost)
