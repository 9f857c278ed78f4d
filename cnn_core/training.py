"""Training: mini-batch gradient descent over a :class:`~cnn_core.network.Network`, with early
stopping, checkpoints that resume bit-exactly, and mini-batches sharded over CPU threads.

A checkpoint holds everything the numbers depend on: parameters and buffers, optimizer state,
the learning-rate schedule's state, the shuffling generator's state, the position within the
epoch, the early-stopping state (with its best parameters and buffers) and the history so far.
Dropout masks and augmentations need no state: they are keyed by the seed and the iteration
(:mod:`cnn_core.noise`).
"""

import contextlib
import math
import operator
import time
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from . import config as config_lib
from . import optimizers, parallel, schedules
from .augmentation import Augmentation
from .errors import ConfigError, DivergenceError, ModelFileError
from .files import load_archive, save_archive
from .history import EpochSummary, History, IterationCost
from .noise import StepNoise
from .specs import Flag, Hyper, read_settings

CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "cnn_core.checkpoint", 1


@dataclass
class _Position:
    """Where training continues from: an epoch, the generator state before its shuffle, and how
    far into it training got, with the running sums of its summary. A checkpoint stores one."""

    epoch: int
    rng_state: dict
    next_batch: int = 0
    cost_sum: float = 0.0
    correct: int = 0
    seconds: float = 0.0


def fit(
    net,
    X,
    y,
    epochs=5,
    batch_size=64,
    optimizer="adam",
    validation_data=None,
    callback=None,
    seed=0,
    early_stopping=None,
    checkpoint_path=None,
    resume_from=None,
    threads=None,
    lr_schedule=None,
    augmentation=None,
    keep_iterations=True,
):
    """Train with mini-batch gradient descent; returns a :class:`History`.

    - Each epoch shuffles with a generator seeded by ``seed``; the epoch's cost and train
      accuracy are means over its mini-batches (as Keras reports them).
    - ``callback(event)`` gets ``{"type": "iteration", "epoch", "iteration", "cost",
      "accuracy", "iterations_per_epoch"}`` after every step and ``{"type": "epoch", ...}``
      (the epoch summary) after every epoch; returning True stops training.
    - ``early_stopping={"patience": p, "min_delta": d, "restore_best": True}`` stops when the
      validation cost (the training cost without validation data) has not improved by more
      than d for p epochs, then restores the best weights.
    - ``checkpoint_path``: written atomically at each epoch end (before the epoch event) and
      when the callback stops training mid-epoch. ``resume_from``: a checkpoint to continue
      from, with the same arguments; the result is bit-identical to an uninterrupted run.
    - ``threads``: CPU threads to train with (default: the BLAS thread limit, as set e.g. by
      threadpoolctl): each mini-batch is cut into that many shards, computed in parallel by
      this process and ``threads - 1`` forked helpers. Results are deterministic for a given
      thread count.
    - ``lr_schedule``: ``{"name": "step" | "cosine" | "plateau", ...}`` (see
      :mod:`cnn_core.schedules`), stepped per epoch; each epoch's rate is in its summary.
    - ``augmentation``: ``{"shift": pixels, "rotate": degrees, "flip": bool}`` (see
      :mod:`cnn_core.augmentation`), applied to training batches only.
    - ``keep_iterations=False``: the per-iteration costs are neither kept in the returned
      History nor written into checkpoints (the epochs still are), for a caller that records
      them from the callback's events: a checkpoint then stays the same size however long
      the run (with them it grows by ~70 bytes an iteration, rewritten at every epoch end).
    - Raises DivergenceError when the cost becomes NaN or infinite.
    """
    _check_training_args(epochs, batch_size)
    threads = blas_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 64:
        raise ConfigError(f"threads must be an integer in 1..64, got {threads!r}")
    seed = operator.index(seed)  # a plain int: it goes into JSON checkpoints
    opt = optimizers.get(optimizer)
    schedule = schedules.get(lr_schedule, opt.hyper["learning_rate"], epochs)
    augment = Augmentation.from_spec(augmentation)
    stopping = EarlyStopping.from_spec(early_stopping)
    X, y = net.check_data(X, y)
    if validation_data is not None:
        Xv, yv = net.check_data(*validation_data)
    rng = np.random.default_rng(seed)
    # Everything the numbers depend on: the shard count changes how gradients are rounded.
    fingerprint = {
        "n_samples": len(X),
        "batch_size": batch_size,
        "seed": seed,
        "optimizer": opt.hyper | {"name": opt.name},
        "threads": threads,
        "lr_schedule": schedule.spec(),
        "augmentation": augment and augment.spec(),
    }
    history, position = History(), _Position(1, rng.bit_generator.state)
    if resume_from is not None:
        history, position = _restore_checkpoint(
            net, resume_from, opt, schedule, stopping, fingerprint
        )
        if history.stopped_early:
            return history
    save = None
    if checkpoint_path is not None:

        def save(position):
            _write_checkpoint(
                net, checkpoint_path, position, opt, schedule, stopping, history, fingerprint
            )

    with contextlib.ExitStack() as resources:
        pool = None
        # one BLAS thread per shard process: `threads` is the total
        resources.enter_context(parallel.blas_controller().limit(limits=1))
        if threads > 1 and parallel.can_fork():
            pool = resources.enter_context(parallel.ShardPool(net, X, y, threads - 1, opt, augment))
        n = len(X)
        per_epoch = math.ceil(n / batch_size)
        for epoch in range(position.epoch, epochs + 1):
            if position.epoch != epoch:
                position = _Position(epoch, rng.bit_generator.state)
            rng.bit_generator.state = position.rng_state
            order = rng.permutation(n)
            opt.learning_rate = schedule.rate(epoch)
            started = time.perf_counter() - position.seconds
            for b in range(position.next_batch, per_epoch):
                idx = order[b * batch_size : (b + 1) * batch_size]
                iteration = (epoch - 1) * per_epoch + b + 1
                noise = StepNoise(seed, iteration, 0, len(idx))
                cost, batch_correct, grads = train_step(
                    net, X, y, idx, threads, pool, noise, augment
                )
                if not math.isfinite(cost):
                    raise DivergenceError(
                        f"cost became {cost} at epoch {epoch}, iteration {iteration} "
                        f"(learning_rate={opt.learning_rate:g}); "
                        "try a lower learning rate"
                    )
                if pool is None:
                    opt.step(net.params, grads)
                else:  # the shards' gradients are in the pool, which shares out the step
                    pool.update()
                position.cost_sum += cost * len(idx)
                position.correct += batch_correct
                if keep_iterations:
                    history.iterations.append(IterationCost(epoch, iteration, cost))
                event = {
                    "type": "iteration",
                    "epoch": epoch,
                    "iteration": iteration,
                    "cost": cost,
                    "accuracy": batch_correct / len(idx),
                    "iterations_per_epoch": per_epoch,
                }
                if callback and callback(event):
                    if save:
                        position.next_batch, position.seconds = (
                            b + 1,
                            time.perf_counter() - started,
                        )
                        save(position)
                    return history
            val_cost = val_accuracy = None
            if validation_data is not None:
                scores = net.evaluate(Xv, yv, examples_per_cell=0)
                val_cost, val_accuracy = scores.cost, scores.accuracy
            summary = EpochSummary(
                epoch=epoch,
                cost=position.cost_sum / n,
                train_accuracy=position.correct / n,
                val_cost=val_cost,
                val_accuracy=val_accuracy,
                seconds=time.perf_counter() - started,
                last_iteration=epoch * per_epoch,
                learning_rate=opt.learning_rate,
            )
            history.epochs.append(summary)
            schedule.epoch_ended(summary)
            stop = stopping is not None and stopping.update(summary, net.state_dict())
            if stop:
                history.stopped_early = True
                stopping.restore(net.state_dict())
            if save:
                save(_Position(epoch + 1, rng.bit_generator.state))
            if (callback and callback({"type": "epoch", **asdict(summary)})) or stop:
                break
    return history


