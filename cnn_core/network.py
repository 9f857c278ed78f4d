"""The Network: build from a config, predict, compute gradients, train, save and load.

The public API takes images as (N, C, H, W) and labels as (N,) integers; internally the batch is
the innermost axis (see :mod:`cnn_core.functional`). The loss is the mean over the batch of the
softmax cross-entropy (softmax output) or the binary cross-entropy (one sigmoid unit), computed
from the logits.
"""

import contextlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import config as config_lib
from . import evaluation, parallel, training
from . import functional as F
from . import layers as layers_lib
from .datasets.checks import check_labels
from .errors import ConfigError, DatasetError, ModelFileError
from .files import load_archive, save_archive
from .history import History
from .noise import StepNoise

MODEL_FORMAT, MODEL_VERSION = "cnn_core.model", 1
DTYPES = ("float32", "float64")
PREDICT_BATCH = 512
PARALLEL_PREDICT_MIN = 128  # images; fewer are predicted in one thread (the service's case)
PREDICT_CHUNK_BYTES = 2**22  # a predict chunk's largest layer output, so its arrays stay cached
# Multiply-adds per image below which a batch is predicted in one thread whatever the limit:
# LeNet-5's 0.4M are too few for its kernels to overlap despite the GIL (256 images at a limit
# of 2: 35.5k images/s split over two threads, 51k in one; convnet's 4.7M gain 1.7x from two:
# benchmarks/cpu_time.py).
PARALLEL_PREDICT_MIN_MACS = 10**6

__all__ = ["DTYPES", "History", "Network"]


