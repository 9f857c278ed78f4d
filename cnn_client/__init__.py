"""A typed Python client of the cnn-service HTTP API, and the `cnn` command built on it.

Needs only httpx and pydantic: no FastAPI, no NumPy training code.

    from cnn_client import Client
    with Client("http://127.0.0.1:8000") as client:
        job = client.submit_job("mnist-sample", "lenet5", {"epochs": 2})
        final = client.wait(job.id)
"""

from cnn_client.client import DEFAULT_URL, ApiError, Client
from cnn_client.models import CostsEvent, EndEvent, JobEvent, JobStatus, ProgressEvent

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "Client",
    "CostsEvent",
    "EndEvent",
    "JobEvent",
    "JobStatus",
    "ProgressEvent",
]