def _write_checkpoint(net, path, position, opt, schedule, stopping, history, fingerprint):
    state = opt.state_dict()
    arrays = {f"param/{k}": v for k, v in net.params.items()}
    arrays |= {f"buffer/{k}": v for k, v in net.buffers.items()}
    arrays |= {f"opt/{k}": v for k, v in state["arrays"].items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": net.config,
        "dtype": net.dtype.name,
        "position": asdict(position),
        "optimizer_step": state["t"],
        "schedule": schedule.state(),
        "history": history.to_dict(),
        "fingerprint": fingerprint,
        "early_stopping": None,
    }
    if stopping is not None:
        meta["early_stopping"] = stopping.state()
        arrays |= {f"best/{k}": v for k, v in (stopping.best_params or {}).items()}
    save_archive(path, arrays, meta)


def _normalized(config):
    """A checkpoint's config as this version normalizes it (older files lack fields added
    since, such as ``init``), or None if it is no longer valid."""
    try:
        return config_lib.normalize(config)[0]
    except ConfigError:
        return None


def _restore_checkpoint(net, path, opt, schedule, stopping, fingerprint):
    arrays, meta = load_archive(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)
    if _normalized(meta["config"]) != net.config or meta["dtype"] != net.dtype.name:
        raise ModelFileError(
            "the checkpoint belongs to a network with another architecture or dtype"
        )
    if meta["fingerprint"] != fingerprint:
        raise ModelFileError(
            f"the checkpoint was made with other training settings ({meta['fingerprint']}); "
            "resume with the same data, batch size, seed, optimizer, schedule, augmentation "
            "and threads"
        )
    net.load_state_dict(
        {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(("param/", "buffer/"))}
    )
    opt.load_state_dict(
        {
            "t": meta["optimizer_step"],
            "arrays": {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")},
        }
    )
    schedule.load_state(meta["schedule"])
    if stopping is not None and meta["early_stopping"] is not None:
        best = {k[5:]: v for k, v in arrays.items() if k.startswith("best/")}
        stopping.load_state(meta["early_stopping"], best or None)
    return History.from_dict(meta["history"]), _Position(**meta["position"])


def train_step(net, X, y, idx, shards, pool, noise=None, augmentation=None):
    """Mean cost, correct count and gradients of the mini-batch ``X[idx]``, ``y[idx]``; the
    batch's buffer updates are applied to ``net``. ``noise`` keys the step's random draws
    (dropout, ``augmentation``).

    With ``shards`` > 1 the batch is cut into that many contiguous shards whose gradients are
    summed (and buffer updates merged) in a fixed order, computed in parallel by a
    :class:`~cnn_core.parallel.ShardPool` when there is one and one after another otherwise:
    the numbers depend on the shard count, never on timing or on how the shards were run.
    With a pool the gradients stay in it, for :meth:`~cnn_core.parallel.ShardPool.update`:
    the gradients returned are then None.
    """
    if noise is None:
        noise = net.next_noise(len(idx))
    if shards == 1:
        parts, noises = [idx], [noise.shard(0, len(idx))]
        results = [net.shard_step(net.layers, X[idx], y[idx], len(idx), noises[0], augmentation)]
    else:
        parts = [part for part in np.array_split(idx, shards) if len(part)]
        bounds = np.cumsum([0] + [len(p) for p in parts])
        noises = [noise.shard(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        if pool is not None:
            results = pool.step(parts, len(idx), noises)
        else:
            results = [
                net.shard_step(net.layers, X[p], y[p], len(idx), k, augmentation)
                for p, k in zip(parts, noises, strict=True)
            ]
    if results[0][3]:
        net.apply_buffer_updates([r[3] for r in results], [len(p) for p in parts])
    if shards == 1:
        return results[0][:3]
    grads = results[0][2]
    if pool is None:
        for _, _, more, _ in results[1:]:
            for name, g in more.items():
                grads[name] += g
    cost = sum(r[0] * len(part) for r, part in zip(results, parts, strict=True)) / len(idx)
    return cost, sum(r[1] for r in results), grads


def blas_threads():
    """The BLAS thread limit in force (1 when no BLAS library reports one)."""
    counts = [lib.num_threads for lib in parallel.blas_controller().lib_controllers]
    return max(1, min(counts, default=1))


def _check_training_args(epochs, batch_size):
    for name, value, limit in (("epochs", epochs, 10_000), ("batch_size", batch_size, 65_536)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ConfigError(f"{name} must be an integer in 1..{limit}, got {value!r}")


class EarlyStopping:
    """Patience on the validation cost (or the training cost), keeping the best weights;
    ``settings`` declares the fields' defaults and bounds, for :meth:`from_spec` and for the
    API's schema."""

    settings: ClassVar[dict] = {
        "patience": Hyper(3, 1, 1000, integer=True),  # fit requires it; the API fills in 3
        "min_delta": Hyper(0.0, 0, 1e6),
        "restore_best": Flag(True),
    }

    def __init__(self, patience, min_delta, restore_best):
        self.patience, self.min_delta, self.restore_best = patience, float(min_delta), restore_best
        self.best, self.wait, self.best_params = math.inf, 0, None

    @classmethod
    def from_spec(cls, spec):
        if spec is None:
            return None
        settings = read_settings(
            spec, "early_stopping", cls.settings, example={"patience": 3}, required=("patience",)
        )
        return cls(**settings)

    def update(self, summary, state):
        """Record an epoch (``state``: the network's parameters and buffers); True when
        training should stop."""
        value = summary.val_cost if summary.val_cost is not None else summary.cost
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            if self.restore_best:
                self.best_params = {k: v.copy() for k, v in state.items()}
            return False
        self.wait += 1
        return self.wait >= self.patience

    def restore(self, state):
        if self.restore_best and self.best_params is not None:
            for name, array in state.items():
                np.copyto(array, self.best_params[name])

    def state(self):
        return {"best": self.best if math.isfinite(self.best) else None, "wait": self.wait}

    def load_state(self, state, best_params):
        self.best = math.inf if state["best"] is None else state["best"]
        self.wait, self.best_params = state["wait"], best_params
