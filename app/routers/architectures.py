"""Check architectures without training."""

from fastapi import APIRouter

from app.schemas import (
    ArchitectureCheck,
    ArchitectureCheckBody,
    ArchitectureSummary,
    error_responses,
)
from app.training.admission import summarize

router = APIRouter(prefix="/architectures", tags=["architectures"])


@router.post(
    "/validate", response_model=ArchitectureSummary, responses=error_responses(400, 403, 413, 422)
)
def validate_architecture(body: ArchitectureCheckBody) -> ArchitectureSummary:
    """Per-layer output shape, parameter count and multiply-adds, or a 422 naming the layer.
    The config may be sent as `{"architecture": config}` or bare, in either form."""
    if isinstance(body, ArchitectureCheck):
        summary = summarize(body.architecture.to_config(), ("body", "architecture"))
    else:
        summary = summarize(body.to_config(), ("body",))
    return ArchitectureSummary.model_validate(summary)
