"""cnn_core.history: a run's history survives JSON (as a checkpoint keeps it), and records older
than a field still load."""

import json

from cnn_core import History, IterationCost, Network
from tests.support.networks import ADAM, TINY, random_data


def test_a_fits_history_survives_json_unchanged():
    X, y = random_data(24)
    history = Network.from_config(TINY).fit(
        X, y, epochs=2, batch_size=8, optimizer=ADAM, validation_data=random_data(6, seed=1)
    )
    assert len(history.iterations) == 6 and [e.epoch for e in history.epochs] == [1, 2]
    again = History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert again == history and again is not history
    assert [e.last_iteration for e in again.epochs] == [3, 6]


def test_a_record_without_the_later_fields_loads_with_their_defaults():
    old = {
        "iterations": [{"epoch": 1, "iteration": 1, "cost": 0.5}],
        "epochs": [
            {
                "epoch": 1,
                "cost": 0.5,
                "train_accuracy": 0.75,
                "val_cost": None,
                "val_accuracy": None,
                "seconds": 0.1,
            }
        ],
        "stopped_early": 0,
    }
    history = History.from_dict(old)
    assert history.iterations == [IterationCost(1, 1, 0.5)]
    assert history.epochs[0].last_iteration == 0 and history.epochs[0].learning_rate is None
    assert history.stopped_early is False
