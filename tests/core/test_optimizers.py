"""Optimizers: each update rule on a hand-computed example, state round trips, validation.

The example: p0 = [1, -2], then gradients g1 = [0.5, -1] and g2 = [-0.5, 2], learning rate 0.1.
"""

import copy
import io

import numpy as np
import pytest

from cnn_core import ConfigError, optimizers
from cnn_core.optimizers import OPTIMIZERS

G1, G2 = np.array([0.5, -1.0]), np.array([-0.5, 2.0])


def run(spec, grads=(G1, G2)):
    """Parameters after each step, starting from p0 = [1, -2]."""
    opt = optimizers.get(spec)
    params = {"p": np.array([1.0, -2.0])}
    out = []
    for g in grads:
        opt.step(params, {"p": g})
        out.append(params["p"].copy())
    return out


def test_sgd_known_values():
    p1, p2 = run({"name": "sgd", "learning_rate": 0.1})
    np.testing.assert_allclose(p1, [1 - 0.05, -2 + 0.1], rtol=1e-15)
    np.testing.assert_allclose(p2, [0.95 + 0.05, -1.9 - 0.2], rtol=1e-15)


def test_momentum_known_values():
    # v1 = 0.1 g1 = [0.05, -0.1]           p1 = p0 - 0.1 v1 = [0.995, -1.99]
    # v2 = 0.9 v1 + 0.1 g2 = [-0.005, 0.11] p2 = p1 - 0.1 v2 = [0.9955, -2.001]
    p1, p2 = run({"name": "momentum", "learning_rate": 0.1, "beta": 0.9})
    np.testing.assert_allclose(p1, [0.995, -1.99], rtol=1e-14)
    np.testing.assert_allclose(p2, [0.9955, -2.001], rtol=1e-14)


def test_rmsprop_known_values():
    # s1 = 0.1 g1^2 = [0.025, 0.1]: p1 = p0 - 0.1 g1 / sqrt(s1) = [1 - 0.05/0.158114, -2 + 0.316228]
    # s2 = 0.9 s1 + 0.1 g2^2 = [0.0475, 0.49]: p2 = p1 - 0.1 g2 / sqrt(s2)
    # (epsilon 1e-12 keeps these 9-digit hand values exact; the next test covers epsilon)
    p1, p2 = run({"name": "rmsprop", "learning_rate": 0.1, "beta": 0.9, "epsilon": 1e-12})
    np.testing.assert_allclose(p1, [0.683772234, -1.683772234], rtol=1e-9)
    np.testing.assert_allclose(
        p2, [0.683772234 + 0.229415734, -1.683772234 - 0.285714286], rtol=1e-9
    )


def test_rmsprop_epsilon_is_added_to_the_root():
    # g = 0 with s = 0 must not divide by zero; with g tiny, epsilon dominates the denominator
    (p1,) = run(
        {"name": "rmsprop", "learning_rate": 0.1, "beta": 0.5, "epsilon": 0.5},
        grads=[np.array([0.0, 1.0])],
    )
    # p -= 0.1 * g / (sqrt(0.5 g^2) + 0.5)
    np.testing.assert_allclose(p1, [1.0, -2 - 0.1 / (np.sqrt(0.5) + 0.5)], rtol=1e-14)


def test_adam_known_values():
    # step 1 is bias-corrected to m_hat = g, v_hat = g^2: p1 = p0 - 0.1 * sign(g1)
    # step 2: m2 = [-0.005, 0.11], v2 = [0.00049975, 0.004999];
    #   m_hat = m2 / 0.19, v_hat = v2 / 0.001999 = [0.25, 2.5007504]
    #   p2 = p1 - 0.1 m_hat / sqrt(v_hat) = [0.9 + 0.0052631579, -1.9 - 0.0366103527]
    p1, p2 = run(
        {"name": "adam", "learning_rate": 0.1, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-12}
    )
    np.testing.assert_allclose(p1, [0.9, -1.9], rtol=1e-11)
    np.testing.assert_allclose(p2, [0.9052631579, -1.9366103527], rtol=1e-10)


def test_adam_epsilon_is_added_to_the_corrected_root():
    # step 1: p -= 0.1 * g / (|g| + 0.5) = [1 - 0.05, -2 + 0.1/1.5]
    (p1,) = run({"name": "adam", "learning_rate": 0.1, "epsilon": 0.5}, grads=[G1])
    np.testing.assert_allclose(p1, [0.95, -2 + 0.1 / 1.5], rtol=1e-14)


