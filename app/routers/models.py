"""List, describe, download, delete and predict with trained models."""

import io
import json
import math
from datetime import UTC, datetime
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.deps import DatasetStoreDep, ModelDep, ModelStoreDep, PredictorDep, SettingsDep
from app.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaError,
    not_found,
)
from app.ids import is_valid_id
from app.inference import Predictor
from app.plotting import confusion_matrix_png
from app.schemas import (
    EvaluateRequest,
    Evaluation,
    LayerSummary,
    Model,
    ModelList,
    ModelMetrics,
    PredictInstances,
    Predictions,
    error_responses,
)
from app.storage.models import ModelMeta

router = APIRouter(prefix="/models", tags=["models"])

PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": (
                            "PNG or JPEG images, converted to the model's channels and size."
                        ),
                    }
                },
            }
        },
        "application/json": {"schema": PredictInstances.model_json_schema()},
    },
}


def model_out(meta: ModelMeta) -> Model:
    """The API view of a stored model."""
    return Model(
        id=meta.id,
        job_id=meta.job_id,
        name=meta.name,
        dataset_id=meta.dataset_id,
        created_at=datetime.fromtimestamp(meta.created_at, UTC),
        architecture=meta.architecture,
        input_shape=meta.input_shape,
        classes=meta.classes,
        param_count=meta.param_count,
        macs=meta.macs,
        layers=[LayerSummary(**layer) for layer in meta.layers],
        metrics=ModelMetrics(**meta.metrics),
        preprocessing=meta.preprocessing,
        training=meta.training,
    )


@router.get("", response_model=ModelList)
def list_models(models: ModelStoreDep) -> ModelList:
    """Every model, oldest first."""
    items = [model_out(meta) for meta in models.list_all()]
    return ModelList(models=items, count=len(items))


@router.get("/{model_id}", response_model=Model, responses=error_responses(404))
def read_model(model: ModelDep) -> Model:
    """One model: architecture, layers, classes, metrics, source job, preprocessing."""
    return model_out(model)


@router.get(
    "/{model_id}/download",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The model's .npz file (load with Network.load), or its ONNX export",
        },
        **error_responses(404, 409),
    },
)
async def download_model(
    model: ModelDep,
    models: ModelStoreDep,
    predictor: PredictorDep,
    format: Annotated[
        Literal["npz", "onnx"],
        Query(
            description="`npz`: weights and metadata, loadable with `Network.load`. `onnx`: "
            "opset 17, input float32 (N, C, H, W) in the model's preprocessed scale, output "
            "class probabilities; the preprocessing is in its metadata_props."
        ),
    ] = "npz",
) -> Response:
    """The model file: one .npz loadable with `Network.load` (default), or ONNX."""
    if format == "onnx":
        data = await run_in_threadpool(_onnx_bytes, predictor, model.id)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="model-{model.id}.onnx"'},
        )
    path = models.file_path(model.id)
    if not path.exists():
        raise not_found("model", model.id)
    return FileResponse(
        path, media_type="application/octet-stream", filename=f"model-{model.id}.npz"
    )


def _onnx_bytes(predictor: Predictor, model_id: str) -> bytes:
    """The model as ONNX (CPU work: called in the threadpool)."""
    buffer = io.BytesIO()
    predictor.network(model_id).to_onnx(buffer)
    return buffer.getvalue()


@router.post(
    "/{model_id}/evaluate",
    response_model=Evaluation,
    responses={
        200: {
            "content": {"image/png": {}},
            "description": "The scores, or with `format=png` the confusion matrix as a heat map",
        },
        **error_responses(400, 403, 404, 409, 413, 422, 503),
    },
)
async def evaluate_model(
    model: ModelDep,
    body: EvaluateRequest,
    datasets: DatasetStoreDep,
    predictor: PredictorDep,
    format: Annotated[
        Literal["json", "png"],
        Query(description="`png`: the confusion matrix as a heat map instead of the scores."),
    ] = "json",
) -> Evaluation | Response:
    """Score the model on a labelled dataset: accuracy, confusion matrix, per-class scores."""
    dataset = datasets.get(body.dataset_id) if is_valid_id(body.dataset_id) else None
    if dataset is None:
        raise not_found("dataset", body.dataset_id)
    with predictor.slot():
        scores = await predictor.evaluate(model, lambda: datasets.load(dataset.id))
    if format == "png":
        title = f"{model.name or model.id} on {dataset.name}: accuracy {scores['accuracy']:.2%}"
        png = await run_in_threadpool(
            confusion_matrix_png, scores["confusion_matrix"], scores["classes"], title
        )
        return Response(png, media_type="image/png")
    return Evaluation(model_id=model.id, dataset_id=dataset.id, **scores)


@router.delete("/{model_id}", status_code=204, responses=error_responses(403, 404))
def delete_model(model: ModelDep, models: ModelStoreDep, predictor: PredictorDep) -> None:
    """Delete a model."""
    models.delete(model.id)
    predictor.evict(model.id)


def parse_instances(body: bytes, model: ModelMeta, limit: int) -> np.ndarray:
    """The (N, C, H, W) float64 array of a JSON `{"instances": [...]}` body, or a 422 (CPU work
    on up to a whole body's worth of numbers: called in the threadpool). The work is bounded by
    what the model can take, not by the body cap: a body with more separators than `limit`
    instances of the model's shape can need is refused from one scan of its bytes, and
    validation stops at the first wrong element."""
    c, h, w = model.input_shape
    if body.count(b",") > 2 * limit * c * h * w + 16:  # a number and a list end per value
        raise PayloadTooLargeError(
            f"the body holds more values than {limit} instances of shape {model.input_shape} "
            f"can: send at most {limit} instances of that shape per request"
        )
    try:
        instances = PredictInstances.model_validate_json(body).instances
    except ValidationError as exc:
        raise _instances_problem(body, exc, model) from None
    if len(instances) > limit:
        raise InvalidRequestError(
            f"{len(instances)} instances; at most {limit} per request", ("body", "instances")
        )
    for index, instance in enumerate(instances):
        shape = nested_shape(instance)
        if shape != list(model.input_shape):
            raise wrong_shape(index, shape, model)
    X = np.asarray(instances, dtype=np.float64)
    check_instance_range(X, model)
    return X


