"""Mini-batch shards computed in parallel by forked helper processes.

Why processes and not threads: NumPy releases the GIL inside its kernels, but a training step
is hundreds of kernels separated by Python, and two threads spend their time handing the GIL to
each other. Measured on LeNet-5 (batch 64, 2 cores): two shard threads ran about 1.1x one
thread, two processes about 1.7x.

How: while a :class:`ShardPool` is open, the network's parameters live in an anonymous shared
memory map. Each helper is forked once (so it inherits the training data without a copy),
builds its own layer stack on the shared parameters and buffers, and then for every step
receives its shard's sample indices over a pipe, writes the shard's gradient into its own slice
of shared memory and answers with the shard's cost, correct count and buffer updates (small
arrays, sent over the pipe). The calling process computes the first shard meanwhile, sums the
gradients and merges the buffer updates in shard order, so results are exactly those of
computing the shards one after another, whatever the timing.

A helper exits when the pool closes, when its pipe breaks (the trainer died, even by kill -9),
and ignores Ctrl-C, which its trainer handles.
"""

import functools
import mmap
import os
import signal
import time
from multiprocessing import Pipe

import numpy as np
from threadpoolctl import ThreadpoolController

from . import gemm
from .layers import Parameters


def can_fork():
    return hasattr(os, "fork")


@functools.cache
def blas_controller():
    """threadpoolctl's handle on the BLAS libraries loaded with NumPy, found once: finding them
    walks every library in the process (0.17 ms), which each big-batch prediction paid. A BLAS
    loaded after the first call would not be limited; cnn_core loads none. Forked shard
    processes inherit it, with the libraries at the same addresses. Not the sequential MKL of
    :mod:`cnn_core.gemm`, which reports one thread whatever the limit."""
    controller = ThreadpoolController()
    libraries = [lib for lib in controller.info() if lib["user_api"] == "blas"]
    return controller.select(
        filepath=[lib["filepath"] for lib in libraries if lib["filepath"] != gemm.MKL_PATH]
    )


class ShardPool:
    """``helpers`` forked processes computing shards 1..helpers of each mini-batch for ``net``."""

    def __init__(self, net, X, y, helpers, augmentation=None):
        self.net, self.X, self.y, self.augmentation = net, X, y, augmentation
        state = net.state_dict()
        self.names = list(state)  # parameters first, then buffers
        self.param_names = list(net.params)
        self.shapes = [state[name].shape for name in self.names]
        self.sizes = [state[name].size for name in self.names]
        self.helpers = helpers
        self.pids, self.pipes = [], []

    def _views(self, flat, names):
        views, start = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes, strict=True):
            if name in names:
                views[name] = flat[start : start + size].reshape(shape)
                start += size
        return views

    def __enter__(self):
        dtype, total = self.net.dtype, sum(self.sizes)
        n_params = sum(a.size for a in self.net.params.values())
        self._memory = mmap.mmap(-1, (total + n_params * self.helpers) * dtype.itemsize)
        flat = np.frombuffer(self._memory, dtype=dtype)
        self.shared = self._views(flat[:total], self.names)
        self.grads = [
            self._views(flat[total + n_params * h : total + n_params * (h + 1)], self.param_names)
            for h in range(self.helpers)
        ]
        self.own = self.net.state_dict()
        for name, view in self.shared.items():
            np.copyto(view, self.own[name])
        self._point_params(self.shared)
        try:
            for h in range(self.helpers):
                mine, theirs = Pipe()
                pid = os.fork()  # not multiprocessing: it forbids children of daemon workers
                if pid == 0:
                    try:
                        for pipe in (mine, *self.pipes):  # only the trainer may hold those
                            pipe.close()
                        self._serve(theirs, h)
                    finally:
                        os._exit(0)
                theirs.close()
                self.pids.append(pid)
                self.pipes.append(mine)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for name, array in self.own.items():  # first: helpers only ever write gradients
            np.copyto(array, self.shared[name])
        self._point_params(self.own)
        self.shared = self.grads = self._memory = None  # unmapped once no view is left
        for pipe in self.pipes:
            pipe.close()  # the helper sees the pipe break and exits
        for pid in self.pids:
            _wait_or_kill(pid, timeout=5)

    def _point_params(self, arrays):
        """Make the network's parameter and buffer dicts and its layers use ``arrays``."""
        self.net.params = Parameters({n: arrays[n] for n in self.net.params})
        self.net.buffers = Parameters({n: arrays[n] for n in self.net.buffers})
        for i, layer in enumerate(self.net.layers):
            for owned in (layer.params, layer.buffers):
                for key in owned:
                    owned[key] = arrays[f"{i}.{key}"]

    def _serve(self, pipe, helper):
        """The helper's loop, in the forked process."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        layers = self.net.replica_layers()
        grads = self.grads[helper]
        with blas_controller().limit(limits=1):
            while True:
                try:
                    idx, batch_n, noise = pipe.recv()
                except (EOFError, OSError):
                    return
                try:
                    cost, correct, shard_grads, updates = self.net.shard_step(
                        layers, self.X[idx], self.y[idx], batch_n, noise, self.augmentation
                    )
                    for name, g in shard_grads.items():
                        np.copyto(grads[name], g)
                    pipe.send((cost, correct, updates))
                except Exception as exc:  # noqa: BLE001  any failure must reach the trainer, not hang it
                    pipe.send(RuntimeError(f"a training helper process failed: {exc!r}"))
                    return

    def step(self, shards, batch_n, noises):
        """Compute ``shards`` (a list of index arrays, at most helpers + 1) of a mini-batch,
        with ``noises`` the :class:`~cnn_core.noise.StepNoise` of each.

        Returns [(cost, correct, grads, buffer updates), ...] in shard order; the first is
        computed here.
        """
        for pipe, idx, noise in zip(self.pipes, shards[1:], noises[1:], strict=False):
            try:
                pipe.send((idx, batch_n, noise))
            except OSError:  # a broken pipe: the helper is gone
                raise RuntimeError("a training helper process died") from None
        results = [
            self.net.shard_step(
                self.net.layers,
                self.X[shards[0]],
                self.y[shards[0]],
                batch_n,
                noises[0],
                self.augmentation,
            )
        ]
        for h, (pipe, _) in enumerate(zip(self.pipes, shards[1:], strict=False)):
            try:
                answer = pipe.recv()
            except (EOFError, OSError):
                raise RuntimeError("a training helper process died") from None
            if isinstance(answer, Exception):
                raise answer
            cost, correct, updates = answer
            results.append((cost, correct, self.grads[h], updates))
        return results


def _wait_or_kill(pid, timeout):
    """Reap a helper, killing it if it has not exited within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped already, e.g. with SIGCHLD ignored
        pass
