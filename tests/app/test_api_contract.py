"""The API keeps its published contract: schemathesis generates requests for every operation from
/openapi.json and checks each response (no server error, every status documented, bodies and
headers as declared). In-process, with a fixed seed and a bounded number of examples.

Jobs are accepted and queued but never started (no worker slots), so the run stays cheap. The
"schema-valid data is accepted" check is left out: a schema cannot say that a kernel fits its
input or that a dataset id exists, so valid-looking requests are rightly refused with 404/422.
"""

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig

import app.main
from app.main import create_app
from app.settings import Settings
from app.storage.integrity import Problems
from app.training.runner import JobRunner

MAX_EXAMPLES = 50
KEY = "contract-test-key"


@pytest.fixture
def api_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> schemathesis.BaseSchema:
    """The app's schema, bound to an app on a fresh data dir whose jobs only queue."""
    build_runner = app.main.build_runner

    def queue_only(settings: Settings, problems: Problems) -> JobRunner:
        runner = build_runner(settings, problems)
        runner.workers = 0
        return runner

    monkeypatch.setattr(app.main, "build_runner", queue_only)
    service = create_app(
        Settings(data_dir=tmp_path / "data", api_key=KEY, max_queue=4, poll_interval=0.05)
    )
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": KEY}}}})
    return schemathesis.openapi.from_asgi("/openapi.json", service, config=config)


def test_api_conforms_to_its_openapi_schema(api_schema: schemathesis.BaseSchema) -> None:
    failures = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 17
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @given(case=strategy)
        @seed(20260601)
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: schemathesis.Case) -> None:
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        try:
            conforms()
        except (Exception, BaseExceptionGroup) as failure:  # noqa: BLE001 - report them all
            failures[operation.label] = failure
    assert not failures, "\n\n".join(f"{label}:\n{error}" for label, error in failures.items())
