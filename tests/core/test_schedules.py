"""cnn_core.schedules: each schedule's rate per epoch as PyTorch defines it, the plateau's
patience on the validation cost, its state carried across a checkpoint, and bad specs."""

import math

import pytest

from cnn_core import ConfigError, EpochSummary
from cnn_core.schedules import PLATEAU_THRESHOLD, get


def summary(epoch, cost, val_cost=None):
    return EpochSummary(epoch, cost, None, val_cost, None, None)


def rates(schedule, epochs, costs=None):
    """The rate of each epoch, telling the schedule each epoch's cost as fit does."""
    out = []
    for epoch in range(1, epochs + 1):
        out.append(schedule.rate(epoch))
        if costs is not None:
            schedule.epoch_ended(summary(epoch, costs[epoch - 1]))
    return out


def test_no_schedule_keeps_the_optimizers_rate():
    assert rates(get(None, 0.3, 4), 4) == [0.3] * 4


def test_step_multiplies_by_gamma_every_step_size_epochs():
    schedule = get({"name": "step", "step_size": 2, "gamma": 0.5}, 1.0, 5)
    assert rates(schedule, 5) == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert get("step", 1.0, 6).spec() == {"name": "step", "step_size": 5, "gamma": 0.1}


def test_cosine_warms_up_linearly_then_falls_as_half_a_cosine():
    schedule = get({"name": "cosine", "warmup_epochs": 2}, 1.0, 6)
    expected = [1 / 3, 2 / 3] + [(1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert rates(schedule, 6) == pytest.approx(expected, rel=1e-12)
    assert rates(get("cosine", 2.0, 2), 2) == pytest.approx([2.0, 1.0])


def test_plateau_halves_the_rate_after_patience_epochs_without_relative_improvement():
    schedule = get({"name": "plateau", "patience": 1, "factor": 0.5}, 1.0, 7)
    nearly = 1.0 * (1 - PLATEAU_THRESHOLD / 2)  # better, but by less than the threshold
    costs = [1.0, nearly, 1.0, 0.5, 0.6, 0.7, 0.7]
    assert rates(schedule, 7, costs) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_plateau_watches_the_validation_cost_when_there_is_one():
    schedule = get({"name": "plateau", "patience": 0}, 1.0, 3)
    schedule.epoch_ended(summary(1, cost=5.0, val_cost=1.0))
    schedule.epoch_ended(summary(2, cost=0.1, val_cost=2.0))  # training cost better, val worse
    assert schedule.rate(3) == 0.5


def test_plateau_state_continues_exactly_in_a_new_schedule():
    spec, costs = {"name": "plateau", "patience": 1}, [1.0, 1.0, 1.0, 1.0, 0.2, 1.0]
    straight = rates(get(spec, 1.0, 6), 6, costs)
    first = get(spec, 1.0, 6)
    head = rates(first, 3, costs[:3])
    resumed = get(spec, 1.0, 6)
    resumed.load_state(first.state())
    tail = []
    for epoch in range(4, 7):
        tail.append(resumed.rate(epoch))
        resumed.epoch_ended(summary(epoch, costs[epoch - 1]))
    assert head + tail == straight and straight[3] == 0.5
    fresh = get(spec, 1.0, 6)
    fresh.load_state(get(spec, 1.0, 6).state())  # no epoch seen: an infinite best survives
    assert fresh.best == math.inf


@pytest.mark.parametrize(
    "spec, message",
    [
        ("linear", r"lr_schedule must be \{'name': one of step, cosine, plateau, \.\.\.\}"),
        (3, r"lr_schedule must be \{'name'"),
        ({"gamma": 0.5}, r"lr_schedule must be \{'name'"),
        (
            {"name": "step", "size": 2},
            r"^lr_schedule step: unknown field\(s\) \['size'\] \(allowed: step_size, gamma\)$",
        ),
        ({"name": "step", "gamma": 1}, r"lr_schedule step: gamma must be in \(0, 1\), got 1"),
        ({"name": "plateau", "patience": -1}, r"patience must be in \[0, 10000\], got -1"),
        ({"name": "cosine", "warmup_epochs": 2.0}, r"warmup_epochs must be an integer"),
        ({"name": "cosine", "warmup_epochs": 5}, r"warmup_epochs \(5\) must be fewer than"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ConfigError, match=message):
        get(spec, 1.0, 5)