def test_adam_step_count_and_state_slots():
    opt = optimizers.get("adam")
    params = {"0.W": np.zeros((2, 3)), "0.b": np.zeros(2)}
    for _ in range(3):
        opt.step(params, {"0.W": np.ones((2, 3)), "0.b": np.ones(2)})
    state = opt.state_dict()
    assert state["name"] == "adam" and state["t"] == 3
    assert sorted(state["arrays"]) == ["m/0.W", "m/0.b", "v/0.W", "v/0.b"]
    np.testing.assert_allclose(state["arrays"]["m/0.b"], 1 - 0.9**3)  # a sum of a geometric series


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_updates_keep_the_dtype_and_the_array(name, dtype):
    p = np.ones(4, dtype)
    params = {"p": p}
    opt = optimizers.get(name)
    for _ in range(2):
        opt.step(params, {"p": np.full(4, 0.5, dtype)})
    assert params["p"] is p and p.dtype == dtype  # updated in place, never upcast
    assert all(a.dtype == dtype for a in opt.state_dict()["arrays"].values())
    assert np.all(p < 1)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_big_array_steps_in_chunks_as_it_would_whole(monkeypatch, name):
    """Chunked updates (and scratch arrays shared between parameters of other sizes) give
    the bits of one whole-array update; a transposed gradient takes the whole-array path."""
    rng = np.random.default_rng(5)
    shape = (optimizers.UPDATE_CHUNK // 100 + 3, 300)  # three chunks and a bit
    grads = [
        {"big": rng.standard_normal(shape, np.float32), "small": rng.random(7, np.float32)}
        for _ in range(3)
    ]
    grads[1]["big"] = np.asfortranarray(grads[1]["big"])
    runs = []
    for chunk in (optimizers.UPDATE_CHUNK, 10**9):
        monkeypatch.setattr(optimizers, "UPDATE_CHUNK", chunk)
        opt = optimizers.get({"name": name, "weight_decay": 0.01})
        params = {"big": np.ones(shape, np.float32), "small": np.ones(7, np.float32)}
        for g in grads:
            opt.step(params, g)
        runs.append((params, opt.state))
    (chunked, chunked_state), (whole, whole_state) = runs
    for key in whole:
        assert np.array_equal(chunked[key], whole[key]), key
    for key in whole_state:
        assert np.array_equal(chunked_state[key], whole_state[key]), key
    assert not np.array_equal(whole["big"], 1)


DEFAULTS = {
    "sgd": {"learning_rate": 0.01, "weight_decay": 0.0},
    "momentum": {"learning_rate": 0.01, "beta": 0.9, "weight_decay": 0.0},
    "rmsprop": {"learning_rate": 0.001, "beta": 0.999, "epsilon": 1e-8, "weight_decay": 0.0},
    "adam": {
        "learning_rate": 0.001,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "weight_decay": 0.0,
    },
    "adamw": {
        "learning_rate": 0.001,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "weight_decay": 0.01,
    },
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_get_by_name_or_spec_with_defaults(name):
    by_name = optimizers.get(name)
    assert by_name.name == name and by_name.hyper == DEFAULTS[name]
    spec = {"name": name, "learning_rate": 0.5}
    by_spec = optimizers.get(spec)
    assert by_spec.hyper == {**DEFAULTS[name], "learning_rate": 0.5}
    assert spec == {"name": name, "learning_rate": 0.5}  # the caller's dict is left alone
    assert optimizers.get(by_spec) is by_spec
    assert "learning_rate=0.5" in repr(by_spec)


# ------------------------------------------------------------------------- state round trip


def save_and_load_npz(state):
    """The state as a checkpoint stores it: arrays in an npz, scalars as JSON-able values."""
    buffer = io.BytesIO()
    np.savez(buffer, **state["arrays"])
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    return {"t": int(state["t"]), "arrays": arrays}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_continues_identically(name):
    spec = {"name": name, "learning_rate": 0.05}
    rng = np.random.default_rng(0)
    grads = [{"a": rng.standard_normal((2, 3)), "b": rng.standard_normal(3)} for _ in range(6)]
    start = {"a": rng.standard_normal((2, 3)), "b": rng.standard_normal(3)}

    straight = optimizers.get(spec)
    p_straight = copy.deepcopy(start)
    for g in grads:
        straight.step(p_straight, g)

    first = optimizers.get(spec)
    p_resumed = copy.deepcopy(start)
    for g in grads[:3]:
        first.step(p_resumed, g)
    saved = save_and_load_npz(first.state_dict())
    second = optimizers.get(spec)
    second.load_state_dict(saved)
    assert second.t == 3
    for g in grads[3:]:
        second.step(p_resumed, g)
    for k in start:
        np.testing.assert_array_equal(p_resumed[k], p_straight[k])


def test_loaded_state_is_a_copy():
    opt = optimizers.get({"name": "momentum"})
    params = {"p": np.ones(2)}
    opt.step(params, {"p": np.ones(2)})
    state = copy.deepcopy(opt.state_dict())
    other = optimizers.get({"name": "momentum"})
    other.load_state_dict(state)
    other.step({"p": np.ones(2)}, {"p": np.ones(2)})
    np.testing.assert_allclose(state["arrays"]["v/p"], [0.1, 0.1])  # not mutated by `other`


def test_adam_without_restored_step_count_would_differ():
    """The step count matters: the round trip above is not passing by accident."""
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(3) for _ in range(4)]
    a, b = optimizers.get("adam"), optimizers.get("adam")
    pa, pb = {"p": np.zeros(3)}, {"p": np.zeros(3)}
    for g in grads[:2]:
        a.step(pa, {"p": g})
        b.step(pb, {"p": g})
    state = b.state_dict()
    b.load_state_dict({"t": 0, "arrays": state["arrays"]})
    for g in grads[2:]:
        a.step(pa, {"p": g})
        b.step(pb, {"p": g})
    assert not np.array_equal(pa["p"], pb["p"])


# ----------------------------------------------------------------------------- validation


BAD_HYPER = {
    "lr-zero": ("sgd", {"learning_rate": 0}, r"learning_rate must be in \(0, 10\], got 0"),
    "lr-negative": ("adam", {"learning_rate": -0.1}, r"learning_rate must be in \(0, 10\]"),
    "lr-huge": ("momentum", {"learning_rate": 11}, r"learning_rate must be in \(0, 10\]"),
    "lr-nan": ("sgd", {"learning_rate": float("nan")}, r"learning_rate must be a finite number"),
    "lr-inf": ("sgd", {"learning_rate": float("inf")}, r"learning_rate must be a finite number"),
    "lr-string": ("sgd", {"learning_rate": "0.1"}, r"learning_rate must be a finite number"),
    "lr-bool": ("sgd", {"learning_rate": True}, r"learning_rate must be a finite number"),
    "beta-one": (
        "momentum",
        {"beta": 1.0},
        r"optimizer momentum: beta must be in \[0, 1\), got 1.0",
    ),
    "beta-negative": ("rmsprop", {"beta": -0.1}, r"beta must be in \[0, 1\)"),
    "beta1-one": ("adam", {"beta1": 1}, r"beta1 must be in \[0, 1\)"),
    "beta2-above-one": ("adam", {"beta2": 1.5}, r"beta2 must be in \[0, 1\)"),
    "epsilon-zero": ("adam", {"epsilon": 0}, r"epsilon must be in \(0, 1\]"),
    "epsilon-negative": ("rmsprop", {"epsilon": -1e-8}, r"epsilon must be in \(0, 1\]"),
    "unknown-setting": (
        "sgd",
        {"momentum": 0.9},
        r"optimizer sgd: unknown field\(s\) \['momentum'\] "
        r"\(allowed: learning_rate, weight_decay\)",
    ),
    "adam-beta-not-beta1": ("adam", {"beta": 0.9}, r"unknown field\(s\) \['beta'\]"),
}


@pytest.mark.parametrize("name, hyper, pattern", BAD_HYPER.values(), ids=BAD_HYPER.keys())
def test_bad_hyperparameters(name, hyper, pattern):
    with pytest.raises(ConfigError, match=pattern):
        optimizers.get({"name": name, **hyper})


@pytest.mark.parametrize(
    "spec, pattern",
    [
        (
            "nesterov",
            r"unknown optimizer 'nesterov' \(expected one of sgd, momentum, rmsprop, adam, adamw\)",
        ),
        ({"learning_rate": 0.1}, r"optimizer must be a name or"),
        (42, r"optimizer must be a name or"),
        (None, r"optimizer must be a name or"),
    ],
    ids=["unknown-name", "no-name", "number", "none"],
)
def test_bad_optimizer_spec(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        optimizers.get(spec)


def test_boundary_values_are_accepted():
    optimizers.get({"name": "momentum", "learning_rate": 10, "beta": 0})
    optimizers.get({"name": "adam", "epsilon": 1, "beta1": 0.0, "beta2": 0.999999})
