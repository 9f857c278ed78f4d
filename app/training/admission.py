"""Admission control: a job is checked against its dataset before it is queued, so a job that
cannot work is refused with a 422 that names the problem instead of failing later."""

from typing import Any

from app.errors import InvalidRequestError
from app.schemas import Architecture, JobCreate
from app.storage.datasets import DatasetMeta
from app.training.worker import validation_count
from cnn_core import build_preset, schedules
from cnn_core.config import normalize, training_bytes

MB = 2**20
WORKER_BASELINE_MB = 400  # address space of a worker before training: Python, NumPy, OpenBLAS


def summarize(config: dict[str, Any]) -> dict[str, Any]:
    """The normalized config's per-layer shapes, parameters and multiply-adds, without
    allocating any weights; raises ConfigError naming the layer that breaks."""
    return _summary(*normalize(config))


def _summary(normalized: dict[str, Any], plans: list) -> dict[str, Any]:
    output = plans[-1]
    return {
        "architecture": normalized,
        "input_shape": list(normalized["input_shape"]),
        "n_classes": 2 if output.activation == "sigmoid" else output.units,
        "layers": [
            {
                "index": p.index,
                "type": p.type,
                "output_shape": list(p.output_shape),
                "param_count": p.param_count,
                "macs": p.macs,
            }
            for p in plans
        ],
        "param_count": sum(p.param_count for p in plans),
        "macs": sum(p.macs for p in plans),
    }


def admit(
    request: JobCreate, dataset: DatasetMeta, memory_mb: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job's normalized architecture config and training settings, or a 422.

    `memory_mb` is the workers' memory limit (0: none): a job whose estimated need is over it
    is refused now rather than failing with "out of memory" once it runs."""
    n_classes = len(dataset.classes)
    if isinstance(request.architecture, Architecture):
        config = request.architecture.to_config()
    else:
        config = build_preset(request.architecture.value, dataset.input_shape, n_classes)
    normalized, plans = normalize(config)
    summary = _summary(normalized, plans)
    if summary["input_shape"] != dataset.input_shape:
        raise InvalidRequestError(
            f"architecture input_shape {summary['input_shape']} does not match dataset "
            f"{dataset.id!r}, whose samples are {dataset.input_shape}"
        )
    if summary["n_classes"] != n_classes:
        raise InvalidRequestError(
            f"the output layer predicts {summary['n_classes']} classes but dataset "
            f"{dataset.id!r} has {n_classes}; give the last dense layer {n_classes} units "
            f"(or 1 sigmoid unit for 2 classes)"
        )
    training = request.training.model_dump()
    # what the schema cannot see: a schedule checked against the epochs (e.g. its warm-up)
    schedules.get(
        training["lr_schedule"], training["optimizer"]["learning_rate"], training["epochs"]
    )
    if validation_count(dataset.n_samples, training["validation_split"]) >= dataset.n_samples:
        raise InvalidRequestError(
            f"validation_split {training['validation_split']} leaves no training samples out "
            f"of {dataset.n_samples}"
        )
    if memory_mb:
        need = (
            WORKER_BASELINE_MB
            + training_bytes(plans, training["batch_size"], dataset.n_samples) / MB
        )
        if need > memory_mb:
            raise InvalidRequestError(
                f"this job would need about {need:,.0f} MB, over the workers' limit of "
                f"{memory_mb:,} MB (CNN_WORKER_MEMORY_MB): use a smaller batch size, fewer "
                f"filters or a smaller dataset"
            )
    return summary["architecture"], training
