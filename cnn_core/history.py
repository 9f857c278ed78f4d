"""The cost history of a training run: one record type per concept, shared by the core, the job
store and the API (which derive their rows and schemas from these fields)."""

from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class IterationCost:
    """The mean cost of one mini-batch; ``iteration`` counts from 1 over the whole run."""

    epoch: int
    iteration: int
    cost: float | None


@dataclass(frozen=True)
class EpochSummary:
    """One epoch: means over its mini-batches (as Keras reports them), the validation cost and
    accuracy (None without validation data), its wall time, the run's iteration number of its
    last mini-batch (how incremental readers line epochs up with iterations), and the learning
    rate it trained with (None in records older than learning-rate schedules)."""

    epoch: int
    cost: float | None
    train_accuracy: float | None
    val_cost: float | None
    val_accuracy: float | None
    seconds: float | None
    last_iteration: int = 0
    learning_rate: float | None = None


EPOCH_METRICS = tuple(f.name for f in fields(EpochSummary) if f.name != "last_iteration")


@dataclass
class History:
    """What :meth:`cnn_core.Network.fit` returns and a checkpoint keeps."""

    iterations: list[IterationCost] = field(default_factory=list)
    epochs: list[EpochSummary] = field(default_factory=list)
    stopped_early: bool = False

    def to_dict(self):
        return {
            "iterations": [asdict(i) for i in self.iterations],
            "epochs": [asdict(e) for e in self.epochs],
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, d):
        return cls(
            [IterationCost(**i) for i in d["iterations"]],
            [EpochSummary(**e) for e in d["epochs"]],
            bool(d["stopped_early"]),
        )
