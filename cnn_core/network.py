"""The Network: build from a config, predict, compute gradients, train, save and load.

The public API takes images as (N, C, H, W) and labels as (N,) integers; internally the batch is
the innermost axis (see :mod:`cnn_core.functional`). The loss is the mean over the batch of the
softmax cross-entropy (softmax output) or the binary cross-entropy (one sigmoid unit), computed
from the logits.
"""

import contextlib
import math
import operator
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from . import config as config_lib
from . import functional as F
from . import layers as layers_lib
from . import optimizers, parallel
from .errors import ConfigError, DatasetError, DivergenceError, ModelFileError
from .files import load_archive, save_archive

MODEL_FORMAT, MODEL_VERSION = "cnn_core.model", 1
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "cnn_core.checkpoint", 1
DTYPES = ("float32", "float64")
PREDICT_BATCH = 512


@dataclass
class History:
    """Cost history: one entry per iteration and one summary per epoch."""

    iterations: list = field(default_factory=list)  # {"epoch", "iteration", "cost"}
    epochs: list = field(
        default_factory=list
    )  # {"epoch", "cost", "train_accuracy", "val_cost", "val_accuracy", "seconds"}
    stopped_early: bool = False

    def to_dict(self):
        return {
            "iterations": self.iterations,
            "epochs": self.epochs,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, d):
        return cls(list(d["iterations"]), list(d["epochs"]), bool(d["stopped_early"]))


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


