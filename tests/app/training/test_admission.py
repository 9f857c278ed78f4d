"""Admission: a job is checked against its dataset, and the workers' memory, before it queues."""

import pytest

from app.errors import InvalidRequestError
from app.schemas import JobCreate
from app.storage.datasets import DatasetMeta
from app.training.admission import admit, summarize
from tests.support.builders import TINY_ARCHITECTURE

DIGITS = DatasetMeta(
    id="digits",
    name="digits",
    n_samples=300,
    input_shape=[1, 28, 28],
    classes=[str(d) for d in range(10)],
    class_counts=[30] * 10,
    preprocessing={},
    created_at=0.0,
)
WIDE = {
    "input_shape": [1, 28, 28],
    "layers": [
        {"type": "conv", "filters": 64, "kernel_size": 5, "padding": "same", "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
}


def job(architecture: dict | str = "lenet5", **training: object) -> JobCreate:
    return JobCreate.model_validate(
        {"dataset_id": "digits", "architecture": architecture, "training": training}
    )


def test_a_preset_adapts_to_the_dataset_and_settings_get_their_defaults() -> None:
    two_classes = DatasetMeta(**{**vars(DIGITS), "input_shape": [3, 32, 32], "classes": ["a", "b"]})
    architecture, training = admit(job("lenet5"), two_classes)
    assert architecture["input_shape"] == [3, 32, 32]
    assert architecture["layers"][-1] == {
        "type": "dense",
        "units": 1,
        "activation": "sigmoid",
        "init": "glorot",
    }
    assert training["epochs"] == 5 and training["optimizer"]["name"] == "adam"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (job({**TINY_ARCHITECTURE, "input_shape": [1, 32, 32]}), "does not match dataset"),
        (
            job(
                {
                    **TINY_ARCHITECTURE,
                    "layers": [*TINY_ARCHITECTURE["layers"][:-1], {"type": "dense", "units": 4}],
                }
            ),
            "predicts 4 classes but dataset 'digits' has 10",
        ),  # fmt: skip
    ],
    ids=["input shape", "classes"],
)
def test_a_job_that_cannot_work_on_its_dataset_is_refused(
    request_: JobCreate, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        admit(request_, DIGITS)


def test_a_job_over_the_workers_memory_limit_is_refused_and_no_limit_admits_it() -> None:
    with pytest.raises(InvalidRequestError, match=r"over the workers' limit of 512 MB"):
        admit(job(WIDE, batch_size=256), DIGITS, memory_mb=512)
    admit(job(WIDE, batch_size=256), DIGITS, memory_mb=0)
    admit(job("lenet5"), DIGITS, memory_mb=512)


def test_summarize_counts_without_allocating_and_names_the_layer_that_breaks() -> None:
    summary = summarize(TINY_ARCHITECTURE)
    assert [layer["output_shape"] for layer in summary["layers"]] == [[4, 12, 12], [4, 6, 6], [10]]
    assert summary["param_count"] == 4 * 25 + 4 + 144 * 10 + 10 and summary["n_classes"] == 10
    broken = {**TINY_ARCHITECTURE, "input_shape": [1, 4, 4]}
    with pytest.raises(InvalidRequestError, match=r"^layer 0 \(conv\)") as refused:
        summarize(broken, ("body", "architecture"))
    assert refused.value.errors[0]["loc"] == ["body", "architecture", "layers", 0]
    assert refused.value.errors[0]["type"] == "config_error"
