"""Upload, list, describe and delete datasets."""

from datetime import UTC, datetime
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from app.deps import DatasetDep, DatasetStoreDep, RunnerDep, SettingsDep
from app.errors import ConflictError, InvalidRequestError
from app.ids import new_id
from app.openapi import location_header
from app.plotting import sample_sheet_png
from app.schemas import MAX_POSITION, Dataset, DatasetList, error_responses
from app.storage.datasets import DatasetMeta
from cnn_core.datasets import load_dataset

router = APIRouter(prefix="/datasets", tags=["datasets"])

MAX_SAMPLE_TILES = 1024
MAX_SAMPLE_PIXELS = 2048 * 2048


def dataset_out(meta: DatasetMeta) -> Dataset:
    """The API view of a stored dataset."""
    return Dataset(
        id=meta.id,
        name=meta.name,
        n_samples=meta.n_samples,
        input_shape=meta.input_shape,
        classes=meta.classes,
        class_counts=dict(zip(meta.classes, meta.class_counts, strict=True)),
        preprocessing=meta.preprocessing,
        builtin=meta.builtin,
        created_at=datetime.fromtimestamp(meta.created_at, UTC),
    )


@router.post(
    "",
    status_code=201,
    response_model=Dataset,
    responses={
        201: {"description": "The dataset, stored", "headers": location_header("dataset")},
        **error_responses(400, 413, 415, 422, 503),
    },
    form_limits={"max_files": 2, "max_fields": 2},
)
def create_dataset(
    files: Annotated[
        list[UploadFile],
        File(
            description="One .npz (X, y, optional class_names), one .zip of class folders of "
            "PNG/JPEG images, or two MNIST IDX files (images and labels, gzipped or not)."
        ),
    ],
    datasets: DatasetStoreDep,
    settings: SettingsDep,
    response: Response,
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> Dataset:
    """Upload a dataset; its format is recognised from the bytes, not the file names."""
    dataset = load_dataset([f.file for f in files], max_bytes=settings.max_upload_bytes)
    dataset_id = new_id()
    label = name or (files[0].filename or "")[:200] or dataset_id
    meta = datasets.create(dataset_id, label, dataset)
    response.headers["Location"] = f"/datasets/{dataset_id}"
    return dataset_out(meta)


@router.get("", response_model=DatasetList)
def list_datasets(datasets: DatasetStoreDep) -> DatasetList:
    """Every dataset, the built-in `mnist-sample` first."""
    items = [dataset_out(meta) for meta in datasets.list_all()]
    return DatasetList(datasets=items, count=len(items))


@router.get("/{dataset_id}", response_model=Dataset, responses=error_responses(404))
def read_dataset(dataset: DatasetDep) -> Dataset:
    """One dataset: samples, input shape, classes and samples per class."""
    return dataset_out(dataset)


@router.get(
    "/{dataset_id}/samples",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}},
            "description": "One row of tiles per class (label order), or one row of the "
            "samples asked for by index; each tile is one sample at its stored size",
        },
        **error_responses(404, 422),
    },
)
def read_dataset_samples(
    dataset: DatasetDep,
    datasets: DatasetStoreDep,
    per_class: Annotated[int, Query(ge=1, le=64, description="Tiles per class row.")] = 8,
    index: Annotated[
        list[Annotated[int, Query(ge=0, le=MAX_POSITION)]] | None,
        Query(
            max_length=MAX_SAMPLE_TILES,
            description="Sample indices (repeat the parameter): one row of exactly these "
            "samples, in this order, instead of the rows per class.",
        ),
    ] = None,
) -> Response:
    """A few samples as a PNG sheet: the first `per_class` of each class, or those by index."""
    _, h, w = dataset.input_shape
    tiles = len(index) if index else len(dataset.classes) * per_class
    if tiles > MAX_SAMPLE_TILES or tiles * h * w > MAX_SAMPLE_PIXELS:
        raise InvalidRequestError(
            f"{tiles} tiles of {h}x{w} pixels is over the limit of {MAX_SAMPLE_TILES} tiles "
            f"and {MAX_SAMPLE_PIXELS:,} pixels: lower per_class, or ask for samples by index",
            ("query", "index" if index else "per_class"),
        )
    if index and max(index) >= dataset.n_samples:
        raise InvalidRequestError(
            f"index {max(index)} is out of range: dataset {dataset.id!r} has "
            f"{dataset.n_samples} samples (0..{dataset.n_samples - 1})",
            ("query", "index"),
        )
    data = datasets.load(dataset.id)
    if index:
        rows = [data.inputs(index)]
    else:
        rows = [
            data.inputs(np.flatnonzero(data.y == k)[:per_class])
            for k in range(len(dataset.classes))
        ]
    image_scale = float(dataset.preprocessing.get("image_scale", 1 / 255))
    return Response(sample_sheet_png(rows, image_scale), media_type="image/png")


@router.delete("/{dataset_id}", status_code=204, responses=error_responses(403, 404, 409))
def delete_dataset(dataset: DatasetDep, runner: RunnerDep) -> None:
    """Delete an uploaded dataset that no queued or running job uses."""
    if dataset.builtin:
        raise ConflictError("The built-in dataset cannot be deleted")
    runner.delete_dataset(dataset.id)