class Network:
    """A feed-forward CNN built from a config (see :mod:`cnn_core.config`)."""

    def __init__(self, config, seed=0, dtype="float32"):
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.config, self.plans = config_lib.normalize(config)
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self._first_param_layer = next((i for i, p in enumerate(self.plans) if p.param_count), 0)
        self.layers = self._build_layers()
        rng = np.random.default_rng(seed)
        self.params = layers_lib.Parameters()
        for i, (plan, layer) in enumerate(zip(self.plans, self.layers, strict=True)):
            layer.params = layers_lib.initial_weights(plan, rng, self.dtype)
            for key, array in layer.params.items():
                self.params[f"{i}.{key}"] = array
        self.metadata = {}

    def _build_layers(self, share_params_with=None):
        """A stack of layer objects; replicas for parallel shards share the parameter arrays."""
        last = len(self.plans) - 1
        layers = [layers_lib.build(plan, is_output=i == last) for i, plan in enumerate(self.plans)]
        layers[self._first_param_layer].need_dx = False
        for mine, theirs in zip(layers, share_params_with or (), strict=False):
            mine.params = theirs.params
        return layers

    @classmethod
    def from_config(cls, config, seed=0, dtype="float32"):
        """Build a network with fresh weights drawn from ``seed``."""
        return cls(config, seed=seed, dtype=dtype)

    # ---------------------------------------------------------------------------- description

    @property
    def input_shape(self):
        return tuple(self.config["input_shape"])

    @property
    def output(self):
        """``"softmax"`` or ``"sigmoid"``: the output layer, which decides the loss."""
        return self.plans[-1].activation

    @property
    def n_classes(self):
        return 2 if self.output == "sigmoid" else self.plans[-1].units

    @property
    def param_count(self):
        return sum(p.param_count for p in self.plans)

    @property
    def macs(self):
        return sum(p.macs for p in self.plans)

    def summary(self):
        """Per layer: index, type, output shape, parameter count and multiply-adds per sample."""
        return [
            {
                "index": p.index,
                "type": p.type,
                "output_shape": list(p.output_shape),
                "param_count": p.param_count,
                "macs": p.macs,
            }
            for p in self.plans
        ]

    def __repr__(self):
        rows = [f"Network(input_shape={list(self.input_shape)}, dtype={self.dtype.name})"]
        for s, spec in zip(self.summary(), self.config["layers"], strict=True):
            args = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "type")
            rows.append(
                f"  {s['index']:>2} {spec['type']}({args}) -> {s['output_shape']}  "
                f"params={s['param_count']:,}"
            )
        rows.append(f"  total params={self.param_count:,}  macs={self.macs:,}")
        return "\n".join(rows)

    # --------------------------------------------------------------------------------- compute

    def _to_internal(self, X):
        """(N, C, H, W) -> contiguous (C, H, W, N) in the network's dtype."""
        X = self._check_shape(X)
        return np.ascontiguousarray(X.transpose(1, 2, 3, 0), dtype=self.dtype)

    def _check_shape(self, X):
        X = np.asarray(X)
        if X.ndim != 4 or X.shape[1:] != self.input_shape:
            raise DatasetError(
                f"input has shape {X.shape}; this network expects "
                f"(N, {', '.join(map(str, self.input_shape))})"
            )
        return X

    def _check_data(self, X, y):
        """Images and labels checked before training starts, not at the first batch."""
        X = self._check_shape(X)
        return X, self._check_labels(y, len(X))

    def _check_labels(self, y, n):
        if n == 0:  # a mean over no samples: a ZeroDivisionError or a NaN loss otherwise
            raise DatasetError("no samples: training and evaluation need at least one image")
        y = np.asarray(y)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(
                f"labels must be {n} integers, got an array of shape {y.shape} and dtype {y.dtype}"
            )
        if n and (y.min() < 0 or y.max() >= self.n_classes):
            raise DatasetError(
                f"labels must lie in 0..{self.n_classes - 1}, got {y.min()}..{y.max()}"
            )
        return y.astype(np.intp)

    def _forward(self, x, train, layers=None):
        """Internal-layout batch -> logits (K, N)."""
        for layer in layers or self.layers:
            x = layer.forward(x, train)
        return x

    def _backward(self, dz, layers=None):
        layers = layers or self.layers
        for layer in reversed(layers[self._first_param_layer :]):
            dz = layer.backward(dz)
        return {f"{i}.{key}": g for i, layer in enumerate(layers) for key, g in layer.grads.items()}

    def _shard_step(self, layers, X, y, batch_n):
        """Forward and backward over one shard of a batch of ``batch_n`` samples.

        Returns (the shard's mean cost, its correct predictions, and the gradient of the batch's
        mean loss restricted to this shard), so shard gradients add up to the batch gradient.
        """
        z = self._forward(self._to_internal(X), True, layers)
        cost, dz = self._loss(z, y)
        if len(y) != batch_n:
            dz *= dz.dtype.type(len(y) / batch_n)
        return cost, self._correct(z, y), self._backward(dz, layers)

    def _train_step(self, X, y, idx, shards, pool):
        """Mean cost, correct count and gradients of the mini-batch ``X[idx]``, ``y[idx]``.

        With ``shards`` > 1 the batch is cut into that many contiguous shards whose gradients
        are summed in a fixed order, computed in parallel by a :class:`~cnn_core.parallel.ShardPool`
        when there is one and one after another otherwise: the numbers depend on the shard
        count, never on timing or on how the shards were run.
        """
        if shards == 1:
            return self._shard_step(self.layers, X[idx], y[idx], len(idx))
        parts = [part for part in np.array_split(idx, shards) if len(part)]
        if pool is not None:
            results = pool.step(parts, len(idx))
        else:
            results = [self._shard_step(self.layers, X[part], y[part], len(idx)) for part in parts]
        grads = results[0][2]
        for _, _, more in results[1:]:
            for name, g in more.items():
                grads[name] += g
        cost = sum(r[0] * len(part) for r, part in zip(results, parts, strict=True)) / len(idx)
        return cost, sum(r[1] for r in results), grads

    def _loss(self, z, y):
        if self.output == "sigmoid":
            return F.binary_cross_entropy(z, y)
        return F.softmax_cross_entropy(z, y)

    def _correct(self, z, y):
        predicted = (z[0] > 0) if self.output == "sigmoid" else z.argmax(axis=0)
        return int(np.count_nonzero(predicted == y))

    def loss_and_grads(self, X, y):
        """Mean loss over the batch and its gradient for every parameter (same keys as params)."""
        x = self._to_internal(X)
        y = self._check_labels(y, x.shape[-1])
        z = self._forward(x, train=True)
        loss, dz = self._loss(z, y)
        return loss, self._backward(dz)

    def logits(self, X):
        """(N, C, H, W) -> (N, K) output-layer values before softmax or sigmoid."""
        X = np.asarray(X)
        chunks = [
            self._forward(self._to_internal(X[i : i + PREDICT_BATCH]), train=False).T
            for i in range(0, len(X), PREDICT_BATCH)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.plans[-1].units), self.dtype)

    def predict_proba(self, X):
        """(N, C, H, W) -> (N, K) class probabilities, or (N, 1) for one sigmoid unit."""
        z = self.logits(X)
        return F.sigmoid(z) if self.output == "sigmoid" else F.softmax(z.T).T

    def predict(self, X):
        """(N, C, H, W) -> (N,) integer labels (a sigmoid unit predicts 1 above 0.5)."""
        z = self.logits(X)
        return (z[:, 0] > 0).astype(np.int64) if self.output == "sigmoid" else z.argmax(axis=1)

    def evaluate(self, X, y):
        """Mean loss and accuracy over a dataset, computed in chunks."""
        y = self._check_labels(y, len(X))
        total = correct = 0.0
        for i in range(0, len(X), PREDICT_BATCH):
            z = self._forward(self._to_internal(X[i : i + PREDICT_BATCH]), train=False)
            yb = y[i : i + PREDICT_BATCH]
            total += self._loss(z, yb)[0] * len(yb)
            correct += self._correct(z, yb)
        return total / len(X), correct / len(X)

    # -------------------------------------------------------------------------------- training

    def fit(
        self,
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
        - Raises DivergenceError when the cost becomes NaN or infinite.
        """
        _check_training_args(epochs, batch_size)
        threads = _blas_threads() if threads is None else threads
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 64:
            raise ConfigError(f"threads must be an integer in 1..64, got {threads!r}")
        seed = operator.index(seed)  # a plain int: it goes into JSON checkpoints
        opt = optimizers.get(optimizer)
        stopping = _EarlyStopping.from_spec(early_stopping)
        X, y = self._check_data(X, y)
        if validation_data is not None:
            Xv, yv = self._check_data(*validation_data)
        rng = np.random.default_rng(seed)
        # Everything the numbers depend on: the shard count changes how gradients are rounded.
        fingerprint = {
            "n_samples": len(X),
            "batch_size": batch_size,
            "seed": seed,
            "optimizer": opt.hyper | {"name": opt.name},
            "threads": threads,
        }
        history, position = History(), _Position(1, rng.bit_generator.state)
        if resume_from is not None:
            history, position = self._restore_checkpoint(resume_from, opt, stopping, fingerprint)
            if history.stopped_early:
                return history
        save = None
        if checkpoint_path is not None:

            def save(position):
                self._write_checkpoint(
                    checkpoint_path, position, opt, stopping, history, fingerprint
                )

        with contextlib.ExitStack() as resources:
            pool = None
            if threads > 1:
                resources.enter_context(threadpool_limits(1, user_api="blas"))
                if parallel.can_fork():
                    pool = resources.enter_context(parallel.ShardPool(self, X, y, threads - 1))
            n = len(X)
            per_epoch = math.ceil(n / batch_size)
            for epoch in range(position.epoch, epochs + 1):
                if position.epoch != epoch:
                    position = _Position(epoch, rng.bit_generator.state)
                rng.bit_generator.state = position.rng_state
                order = rng.permutation(n)
                started = time.perf_counter() - position.seconds
                for b in range(position.next_batch, per_epoch):
                    idx = order[b * batch_size : (b + 1) * batch_size]
                    cost, batch_correct, grads = self._train_step(X, y, idx, threads, pool)
                    iteration = (epoch - 1) * per_epoch + b + 1
                    if not math.isfinite(cost):
                        raise DivergenceError(
                            f"cost became {cost} at epoch {epoch}, iteration {iteration} "
                            f"(learning_rate={opt.hyper['learning_rate']}); "
                            "try a lower learning rate"
                        )
                    opt.step(self.params, grads)
                    position.cost_sum += cost * len(idx)
                    position.correct += batch_correct
                    history.iterations.append(
                        {"epoch": epoch, "iteration": iteration, "cost": cost}
                    )
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
                summary = {
                    "epoch": epoch,
                    "cost": position.cost_sum / n,
                    "train_accuracy": position.correct / n,
                    "val_cost": None,
                    "val_accuracy": None,
                }
                if validation_data is not None:
                    summary["val_cost"], summary["val_accuracy"] = self.evaluate(Xv, yv)
                summary["seconds"] = time.perf_counter() - started
                history.epochs.append(summary)
                stop = stopping is not None and stopping.update(summary, self.params)
                if stop:
                    history.stopped_early = True
                    stopping.restore(self.params)
                if save:
                    save(_Position(epoch + 1, rng.bit_generator.state))
                if (callback and callback({"type": "epoch", **summary})) or stop:
                    break
        return history

    def _write_checkpoint(self, path, position, opt, stopping, history, fingerprint):
        state = opt.state_dict()
        arrays = {f"param/{k}": v for k, v in self.params.items()}
        arrays |= {f"opt/{k}": v for k, v in state["arrays"].items()}
        meta = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "config": self.config,
            "dtype": self.dtype.name,
            "position": asdict(position),
            "optimizer_step": state["t"],
            "history": history.to_dict(),
            "fingerprint": fingerprint,
            "early_stopping": None,
        }
        if stopping is not None:
            meta["early_stopping"] = stopping.state()
            arrays |= {f"best/{k}": v for k, v in (stopping.best_params or {}).items()}
        save_archive(path, arrays, meta)

    def _restore_checkpoint(self, path, opt, stopping, fingerprint):
        arrays, meta = load_archive(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)
        if meta["config"] != self.config or meta["dtype"] != self.dtype.name:
            raise ModelFileError(
                "the checkpoint belongs to a network with another architecture or dtype"
            )
        if meta["fingerprint"] != fingerprint:
            raise ModelFileError(
                f"the checkpoint was made with other training settings ({meta['fingerprint']}); "
                "resume with the same data, batch size, seed, optimizer and threads"
            )
        self._set_params({k[6:]: v for k, v in arrays.items() if k.startswith("param/")})
        opt.load_state_dict(
            {
                "t": meta["optimizer_step"],
                "arrays": {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")},
            }
        )
        if stopping is not None and meta["early_stopping"] is not None:
            best = {k[5:]: v for k, v in arrays.items() if k.startswith("best/")}
            stopping.load_state(meta["early_stopping"], best or None)
        return History.from_dict(meta["history"]), _Position(**meta["position"])

    # ---------------------------------------------------------------------------- persistence

    def _set_params(self, arrays):
        """Copy arrays into the parameters, checking names and shapes."""
        missing, extra = set(self.params) - set(arrays), set(arrays) - set(self.params)
        if missing or extra:
            raise ModelFileError(
                f"parameter names differ: missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        for name, p in self.params.items():
            if arrays[name].shape != p.shape:
                raise ModelFileError(
                    f"parameter {name} has shape {arrays[name].shape}, expected {p.shape}"
                )
            if arrays[name].dtype.kind != "f" or not np.isfinite(arrays[name]).all():
                raise ModelFileError(
                    f"parameter {name} must hold finite floats ({arrays[name].dtype})"
                )
        for name, p in self.params.items():  # all checked first: never half-loaded
            np.copyto(p, arrays[name])

    def save(self, path):
        """Write weights, config and ``metadata`` to one npz file, atomically."""
        meta = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_VERSION,
            "config": self.config,
            "dtype": self.dtype.name,
            "metadata": self.metadata,
        }
        save_archive(path, self.params, meta)

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save` (no pickle; format version checked)."""
        arrays, meta = load_archive(path, MODEL_FORMAT, MODEL_VERSION)
        try:
            net = cls(meta["config"], dtype=meta["dtype"])
        except (ConfigError, KeyError) as e:
            raise ModelFileError(f"the model file holds an invalid config: {e}") from None
        net._set_params(arrays)
        net.metadata = meta.get("metadata", {})
        return net


def _blas_threads():
    """The BLAS thread limit in force (1 when no BLAS library reports one)."""
    counts = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return max(1, min(counts, default=1))


def _check_training_args(epochs, batch_size):
    for name, value, limit in (("epochs", epochs, 10_000), ("batch_size", batch_size, 65_536)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ConfigError(f"{name} must be an integer in 1..{limit}, got {value!r}")


class _EarlyStopping:
    """Patience on the validation cost (or the training cost), keeping the best weights."""

    def __init__(self, patience, min_delta=0.0, restore_best=True):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(
                f"early_stopping.patience must be a positive integer, got {patience!r}"
            )
        if not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta) or min_delta < 0:
            raise ConfigError(
                f"early_stopping.min_delta must be a finite number >= 0, got {min_delta!r}"
            )
        self.patience, self.min_delta, self.restore_best = (
            patience,
            float(min_delta),
            bool(restore_best),
        )
        self.best, self.wait, self.best_params = math.inf, 0, None

    @classmethod
    def from_spec(cls, spec):
        if spec is None:
            return None
        if not isinstance(spec, dict):
            raise ConfigError(
                f"early_stopping must be an object like {{'patience': 3}}, got {spec!r}"
            )
        unknown = set(spec) - {"patience", "min_delta", "restore_best"}
        if unknown:
            raise ConfigError(f"early_stopping: unknown field(s) {sorted(unknown)}")
        return cls(**spec)

    def update(self, summary, params):
        """Record an epoch; True when training should stop."""
        value = summary["val_cost"] if summary["val_cost"] is not None else summary["cost"]
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            if self.restore_best:
                self.best_params = {k: v.copy() for k, v in params.items()}
            return False
        self.wait += 1
        return self.wait >= self.patience

    def restore(self, params):
        if self.restore_best and self.best_params is not None:
            for name, p in params.items():
                np.copyto(p, self.best_params[name])

    def state(self):
        return {"best": self.best if math.isfinite(self.best) else None, "wait": self.wait}

    def load_state(self, state, best_params):
        self.best = math.inf if state["best"] is None else state["best"]
        self.wait, self.best_params = state["wait"], best_params
