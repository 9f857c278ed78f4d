"""Admission control: a job is checked against its dataset before it is queued, so a job that
cannot work is refused with a 422 that names the problem instead of failing later."""

from typing import Any

from app.errors import InvalidRequestError
from app.schemas import JobCreate, PresetName
from app.storage.datasets import DatasetMeta
from app.training.worker import validation_count
from cnn_core import ConfigError, build_preset, schedules
from cnn_core.config import normalize, training_bytes

MB = 2**20
WORKER_BASELINE_MB = 400  # address space of a worker before training: Python, NumPy, OpenBLAS


def summarize(config: dict[str, Any], loc: tuple[str, ...] = ("body",)) -> dict[str, Any]:
    """The normalized config's per-layer shapes, parameters and multiply-adds, without
    allocating any weights; a 422 naming the layer that breaks, at `loc` in the request."""
    return _summary(*normalize_at(config, loc))


def normalize_at(config: dict[str, Any], loc: tuple[str, ...]) -> tuple[dict[str, Any], list]:
    """`cnn_core.config.normalize(config)`, its ConfigError a 422 located at the config's
    place `loc` in the request (at the layer, when the error names one of its `layers`)."""
    try:
        return normalize(config)
    except ConfigError as exc:
        where: tuple[str | int, ...] = loc
        if exc.layer is not None and "layers" in config:
            where = (*loc, "layers", exc.layer)
        raise InvalidRequestError(str(exc), where, kind="config_error") from None


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
    loc = ("body", "architecture")
    if isinstance(request.architecture, PresetName):
        config = build_preset(request.architecture.value, dataset.input_shape, n_classes)
    else:  # a config or the seed's lists; the dataset knows the input shape
        config = {"input_shape": dataset.input_shape, **request.architecture.to_config()}
    config_normalized, plans = normalize_at(config, loc)
    summary = _summary(config_normalized, plans)
    if summary["input_shape"] != dataset.input_shape:
        raise InvalidRequestError(
            f"architecture input_shape {summary['input_shape']} does not match dataset "
            f"{dataset.id!r}, whose samples are {dataset.input_shape}: send that shape, or "
            f"leave input_shape out",
            (*loc, "input_shape"),
        )
    if summary["n_classes"] != n_classes:
        raise InvalidRequestError(
            f"the output layer predicts {summary['n_classes']} classes but dataset "
            f"{dataset.id!r} has {n_classes}; give the last dense layer {n_classes} units "
            f"(or 1 sigmoid unit for 2 classes)",
            (*loc, "layers", len(summary["layers"]) - 1) if "layers" in config else loc,
        )
    training = request.training.model_dump()
    # what the schema cannot see: a schedule checked against the epochs (e.g. its warm-up)
    try:
        schedules.get(
            training["lr_schedule"], training["optimizer"]["learning_rate"], training["epochs"]
        )
    except ConfigError as exc:
        raise InvalidRequestError(
            str(exc), ("body", "training", "lr_schedule"), kind="config_error"
        ) from None
    if validation_count(dataset.n_samples, training["validation_split"]) >= dataset.n_samples:
        raise InvalidRequestError(
            f"validation_split {training['validation_split']} leaves no training samples out "
            f"of {dataset.n_samples}",
            ("body", "training", "validation_split"),
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
                f"filters or a smaller dataset",
                ("body", "training", "batch_size"),
            )
    return summary["architecture"], training
