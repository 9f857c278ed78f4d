"""Check architectures without training."""

from fastapi import APIRouter

from app.schemas import ArchitectureCheck, ArchitectureSummary, error_responses
from app.training.admission import summarize

router = APIRouter(prefix="/architectures", tags=["architectures"])


@router.post(
    "/validate", response_model=ArchitectureSummary, responses=error_responses(400, 403, 413, 422)
)
def validate_architecture(body: ArchitectureCheck) -> ArchitectureSummary:
    """Per-layer output shape, parameter count and multiply-adds, or a 422 naming the layer."""
    return ArchitectureSummary.model_validate(summarize(body.architecture.to_config()))
