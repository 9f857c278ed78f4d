"""`Client`: one method per endpoint of the cnn-service HTTP API, typed results, one error type.

Requests the server refuses for now (429 job queue full, 503 too many predictions) are retried
after the `Retry-After` it sends. `follow` reads the job's server-sent events and, when the
connection drops or the server restarts, reconnects with `Last-Event-ID` set to the last cost
point it saw, so the server resumes right after it: no point is missed or repeated.
"""

import contextlib
import io
import ssl
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource
from pydantic import BaseModel

from cnn_client.models import (
    ArchitectureSummary,
    CostHistory,
    CostsEvent,
    Dataset,
    DatasetList,
    EndEvent,
    Evaluation,
    Health,
    Job,
    JobEvent,
    JobList,
    JobStatus,
    Model,
    ModelList,
    Predictions,
    ProgressEvent,
)

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = (429, 503)
CONNECT_TIMEOUT = 10.0
# The server pings an idle event stream every 15 s: a minute of silence means the link is dead.
STREAM_READ_TIMEOUT = 60.0
# Uploads, predictions of many images and downloads may take a while on a busy server.
REQUEST_TIMEOUT = httpx.Timeout(120.0, connect=CONNECT_TIMEOUT)

R = TypeVar("R", bound=BaseModel)


class ApiError(Exception):
    """A request that did not succeed: `status` is the HTTP status (None when the server could
    not be reached), `message` the server's own explanation, in one line, and `errors` a
    422's problems, each `{"loc", "msg", "type"}` (empty otherwise)."""

    def __init__(
        self, status: int | None, message: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message if status is None else f"{status}: {message}")
        self.status = status
        self.message = message
        self.errors = errors or []

    @classmethod
    def of(cls, response: httpx.Response) -> "ApiError":
        """The error a failed response stands for."""
        try:
            errors = response.json().get("errors")
        except (ValueError, AttributeError):
            errors = None
        return cls(
            response.status_code,
            error_message(response),
            errors if isinstance(errors, list) else None,
        )


def error_message(response: httpx.Response) -> str:
    """The one-line reason a failed response gives: its `detail`, the server's one sentence
    about what to fix (a 422 lists every problem in `errors` too; the sentence says how many)."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()
        return text.splitlines()[0] if text else response.reason_phrase
    return " ".join(str(detail).split())


def unreachable(url: str, exc: httpx.TransportError) -> str:
    """Why `url` could not be reached, in one line (some httpx errors have no message)."""
    return f"cannot reach {url}: {str(exc) or type(exc).__name__}"


def retry_delay(response: httpx.Response, attempt: int, cap: float) -> float:
    """Seconds to wait before retrying: the server's `Retry-After` (seconds or an HTTP date),
    else an exponential backoff; never more than `cap`."""
    header = response.headers.get("Retry-After", "")
    delay = float(2**attempt)
    if header.strip().isdigit():
        delay = float(header)
    elif header:
        with contextlib.suppress(TypeError, ValueError):
            delay = parsedate_to_datetime(header).timestamp() - time.time()
    return min(max(delay, 0.0), cap)


def folder_zip(folder: Path) -> bytes:
    """A folder of one subfolder per class, zipped in memory as `POST /datasets` takes it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                archive.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


