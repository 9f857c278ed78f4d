"""Evaluation scores against scikit-learn (a test-only oracle) and against the network itself."""

import numpy as np
import pytest

from cnn_core import DatasetError, Network
from cnn_core.evaluation import MOST_CONFUSED, Evaluation

metrics = pytest.importorskip("sklearn.metrics")

SMALL = {
    "input_shape": [1, 6, 6],
    "layers": [
        {"type": "conv", "filters": 2, "kernel_size": 3, "activation": "relu"},
        {"type": "dense", "units": 4, "activation": "softmax"},
    ],
}


@pytest.mark.parametrize("seed", range(6))
def test_scores_match_scikit_learn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    n = int(rng.integers(1, 200))
    y_true = rng.integers(0, k, n)
    # some classes are never predicted, and some never occur, as real models and data do
    y_pred = rng.choice(rng.permutation(k)[: max(1, k - 2)], n)
    scores = Evaluation.from_labels(y_true, y_pred, k)
    labels = list(range(k))
    np.testing.assert_array_equal(
        scores.confusion_matrix, metrics.confusion_matrix(y_true, y_pred, labels=labels)
    )
    report = metrics.classification_report(
        y_true, y_pred, labels=labels, output_dict=True, zero_division=0
    )
    for label in labels:
        row = report[str(label)]
        assert scores.precision[label] == pytest.approx(row["precision"])
        assert scores.recall[label] == pytest.approx(row["recall"])
        assert scores.f1[label] == pytest.approx(row["f1-score"])
        assert scores.support[label] == row["support"]
    assert scores.accuracy == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    assert scores.n_samples == n


def test_most_confused_pairs_are_the_largest_off_diagonal_cells_in_order():
    rng = np.random.default_rng(3)
    k = 6
    y_true, y_pred = rng.integers(0, k, 500), rng.integers(0, k, 500)
    scores = Evaluation.from_labels(y_true, y_pred, k)
    off = metrics.confusion_matrix(y_true, y_pred, labels=range(k))
    np.fill_diagonal(off, -1)
    expected = sorted(
        ((t, p, off[t, p]) for t in range(k) for p in range(k) if t != p),
        key=lambda cell: (-cell[2], cell[0], cell[1]),
    )[:MOST_CONFUSED]
    assert scores.most_confused == [(int(t), int(p), int(c)) for t, p, c in expected]


def test_a_perfect_score_has_no_confused_pairs():
    y = np.array([0, 1, 2, 2])
    scores = Evaluation.from_labels(y, y, 3)
    assert scores.accuracy == 1.0
    assert scores.most_confused == [] and scores.misclassified == {}
    assert scores.f1.tolist() == [1.0, 1.0, 1.0]


def test_misclassified_indices_are_the_first_of_each_cell_across_chunks():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    net_chunks = Evaluation.from_labels(y_true, y_pred, 3, examples_per_cell=4)
    for (t, p), indices in net_chunks.misclassified.items():
        expected = np.flatnonzero((y_true == t) & (y_pred == p))[:4]
        assert indices == expected.tolist()
    assert len(net_chunks.misclassified) == 6  # every off-diagonal cell of 3 classes occurs


def test_network_evaluate_agrees_with_predict_and_bounds_its_chunks(monkeypatch):
    import cnn_core.network as network_module

    monkeypatch.setattr(network_module, "PREDICT_BATCH", 7)  # many chunks, a ragged last one
    rng = np.random.default_rng(0)
    net = Network.from_config(SMALL, seed=2)
    X, y = rng.standard_normal((50, 1, 6, 6)).astype(np.float32), rng.integers(0, 4, 50)
    scores = net.evaluate(X, y, examples_per_cell=3)
    predicted = net.predict(X)
    np.testing.assert_array_equal(
        scores.confusion_matrix, metrics.confusion_matrix(y, predicted, labels=range(4))
    )
    probabilities = net.predict_proba(X).astype(np.float64)
    assert scores.cost == pytest.approx(-np.log(probabilities[np.arange(50), y]).mean(), rel=1e-5)
    for (t, p), indices in scores.misclassified.items():
        assert indices == np.flatnonzero((y == t) & (predicted == p))[:3].tolist()


def test_evaluate_a_sigmoid_network_thresholds_at_one_half():
    config = {**SMALL, "layers": [*SMALL["layers"][:1], {"type": "dense", "units": 1}]}
    net = Network.from_config(config, seed=0)
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((30, 1, 6, 6)).astype(np.float32), rng.integers(0, 2, 30)
    scores = net.evaluate(X, y)
    assert scores.confusion_matrix.shape == (2, 2)
    predicted = (net.predict_proba(X)[:, 0] > 0.5).astype(int)
    assert scores.accuracy == pytest.approx(np.mean(predicted == y))


def test_evaluate_refuses_wrong_shapes_and_labels():
    net = Network.from_config(SMALL, seed=0)
    X = np.zeros((3, 1, 6, 6), np.float32)
    with pytest.raises(DatasetError, match="expects"):
        net.evaluate(np.zeros((3, 1, 5, 5), np.float32), np.zeros(3, int))
    with pytest.raises(DatasetError, match="0..3"):
        net.evaluate(X, np.array([0, 1, 4]))


def test_to_dict_names_every_field_the_service_answers():
    scores = Evaluation.from_labels(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
    out = scores.to_dict(["cat", "dog"])
    assert out["classes"] == ["cat", "dog"]
    assert out["confusion_matrix"] == [[1, 0], [1, 1]]
    assert out["per_class"][1] == {
        "class_name": "dog",
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    assert out["most_confused"] == [{"true": 1, "predicted": 0, "count": 1}]
    assert out["misclassified"] == [{"true": 1, "predicted": 0, "indices": [1]}]
