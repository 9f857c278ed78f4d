"""Shards computed by forked helper processes give the numbers of shards computed in turn."""

import os
import signal

import numpy as np
import psutil
import pytest

from cnn_core import Network, optimizers, parallel

CONFIG = {
    "input_shape": [1, 10, 10],
    "layers": [
        {"type": "conv", "filters": 4, "kernel_size": 3, "padding": 1, "activation": "relu"},
        {"type": "maxpool", "pool_size": 2},
        {"type": "dense", "units": 16, "activation": "tanh"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
}


def data():
    rng = np.random.default_rng(2)
    return rng.random((100, 1, 10, 10), dtype=np.float32), rng.integers(0, 3, 100)


def trained(threads, monkeypatch=None, fork=True, **kwargs):
    if monkeypatch is not None:
        monkeypatch.setattr(parallel, "can_fork", lambda: fork)
    X, y = data()
    net = Network.from_config(CONFIG, seed=4)
    history = net.fit(X, y, epochs=2, batch_size=24, seed=1, threads=threads, **kwargs)
    return net, history


@pytest.mark.parametrize("threads", [2, 3])
def test_helper_processes_match_shards_computed_in_turn(monkeypatch, threads):
    forked, forked_history = trained(threads)
    in_turn, in_turn_history = trained(threads, monkeypatch, fork=False)
    for name, value in in_turn.params.items():
        np.testing.assert_array_equal(forked.params[name], value, err_msg=name)
    assert forked_history.iterations == in_turn_history.iterations


@pytest.mark.parametrize("name", list(optimizers.OPTIMIZERS))
@pytest.mark.parametrize("threads", [2, 5])
def test_the_shared_out_optimizer_steps_match_steps_taken_in_turn(monkeypatch, name, threads):
    # 5 processes: the last batch of 4 samples has fewer shards than processes
    runs = []
    for fork in (True, False):
        opt = optimizers.get({"name": name, "weight_decay": 0.01})
        net, _ = trained(threads, monkeypatch, fork=fork, optimizer=opt)
        runs.append((net, opt))
    (forked, forked_opt), (in_turn, in_turn_opt) = runs
    for param, value in in_turn.params.items():
        np.testing.assert_array_equal(forked.params[param], value, err_msg=param)
    assert forked_opt.t == in_turn_opt.t
    assert forked_opt.state.keys() == in_turn_opt.state.keys()
    for key, value in in_turn_opt.state.items():
        np.testing.assert_array_equal(forked_opt.state[key], value, err_msg=key)
        assert forked_opt.state[key].base is None  # its own array again, not the shared memory


def test_shards_follow_the_one_batch_gradient():
    one, _ = trained(1)
    two, _ = trained(2)
    for name, value in one.params.items():
        np.testing.assert_allclose(two.params[name], value, rtol=1e-3, atol=1e-5, err_msg=name)


def children():
    return {child.pid for child in psutil.Process().children()}


def test_fit_keeps_the_parameter_arrays_callers_hold():
    X, y = data()
    others = children()
    net = Network.from_config(CONFIG, seed=4)
    held = dict(net.params)
    before = {name: array.copy() for name, array in held.items()}
    net.fit(X, y, epochs=1, batch_size=24, threads=2)
    assert all(net.params[name] is array for name, array in held.items())
    assert any(not np.array_equal(before[name], array) for name, array in held.items())
    assert children() == others  # the helpers are gone


def test_a_helper_killed_mid_training_fails_the_fit_instead_of_hanging():
    others = children()

    def kill_helpers(event):
        if event["type"] == "iteration" and event["iteration"] == 2:
            for pid in children() - others:
                os.kill(pid, signal.SIGKILL)

    X, y = data()
    net = Network.from_config(CONFIG, seed=4)
    with pytest.raises(RuntimeError, match="helper process died"):
        net.fit(X, y, epochs=2, batch_size=24, threads=2, callback=kill_helpers)
    assert children() == others


def test_a_helper_that_does_not_exit_is_killed_after_the_timeout():
    pid = os.fork()
    if pid == 0:  # a helper stuck in a long computation
        try:
            while True:
                signal.pause()
        finally:
            os._exit(1)
    parallel._wait_or_kill(pid, timeout=0.2)
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(pid, os.WNOHANG)
    assert not psutil.pid_exists(pid)


def test_a_helper_that_exits_is_reaped():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    parallel._wait_or_kill(pid, timeout=5)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