def nested_shape(value: object) -> list[int] | None:
    """The shape of nested lists, or None when the lists at some depth are not all as long
    as each other (or not all lists). Never walks the innermost lists' numbers: cheap however
    large the instance."""
    shape: list[int] = []
    level = [value]
    while isinstance(level[0], list):
        lengths = {len(item) if isinstance(item, list) else -1 for item in level}
        if len(lengths) > 1:
            return None
        shape.append(lengths.pop())
        if not shape[-1] or not isinstance(level[0][0], list):
            break
        level = [child for item in level for child in item]
    return shape


def wrong_shape(index: int, shape: list[int] | None, model: ModelMeta) -> InvalidRequestError:
    """One 422 for an instance of the wrong shape: what was expected and what was sent."""
    c, h, w = model.input_shape
    expected = f"(C, H, W) = {model.input_shape}: {c} list(s) of {h} rows of {w} numbers"
    if shape is None:
        sent = "nested lists of unequal lengths"
    else:
        sent = f"shape {shape}"
        if shape and math.prod(shape) == c * h * w:
            sent += f" (the right {c * h * w} values: reshape them to {model.input_shape})"
    return InvalidRequestError(
        f"instances[{index}] has {sent}, but the model takes {expected}",
        ("body", "instances", index),
        kind="wrong_shape",
    )


def _instances_problem(body: bytes, exc: ValidationError, model: ModelMeta) -> InvalidRequestError:
    """The 422 for a predict body that fails validation: one message naming the expected and
    the received shape when an instance is nested wrong (a number where a list belongs, or
    the reverse), else the explained validation errors."""
    errors = exc.errors(include_input=False)
    first = errors[0]
    loc = first["loc"]
    if first["type"] in ("list_type", "float_type") and loc[:1] == ("instances",) and len(loc) > 1:
        shape = nested_shape(json.loads(body)["instances"][loc[1]])
        if shape != list(model.input_shape):  # else a null or a boolean among the numbers
            return wrong_shape(loc[1], shape, model)
    return InvalidRequestError.explaining(
        [{**err, "loc": ("body", *err["loc"])} for err in errors], PredictInstances
    )


# How far past the training scale an instance may reach: the overshoot of a resampled
# image, or rounding; 0..255 values sent to a 0..1 model are far beyond it.
RANGE_SLACK = 0.02


def check_instance_range(X: np.ndarray, model: ModelMeta) -> None:
    """Refuse instances clearly outside the scale the model was trained in (0..1 for 8-bit
    data scaled by 1/255, 0..255 for float data kept as given): 0..255 values sent to a 0..1
    model would be read as a blinding white, not the image meant."""
    if not (np.abs(X) <= np.finfo(np.float32).max).all():
        return  # NaN, infinite or huge: the predictor refuses them with its own message
    top = 255 * float(model.preprocessing.get("image_scale", 1 / 255))
    lo, hi = float(X.min()), float(X.max())
    if lo < -RANGE_SLACK * top or hi > top * (1 + RANGE_SLACK):
        hint = "divide 8-bit pixels by 255, " if top < 255 and hi <= 255 else ""
        raise InvalidRequestError(
            f"instances hold values from {lo:g} to {hi:g}, but this model was trained on "
            f"inputs in 0..{top:g}: send values in that scale ({hint}or send the image "
            f"files instead, as multipart parts named 'files')",
            ("body", "instances"),
            kind="out_of_range",
        )


@router.post(
    "/{model_id}/predict",
    response_model=Predictions,
    responses=error_responses(400, 403, 404, 409, 413, 415, 422, 503),
    openapi_extra={"requestBody": PREDICT_BODY},
)
async def predict(
    model: ModelDep,
    request: Request,
    predictor: PredictorDep,
    settings: SettingsDep,
    top_k: Annotated[int, Query(ge=1, le=1000, description="Clamped to the class count.")] = 3,
    invert: Annotated[
        Literal["auto", "true", "false"],
        Query(
            description="Invert images to the training data's polarity: `auto` when an image's "
            "background (its border, or for a transparent image its ink) disagrees with it."
        ),
    ] = "auto",
) -> Predictions:
    """Predict images (multipart parts named `files`) or JSON `{"instances": [...]}`."""
    content_type = request.headers.get("content-type", "")
    limit = settings.max_images_per_request
    with predictor.slot():  # before the body is read: refused requests cost no parsing
        if content_type.startswith("multipart/form-data"):
            async with request.form(max_files=limit, max_fields=1) as form:
                files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
                if not files:
                    raise InvalidRequestError(
                        "send one or more images as multipart parts named 'files'",
                        ("body", "files"),
                    )
                images = [(f.filename or f"file {i}", await f.read()) for i, f in enumerate(files)]
            results = await predictor.predict_images(model, images, top_k, invert)
        elif content_type.startswith("application/json"):
            X = await run_in_threadpool(parse_instances, await request.body(), model, limit)
            results = await predictor.predict_array(model, X, top_k)
        else:
            raise UnsupportedMediaError(
                "send multipart/form-data with image files named 'files', "
                "or application/json with 'instances'"
            )
    return Predictions(model_id=model.id, predictions=results)