class Client:
    """A client of one cnn-service server.

    >>> client = Client("http://127.0.0.1:8000")
    >>> job = client.submit_job("mnist-sample", "lenet5", {"epochs": 2})
    >>> for event in client.follow(job.id): ...
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        retries: int = 3,
        max_retry_wait: float = 60.0,
        reconnect_for: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`retries`: how often a 429/503 is retried; `reconnect_for`: how long `follow` keeps
        trying to reconnect before giving up; `transport`: httpx's, for tests and proxies."""
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Loading the CA bundle takes a fifth of a second, which plain http never uses.
        verify: ssl.SSLContext | bool = True
        if self.url.startswith("http://"):
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=REQUEST_TIMEOUT,
            transport=transport,
            verify=verify,
        )
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.reconnect_for = reconnect_for

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request, retrying 429/503; the response, or `ApiError`."""
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ApiError(None, unreachable(self.url, exc)) from exc
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(retry_delay(response, attempt, self.max_retry_wait))
                continue
            if response.is_error:
                raise ApiError.of(response)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _get(self, path: str, result: type[R], **kwargs: Any) -> R:
        return result.model_validate(self._request("GET", path, **kwargs).json())

    def _post(self, path: str, result: type[R], **kwargs: Any) -> R:
        return result.model_validate(self._request("POST", path, **kwargs).json())

    # -- health, metrics and architectures -----------------------------------------------------

    def health(self) -> Health:
        """Liveness, version, running and queued jobs."""
        return self._get("/health", Health)

    def metrics(self) -> str:
        """The server's Prometheus metrics, in the text exposition format."""
        return self._request("GET", "/metrics").text

    def validate_architecture(self, architecture: dict[str, Any]) -> ArchitectureSummary:
        """Per-layer output shapes, parameters and multiply-adds of a config, without training."""
        return self._post(
            "/architectures/validate", ArchitectureSummary, json={"architecture": architecture}
        )

    # -- datasets ------------------------------------------------------------------------------

    def upload_dataset(self, paths: Sequence[str | Path], name: str | None = None) -> Dataset:
        """Upload a `.npz`, a `.zip` of class folders, an MNIST IDX pair (two paths), or a
        folder of class folders (zipped on the way)."""
        files = []
        for path in map(Path, paths):
            if path.is_dir():
                files.append(("files", (f"{path.name}.zip", folder_zip(path))))
            else:
                files.append(("files", (path.name, path.read_bytes())))
        data = {"name": name} if name else None
        return self._post("/datasets", Dataset, files=files, data=data)

    def list_datasets(self) -> DatasetList:
        return self._get("/datasets", DatasetList)

    def get_dataset(self, dataset_id: str) -> Dataset:
        return self._get(f"/datasets/{dataset_id}", Dataset)

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/datasets/{dataset_id}")

    def dataset_samples(
        self, dataset_id: str, per_class: int = 8, index: Sequence[int] | None = None
    ) -> bytes:
        """A sheet of samples as PNG bytes: one row of `per_class` tiles per class, or one row
        of the samples at `index`, in that order."""
        params: dict[str, Any] = {"index": list(index)} if index else {"per_class": per_class}
        return self._request("GET", f"/datasets/{dataset_id}/samples", params=params).content

    # -- jobs ----------------------------------------------------------------------------------

    def submit_job(
        self,
        dataset_id: str,
        architecture: str | dict[str, Any],
        training: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Job:
        """Queue a training job: `architecture` is a preset name (`lenet5`, `convnet`) or a
        config; `training` holds the settings that differ from the server's defaults."""
        body: dict[str, Any] = {"dataset_id": dataset_id, "architecture": architecture}
        if training:
            body["training"] = training
        if name:
            body["name"] = name
        return self._post("/jobs", Job, json=body)

    def list_jobs(
        self, status: JobStatus | str | None = None, limit: int = 50, offset: int = 0
    ) -> JobList:
        """Jobs, newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = str(status)
        return self._get("/jobs", JobList, params=params)

    def get_job(self, job_id: str) -> Job:
        return self._get(f"/jobs/{job_id}", Job)

    def job_costs(self, job_id: str, since: int = 0, max_points: int | None = None) -> CostHistory:
        """Cost points after iteration `since` (optionally thinned to `max_points`)."""
        params: dict[str, Any] = {"since": since}
        if max_points:
            params["max_points"] = max_points
        return self._get(f"/jobs/{job_id}/costs", CostHistory, params=params)

    def cost_plot(self, job_id: str) -> bytes:
        """The cost curve as PNG bytes."""
        return self._request("GET", f"/jobs/{job_id}/costs.png").content

    def cancel_job(self, job_id: str) -> Job:
        return self._post(f"/jobs/{job_id}/cancel", Job)

    def follow(self, job_id: str, timeout: float | None = None) -> Iterator[JobEvent]:
        """The job's events until it ends: `CostsEvent` (new points), `ProgressEvent` and a last
        `EndEvent`. A dropped stream is reopened from the last cost point seen. `TimeoutError`
        after `timeout` seconds (the job keeps running); `ApiError` when the server refuses the
        request, or sends no event for `reconnect_for` seconds of reconnecting."""
        give_up = None if timeout is None else time.monotonic() + timeout
        last_id: int | None = None
        wait = 0.5
        reconnect_until = time.monotonic() + self.reconnect_for
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            read = STREAM_READ_TIMEOUT
            if give_up is not None:
                read = min(read, max(give_up - time.monotonic(), 0.01))
            try:
                with self._http.stream(
                    "GET",
                    f"/jobs/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(CONNECT_TIMEOUT, read=read),
                ) as response:
                    if response.status_code in RETRY_STATUSES:
                        wait = retry_delay(response, 0, self.max_retry_wait)
                    elif response.is_error:
                        response.read()
                        raise ApiError.of(response)
                    else:
                        for sse in EventSource(response).iter_sse():
                            if sse.retry is not None:
                                wait = sse.retry / 1000
                            event = _job_event(sse.event, sse.id, sse.data)
                            if event is None:
                                continue
                            reconnect_until = time.monotonic() + self.reconnect_for
                            if isinstance(event, CostsEvent):
                                last_id = event.id
                            yield event
                            if isinstance(event, EndEvent):
                                return
                            _check_timeout(give_up, job_id, timeout)
            except httpx.TransportError as exc:
                _check_timeout(give_up, job_id, timeout)
                if time.monotonic() >= reconnect_until:
                    raise ApiError(
                        None, f"lost the event stream of job {job_id} at {self.url}: {exc}"
                    ) from exc
            _check_timeout(give_up, job_id, timeout)
            if time.monotonic() >= reconnect_until:
                raise ApiError(None, f"the event stream of job {job_id} keeps ending early")
            time.sleep(wait)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it has ended; `TimeoutError` after `timeout` seconds (it keeps running)."""
        for event in self.follow(job_id, timeout):
            if isinstance(event, EndEvent):
                return event.data
        raise ApiError(None, f"the event stream of job {job_id} ended without its outcome")

    # -- models --------------------------------------------------------------------------------

    def list_models(self) -> ModelList:
        return self._get("/models", ModelList)

    def get_model(self, model_id: str) -> Model:
        return self._get(f"/models/{model_id}", Model)

    def delete_model(self, model_id: str) -> None:
        self._request("DELETE", f"/models/{model_id}")

    def download_model(self, model_id: str, path: str | Path, format: str = "npz") -> Path:
        """Save the model file (`npz`, loadable with `cnn_core.Network.load`, or `onnx`) to
        `path`, written whole or not at all."""
        path = Path(path)
        partial = path.with_name(path.name + ".part")
        try:
            with self._http.stream(
                "GET", f"/models/{model_id}/download", params={"format": format}
            ) as response:
                if response.is_error:
                    response.read()
                    raise ApiError.of(response)
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise ApiError(None, unreachable(self.url, exc)) from exc
        except ApiError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(path)
        return path

    def predict(
        self, model_id: str, images: Iterable[tuple[str, bytes]], top_k: int = 3
    ) -> Predictions:
        """Predict image files given as (file name, bytes), in order."""
        files = [("files", (name, content)) for name, content in images]
        return self._post(
            f"/models/{model_id}/predict", Predictions, files=files, params={"top_k": top_k}
        )

    def predict_instances(self, model_id: str, instances: list[Any], top_k: int = 3) -> Predictions:
        """Predict arrays already in the model's scale, each (C, H, W) as nested lists."""
        return self._post(
            f"/models/{model_id}/predict",
            Predictions,
            json={"instances": instances},
            params={"top_k": top_k},
        )

    def evaluate(self, model_id: str, dataset_id: str) -> Evaluation:
        """Accuracy, confusion matrix and per-class precision, recall and F1 on a dataset."""
        return self._post(
            f"/models/{model_id}/evaluate", Evaluation, json={"dataset_id": dataset_id}
        )


def _check_timeout(give_up: float | None, job_id: str, timeout: float | None) -> None:
    if give_up is not None and time.monotonic() >= give_up:
        raise TimeoutError(f"job {job_id} had not ended after {timeout:g} s; it keeps running")


def _job_event(kind: str, event_id: str, data: str) -> JobEvent | None:
    """The typed form of one server-sent event; None for kinds this client does not know."""
    if kind == "costs":
        return CostsEvent(id=int(event_id), data=CostHistory.model_validate_json(data))
    if kind == "progress":
        return ProgressEvent(data=Job.model_validate_json(data))
    if kind == "end":
        return EndEvent(data=Job.model_validate_json(data))
    return None
