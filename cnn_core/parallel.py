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
arrays, sent over the pipe). The calling process computes the first shard meanwhile and merges
the buffer updates in shard order. Then the update is shared out too: the optimizer's moments
live in the shared memory as well, and each process sums the shards' gradients (in shard
order) and steps the optimizer over its own range of the flat parameter vector, as the rules
are elementwise. Results are exactly those of computing the shards one after another and
stepping the parameters one by one, whatever the timing. (On the vgg32 benchmark net with 2
processes, 1.1M parameters, the gradient sum and Adam's step had taken 6 of a 70 ms step in the
trainer alone while the helper waited; throwaway timers, README "Shared-out optimizer steps".)

A helper exits when the pool closes, when its pipe breaks (the trainer died, even by kill -9),
and ignores Ctrl-C, which its trainer handles.
"""

import functools
import math
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
    """``helpers`` forked processes computing shards 1..helpers of each mini-batch for ``net``
    and sharing ``optimizer``'s steps."""

    def __init__(self, net, X, y, helpers, optimizer, augmentation=None):
        self.net, self.X, self.y, self.augmentation = net, X, y, augmentation
        self.optimizer = optimizer
        state = net.state_dict()
        self.param_names = list(net.params)
        self.names = self.param_names + list(net.buffers)  # the flat order: parameters first
        self.shapes = {name: state[name].shape for name in self.names}
        self.helpers = helpers
        self.shards = helpers + 1  # those of the last step: a short batch may have fewer
        self.pids, self.pipes = [], []
        # each process steps one range of the flat parameters, cut at cache lines
        n_params, parts = sum(a.size for a in net.params.values()), helpers + 1
        self.ranges = [n_params * k // parts // 16 * 16 for k in range(parts)] + [n_params]

    def _views(self, flat, names):
        sizes = [math.prod(self.shapes[name]) for name in names]
        blocks = _consecutive(flat, sizes)
        return {
            name: block.reshape(self.shapes[name])
            for name, block in zip(names, blocks, strict=True)
        }

    def __enter__(self):
        dtype, n_params = self.net.dtype, self.ranges[-1]
        total = sum(math.prod(shape) for shape in self.shapes.values())
        slots = self.optimizer.slots
        count = total + n_params * (self.helpers + 1 + len(slots))
        self._memory = mmap.mmap(-1, count * dtype.itemsize)
        flat = np.frombuffer(self._memory, dtype=dtype)
        # parameters and buffers, then a gradient per shard, then the optimizer's moments
        blocks = _consecutive(flat, [total] + [n_params] * (self.helpers + 1 + len(slots)))
        state = next(blocks)
        self.params, self.shared = state[:n_params], self._views(state, self.names)
        self.flat_grads = [next(blocks) for _ in range(self.helpers + 1)]
        self.grads = [self._views(g, self.param_names) for g in self.flat_grads]
        self.moments = {slot: next(blocks) for slot in slots}
        self.own = self.net.state_dict()
        for name, view in self.shared.items():
            np.copyto(view, self.own[name])
        self._point_params(self.shared)
        self.own_moments = self._share_moments()
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
        # first: helpers never write once the trainer stops asking
        for name, array in self.own.items():
            np.copyto(array, self.shared[name])
        self._point_params(self.own)
        for key, array in self.own_moments.items():
            np.copyto(array, self.optimizer.state[key])
            self.optimizer.state[key] = array
        # unmapped once no view is left
        self.params = self.shared = self.grads = self.flat_grads = self.moments = None
        self._memory = None
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

    def _share_moments(self):
        """Point the optimizer's moments at views of the shared memory, holding what they
        held; returns its own arrays, keyed as its state, for :meth:`__exit__`."""
        opt, own = self.optimizer, {}
        for slot, flat in self.moments.items():
            for name, view in self._views(flat, self.param_names).items():
                key = f"{slot}/{name}"
                own[key] = opt.moments(name, self.own[name])[slot]
                np.copyto(view, own[key])
                opt.state[key] = view
        return own

    def _serve(self, pipe, helper):
        """The helper's loop, in the forked process."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        layers = self.net.replica_layers()
        grads = self.grads[helper + 1]
        with blas_controller().limit(limits=1):
            while True:
                try:
                    kind, *request = pipe.recv()
                except (EOFError, OSError):
                    return
                try:
                    if kind == "update":
                        self.optimizer.t, self.optimizer.learning_rate, self.shards = request
                        self._update(helper + 1)
                        pipe.send(None)
                        continue
                    idx, batch_n, noise = request
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

        Returns [(cost, correct, None, buffer updates), ...] in shard order; the first is
        computed here. The gradients stay in shared memory for :meth:`update`.
        """
        for pipe, idx, noise in zip(self.pipes, shards[1:], noises[1:], strict=False):
            self._send(pipe, ("shard", idx, batch_n, noise))
        cost, correct, grads, updates = self.net.shard_step(
            self.net.layers,
            self.X[shards[0]],
            self.y[shards[0]],
            batch_n,
            noises[0],
            self.augmentation,
        )
        for name, g in grads.items():
            np.copyto(self.grads[0][name], g)
        results = [(cost, correct, None, updates)]
        for pipe in self.pipes[: len(shards) - 1]:
            cost, correct, updates = self._receive(pipe)
            results.append((cost, correct, None, updates))
        self.shards = len(shards)
        return results

    def update(self):
        """Step the optimizer by the sum of the last :meth:`step`'s shard gradients, each
        process over its range of the parameters."""
        opt = self.optimizer
        opt.t += 1
        for pipe in self.pipes:
            self._send(pipe, ("update", opt.t, opt.learning_rate, self.shards))
        self._update(0)
        for pipe in self.pipes:
            self._receive(pipe)

    def _update(self, part):
        """Sum the shards' gradients over range ``part`` of the flat parameters, in shard
        order, and step the optimizer there."""
        span = slice(self.ranges[part], self.ranges[part + 1])
        g = self.flat_grads[0][span]
        for more in self.flat_grads[1 : self.shards]:
            g += more[span]
        moments = {slot: flat[span] for slot, flat in self.moments.items()}
        self.optimizer.apply(self.params[span], g, moments)

    @staticmethod
    def _send(pipe, message):
        try:
            pipe.send(message)
        except OSError:  # a broken pipe: the helper is gone
            raise RuntimeError("a training helper process died") from None

    @staticmethod
    def _receive(pipe):
        try:
            answer = pipe.recv()
        except (EOFError, OSError):
            raise RuntimeError("a training helper process died") from None
        if isinstance(answer, Exception):
            raise answer
        return answer


def _consecutive(flat, sizes):
    """Consecutive slices of the 1-D array ``flat``, of ``sizes``."""
    start = 0
    for size in sizes:
        yield flat[start : start + size]
        start += size


def _wait_or_kill(pid, timeout):
    """Reap a helper, killing it if it has not exited within ``timeout`` seconds.

    The polls start 0.1 ms apart: a helper exits about a millisecond after its pipe closes,
    and a fixed 5 ms poll cost every ``fit`` on two threads 5 ms (LeNet-5's epoch takes 0.35 s).
    """
    deadline = time.monotonic() + timeout
    pause = 0.0001
    try:
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
            time.sleep(pause)
            pause = min(2 * pause, 0.005)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped already, e.g. with SIGCHLD ignored
        pass