class Network:
    """A feed-forward CNN built from a config (see :mod:`cnn_core.config`).

    Its state is ``params`` (trained: the optimizer updates them from ``grads``) and
    ``buffers`` (kept with the model but not trained, e.g. running statistics), both named
    ``"{i}.{name}"`` with i the layer's index in ``config["layers"]``. ``train()``/``eval()``
    set the mode :meth:`forward` computes in; :meth:`loss_and_grads` and :meth:`fit` always
    compute in training mode, :meth:`predict`, :meth:`predict_proba` and :meth:`evaluate` in
    evaluation mode.
    """

    def __init__(self, config, seed=0, dtype="float32"):
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.config, self.plans = config_lib.normalize(config)
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.training = False
        self.noise_calls = 0  # training-mode computations outside fit (see next_noise)
        self._first_param_layer = next((i for i, p in enumerate(self.plans) if p.param_count), 0)
        last = len(self.plans) - 1
        self.layers = [layers_lib.build(plan, i == last) for i, plan in enumerate(self.plans)]
        self.layers[self._first_param_layer].need_dx = False
        rng = np.random.default_rng(seed)
        self.params, self.buffers = layers_lib.Parameters(), layers_lib.Parameters()
        for i, layer in enumerate(self.layers):
            layer.params = layer.initial_params(rng, self.dtype)
            layer.buffers = layer.initial_buffers(self.dtype)
            clash = set(layer.params) & set(layer.buffers)
            if clash:
                raise ValueError(f"layer {i}: {sorted(clash)} named both parameter and buffer")
            self.params.update({f"{i}.{key}": a for key, a in layer.params.items()})
            self.buffers.update({f"{i}.{key}": a for key, a in layer.buffers.items()})
        self.metadata = {}

    def replica_layers(self):
        """A fresh layer stack computing with this network's parameter and buffer arrays: what
        a training thread or shard process needs, since one layer object keeps one cache."""
        last = len(self.plans) - 1
        layers = [layers_lib.build(plan, i == last) for i, plan in enumerate(self.plans)]
        layers[self._first_param_layer].need_dx = False
        for mine, theirs in zip(layers, self.layers, strict=True):
            mine.params, mine.buffers = theirs.params, theirs.buffers
        return layers

    def train(self, mode=True):
        """Set training mode (``mode=False``: evaluation mode) for :meth:`forward`."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Set evaluation mode for :meth:`forward`."""
        return self.train(False)

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

    def check_data(self, X, y):
        """``(X, y)`` checked once, before training starts rather than at its first batch: X of
        shape (N, *input_shape), y N integer labels in 0..K-1; a DatasetError otherwise."""
        X = self._check_shape(X)
        return X, self._check_labels(y, len(X))

    def _check_labels(self, y, n):
        return check_labels(y, n, self.n_classes, "y", need_two_classes=False)[0]

    def _forward(self, x, train, layers=None, noise=None):
        """Internal-layout batch -> logits (K, N); ``noise`` keys a training step's draws."""
        for layer in layers or self.layers:
            layer.noise = noise
            x = layer.forward(x, train)
        return x

    def _backward(self, dz, layers=None):
        layers = layers or self.layers
        for layer in reversed(layers[self._first_param_layer :]):
            dz = layer.backward(dz)
        return {f"{i}.{key}": g for i, layer in enumerate(layers) for key, g in layer.grads.items()}

    def shard_step(self, layers, X, y, batch_n, noise=None, augmentation=None):
        """Forward and backward in training mode over one shard of a batch of ``batch_n``
        samples, on the layer stack ``layers`` (``self.layers`` or a :meth:`replica_layers`).

        ``noise`` (a :class:`~cnn_core.noise.StepNoise` for this shard's rows of the batch)
        keys the step's random draws: the dropout masks and, with ``augmentation`` (an
        :class:`~cnn_core.augmentation.Augmentation`), the transforms of the images. Returns
        (the shard's mean cost, its correct predictions, the gradient of the batch's mean loss
        restricted to this shard, and the shard's buffer updates), so shard gradients add up
        to the batch gradient and :meth:`apply_buffer_updates` merges the updates. Nothing of
        the network is changed.
        """
        if noise is None:
            noise = self.next_noise(len(y))
        if augmentation is not None:
            X = augmentation.apply(X, noise)
        z = self._forward(self._to_internal(X), True, layers, noise)
        cost, dz = self._loss(z, y)
        if len(y) != batch_n:
            dz *= dz.dtype.type(len(y) / batch_n)
        grads = self._backward(dz, layers)
        updates = _take_buffer_updates(layers)
        return cost, self._correct(z, y), grads, updates

    def next_noise(self, n):
        """The draws of a training-mode computation outside :meth:`fit`: keyed by the
        network's seed and a count of such computations, so they differ from call to call."""
        self.noise_calls += 1
        return StepNoise(self.seed, self.noise_calls, 0, n, outside_fit=True)

    def apply_buffer_updates(self, updates, weights):
        """Write the buffer updates of shards (a list in shard order, with each shard's sample
        count as its weight) into ``buffers``, merged by each layer's rule: the same numbers
        whatever the order the shards finished in."""
        for name in updates[0]:
            index, key = name.split(".", 1)
            layer = self.layers[int(index)]
            merged = layer.merge_buffer_updates([u[name] for u in updates], weights)
            np.copyto(self.buffers[name], merged, casting="same_kind")

    def _loss(self, z, y):
        if self.output == "sigmoid":
            return F.binary_cross_entropy(z, y)
        return F.softmax_cross_entropy(z, y)

    def _labels(self, z):
        """Logits (K, N) -> (N,) predicted labels (a sigmoid unit predicts 1 above 0.5)."""
        return (z[0] > 0).astype(np.intp) if self.output == "sigmoid" else z.argmax(axis=0)

    def _correct(self, z, y):
        return int(np.count_nonzero(self._labels(z) == y))

    def loss_and_grads(self, X, y):
        """Mean loss over the batch and its gradient for every parameter (same keys as params),
        in training mode; the batch's buffer updates are applied, as a training step does."""
        y = self._check_labels(y, len(self._check_shape(X)))
        loss, _, grads, updates = self.shard_step(self.layers, X, y, len(y))
        if updates:
            self.apply_buffer_updates([updates], [len(y)])
        return loss, grads

    def forward(self, X):
        """(N, C, H, W) -> (N, K) logits in the current mode (see :meth:`train`); in training
        mode the batch's buffer updates are applied."""
        if not self.training:
            return self.logits(X)
        z = self._forward(self._to_internal(X), True, noise=self.next_noise(len(X)))
        for layer in self.layers:
            layer.cache = None  # nothing will flow back
        updates = _take_buffer_updates(self.layers)
        if updates:
            self.apply_buffer_updates([updates], [z.shape[-1]])
        return z.T

    def logits(self, X):
        """(N, C, H, W) -> (N, K) output-layer values before softmax or sigmoid.

        A batch of at least PARALLEL_PREDICT_MIN images is computed by one thread per BLAS
        thread (the limit in force, as for :meth:`fit`), each on an even part of at most
        PREDICT_BATCH images: its kernels are long enough to overlap despite the GIL. A network
        of fewer than PARALLEL_PREDICT_MIN_MACS per image is too short for that, and runs in
        this thread; one thread takes chunks whose largest layer output fits in
        PREDICT_CHUNK_BYTES, so that their arrays stay in cache from layer to layer (smaller
        parts on two threads measured slower: benchmarks/cpu_time.py).
        """
        X = np.asarray(X)
        if len(X) == 0:
            return np.zeros((0, self.plans[-1].units), self.dtype)

        def chunk_logits(chunk):
            return self._forward(self._to_internal(chunk), train=False).T

        if len(X) < PARALLEL_PREDICT_MIN:  # one chunk, this thread: no splitting to pay for
            return np.ascontiguousarray(chunk_logits(X))
        threads = training.blas_threads() if self.macs >= PARALLEL_PREDICT_MIN_MACS else 1
        chunk = self._predict_chunk() if threads == 1 else PREDICT_BATCH
        rounds = -(-len(X) // (threads * chunk))  # rounds of one chunk a thread
        bounds = np.linspace(0, len(X), threads * rounds + 1).astype(int)
        chunks = [X[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        with _one_blas_thread():
            if threads == 1:
                return np.concatenate([chunk_logits(chunk) for chunk in chunks])
            with ThreadPoolExecutor(threads) as pool:
                return np.concatenate(list(pool.map(chunk_logits, chunks)))

    def _predict_chunk(self):
        """Images per prediction chunk: as many as keep the largest layer output within
        PREDICT_CHUNK_BYTES (at least one)."""
        image_bytes = max(math.prod(p.output_shape) for p in self.plans) * self.dtype.itemsize
        return max(1, PREDICT_CHUNK_BYTES // image_bytes)

    def predict_proba(self, X):
        """(N, C, H, W) -> (N, K) class probabilities, or (N, 1) for one sigmoid unit."""
        z = self.logits(X)
        return F.sigmoid(z) if self.output == "sigmoid" else F.softmax(z.T).T

    def predict(self, X):
        """(N, C, H, W) -> (N,) integer labels (a sigmoid unit predicts 1 above 0.5)."""
        return self._labels(self.logits(X).T)

    def evaluate(self, X, y, examples_per_cell=evaluation.EXAMPLES_PER_CELL):
        """Score a labelled dataset in evaluation mode, ``PREDICT_BATCH`` samples at a time
        (each predicted as :meth:`logits` does, on one thread per BLAS thread):
        an :class:`~cnn_core.evaluation.Evaluation` with the mean loss (``cost``), accuracy,
        confusion matrix, per-class precision/recall/F1/support, the most confused pairs and
        up to ``examples_per_cell`` misclassified sample indices per confused pair."""
        y = self._check_labels(y, len(self._check_shape(X)))
        tally = evaluation.Tally(self.n_classes, examples_per_cell)
        for i in range(0, len(X), PREDICT_BATCH):
            z = self.logits(X[i : i + PREDICT_BATCH]).T
            yb = y[i : i + PREDICT_BATCH]
            tally.add(yb, self._labels(z), self._loss(z, yb)[0] * len(yb))
        return tally.result(with_cost=True)

    def to_onnx(self, path):
        """Write the network as an ONNX model in evaluation mode (see
        :mod:`cnn_core.onnx_export`); ``path`` is a file path or a binary file object."""
        from .onnx_export import to_onnx  # onnx is needed by the export only

        to_onnx(self, path)

    # ---------------------------------------------------------------------------- persistence

    def state_dict(self):
        """Every array that defines the model: parameters and buffers, by name (not copies)."""
        return {**self.params, **self.buffers}

    def load_state_dict(self, arrays):
        """Copy arrays into the parameters and buffers, checking names, shapes and values
        before changing anything, so a network is never half-loaded."""
        state = self.state_dict()
        missing, extra = set(state) - set(arrays), set(arrays) - set(state)
        if missing or extra:
            raise ModelFileError(
                f"{'parameter or buffer' if self.buffers else 'parameter'} names differ: "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        for name, current in state.items():
            what = f"{'buffer' if name in self.buffers else 'parameter'} {name}"
            if arrays[name].shape != current.shape:
                raise ModelFileError(
                    f"{what} has shape {arrays[name].shape}, expected {current.shape}"
                )
            if arrays[name].dtype.kind != "f" or not np.isfinite(arrays[name]).all():
                raise ModelFileError(f"{what} must hold finite floats ({arrays[name].dtype})")
        for name, current in state.items():
            np.copyto(current, arrays[name])

    def fit(self, X, y, *args, **kwargs):
        """Train with mini-batch gradient descent; see :func:`cnn_core.training.fit`."""
        return training.fit(self, X, y, *args, **kwargs)

    def save(self, path):
        """Write weights, buffers, config and ``metadata`` to one npz file, atomically."""
        meta = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_VERSION,
            "config": self.config,
            "dtype": self.dtype.name,
            "metadata": self.metadata,
        }
        save_archive(path, self.state_dict(), meta)

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save` (no pickle; format version checked)."""
        arrays, meta = load_archive(path, MODEL_FORMAT, MODEL_VERSION)
        try:
            net = cls(meta["config"], dtype=meta["dtype"])
        except (ConfigError, KeyError) as e:
            raise ModelFileError(f"the model file holds an invalid config: {e}") from None
        net.load_state_dict(arrays)
        net.metadata = meta.get("metadata", {})
        return net


_blas_lock = threading.Lock()
_blas_users = []  # the parallel predictions running, and the one limiter they share


@contextlib.contextmanager
def _one_blas_thread():
    """BLAS limited to one thread while any big-batch prediction runs: each prediction thread
    is one core's worth of work, and a BLAS pool on top of it oversubscribes the cores
    (measured 30x slower on a loaded machine); a small network's chunks, run in one thread,
    are too short for a BLAS pool to pay. threadpoolctl's limit is process-wide, so
    concurrent predictions share one limiter and the last to finish restores the limit."""
    with _blas_lock:
        limiter = _blas_users[0] if _blas_users else parallel.blas_controller().limit(limits=1)
        _blas_users.append(limiter)
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users.pop()
            if not _blas_users:
                limiter.restore_original_limits()


def _take_buffer_updates(layers):
    """The buffer updates the layers' last training forward left, by full name; cleared."""
    updates = {
        f"{i}.{key}": value
        for i, layer in enumerate(layers)
        for key, value in layer.buffer_updates.items()
    }
    for layer in layers:
        layer.buffer_updates = {}
    return updates
