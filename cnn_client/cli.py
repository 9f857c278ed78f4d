"""The `cnn` command: datasets, training, jobs, models and predictions from a terminal.

Data goes to stdout (a table, an id, or JSON with `--json`), messages and progress to stderr.
Exit codes, for scripts: 0 done (the job succeeded), 1 the job failed, 2 usage error, 3 the
job was cancelled, 4 server unreachable or an HTTP error, 124 `--timeout` ran out (the job keeps
running), 130 interrupted with Ctrl-C (the job keeps running).
"""

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from typer.core import TyperGroup

from cnn_client.client import DEFAULT_URL, ApiError, Client
from cnn_client.models import (
    CostsEvent,
    Dataset,
    EndEvent,
    EpochMetrics,
    Job,
    JobStatus,
    Model,
    ProgressEvent,
)

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_HTTP = 4
EXIT_TIMEOUT = 124  # as GNU timeout(1)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
OUTCOME_EXIT = {
    JobStatus.succeeded: EXIT_OK,
    JobStatus.failed: EXIT_JOB_FAILED,
    JobStatus.cancelled: EXIT_CANCELLED,
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IMAGES_PER_REQUEST = 32  # under the server's default limit of 64 files per predict


class CnnGroup(TyperGroup):
    """The root command: turns an `ApiError` into its one-line message and exit code 4, an
    unreadable file into exit code 2, and Ctrl-C into exit code 130, instead of a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            say(f"error: {exc}")
            raise typer.Exit(EXIT_HTTP) from None
        except KeyboardInterrupt:
            say("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            raise  # stdout closed by a reader such as `head`: click exits quietly
        except OSError as exc:  # a file named on the command line that cannot be read or written
            say(f"error: {exc.filename}: {exc.strerror}" if exc.filename else f"error: {exc}")
            raise typer.Exit(EXIT_USAGE) from None


app = typer.Typer(
    cls=CnnGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
datasets_app = typer.Typer(help="Upload, list, describe and delete datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, follow, wait for and cancel jobs.", no_args_is_help=True)
models_app = typer.Typer(help="List, describe, download and delete models.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (for scripts).")]
TimeoutOption = Annotated[
    float | None,
    typer.Option(help="Stop waiting after this many seconds (exit 124; the job keeps running)."),
]


# -- output --------------------------------------------------------------------------------------


def say(message: str) -> None:
    """A message for the person at the terminal: stderr, never mixed into the data."""
    typer.echo(message, err=True)


def print_json(value: BaseModel | dict[str, Any]) -> None:
    """One JSON object on one line of stdout."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    typer.echo(json.dumps(data))


def print_table(*columns: str, rows: list[list[Any]]) -> None:
    """A table on stdout, never cut short when stdout is not a terminal."""
    table = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(200, console.width))
    console.print(table)


def print_fields(fields: dict[str, Any]) -> None:
    """`name: value` lines on stdout."""
    width = max(map(len, fields))
    for name, value in fields.items():
        typer.echo(f"{name + ':':<{width + 1}} {'-' if value is None else value}")


def print_listing(
    page: BaseModel, columns: tuple[str, ...], rows: list[list[Any]], as_json: bool
) -> None:
    """What a list command prints: the page as JSON with `--json`, else a table of `rows`."""
    if as_json:
        print_json(page)
    else:
        print_table(*columns, rows=rows)


def print_record(value: BaseModel, fields: dict[str, Any], as_json: bool) -> None:
    """What a show command prints: `value` as JSON with `--json`, else its `fields`."""
    if as_json:
        print_json(value)
    else:
        print_fields(fields)


def print_done(data: BaseModel | dict[str, Any], message: str, as_json: bool) -> None:
    """What a command that changes something prints: `data` as JSON with `--json`, else
    `message` on stderr."""
    if as_json:
        print_json(data)
    else:
        say(message)


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_shape(shape: list[int]) -> str:
    """An image shape as 1x28x28."""
    return "x".join(map(str, shape))


def epoch_line(epochs: int, metrics: EpochMetrics) -> str:
    """One epoch's summary in one plain line."""
    parts = [f"epoch {metrics.epoch}/{epochs}", f"cost {fmt(metrics.cost)}"]
    if metrics.train_accuracy is not None:
        parts.append(f"accuracy {fmt(metrics.train_accuracy)}")
    if metrics.val_cost is not None:
        parts.append(f"val_cost {fmt(metrics.val_cost)}")
    if metrics.val_accuracy is not None:
        parts.append(f"val_accuracy {fmt(metrics.val_accuracy)}")
    if metrics.seconds is not None:
        parts.append(f"{metrics.seconds:.2f} s")
    return "  ".join(parts)


def outcome_line(job: Job) -> str:
    """How a finished job ended, in one line."""
    if job.status is JobStatus.succeeded:
        metrics = job.metrics
        accuracy = metrics and (metrics.val_accuracy or metrics.train_accuracy)
        score = f", accuracy {accuracy:.4f}" if accuracy is not None else ""
        return f"job {job.id} succeeded: model {job.model_id}{score}"
    if job.status is JobStatus.failed:
        return f"job {job.id} failed: {job.error}"
    return f"job {job.id} {job.status}"


def usage_error(message: str) -> NoReturn:
    say(f"error: {message}")
    raise typer.Exit(EXIT_USAGE)


# -- connection ----------------------------------------------------------------------------------


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(envvar="CNN_URL", help="The server. The API key comes from CNN_API_KEY.")
    ] = DEFAULT_URL,
) -> None:
    """Train convolutional networks on a cnn-service server, follow them, predict with them."""
    ctx.obj = Client(url, os.environ.get("CNN_API_KEY") or None)
    ctx.call_on_close(ctx.obj.close)


def client_of(ctx: typer.Context) -> Client:
    return ctx.find_root().obj


# -- following -----------------------------------------------------------------------------------


# How `cnn jobs follow|wait` is suggested after Ctrl-C, and after --timeout ran out.
COME_BACK = {"follow": ("Follow it again", "Follow it"), "wait": ("Wait again", "Wait again")}


@contextlib.contextmanager
def detaching(job: Job, command: str) -> Iterator[None]:
    """Ctrl-C (exit 130) or `--timeout` (exit 124) leave the job running, and say how to
    come back to it with `cnn jobs {command} ID`."""
    after_interrupt, after_timeout = COME_BACK[command]
    try:
        yield
    except KeyboardInterrupt:
        say(
            f"detached; job {job.id} keeps running. "
            f"{after_interrupt} with: cnn jobs {command} {job.id}"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except TimeoutError as exc:
        say(f"{exc}. {after_timeout} with: cnn jobs {command} {job.id}")
        raise typer.Exit(EXIT_TIMEOUT) from None


def follow_job(client: Client, job: Job, as_json: bool, timeout: float | None) -> NoReturn:
    """Show a job's progress until it ends (a live bar on a terminal, one line per epoch
    otherwise, JSON lines with `--json`), then exit with its outcome's code."""
    events = client.follow(job.id, timeout)
    epochs = job.progress.epochs
    with detaching(job, "follow"):
        if as_json:
            final = None
            for event in events:
                print_json(event)
                final = event.data if isinstance(event, EndEvent) else final
        elif Console(stderr=True).is_terminal:
            final = show_progress_bar(events, epochs)
        else:
            final = show_epoch_lines(events, epochs)
    if final is None:
        raise ApiError(None, f"the event stream of job {job.id} ended without its outcome")
    if not as_json:
        say(outcome_line(final))
    raise typer.Exit(OUTCOME_EXIT[final.status])


Events = Iterator[CostsEvent | ProgressEvent | EndEvent]


def show_epoch_lines(events: Events, epochs: int) -> Job | None:
    """Plain lines on stderr, one per epoch: what a log file or CI wants."""
    status = None
    for event in events:
        if isinstance(event, CostsEvent):
            for metrics in event.data.epochs:
                say(epoch_line(epochs, metrics))
        elif isinstance(event, EndEvent):
            return event.data
        elif event.data.status is not status:
            status = event.data.status
            say(f"job {event.data.id} {status}")
    return None


def show_progress_bar(events: Events, epochs: int) -> Job | None:
    """A live bar on stderr: epoch, iteration, cost, accuracy and ETA; epochs as lines above."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[stats]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("queued", total=None, stats="")
        cost = accuracy = None
        for event in events:
            if isinstance(event, CostsEvent):
                if event.data.iterations:
                    cost = event.data.iterations[-1].cost
                for metrics in event.data.epochs:
                    accuracy = metrics.val_accuracy or metrics.train_accuracy
                    bar.console.print(epoch_line(epochs, metrics), highlight=False)
                continue
            if isinstance(event, EndEvent):
                return event.data
            progress = event.data.progress
            eta = "" if progress.eta_seconds is None else f"  eta {progress.eta_seconds:.0f} s"
            bar.update(
                task,
                description=f"{event.data.status} epoch {progress.epoch}/{epochs}",
                completed=progress.iteration,
                total=progress.total_iterations,
                stats=f"iteration {progress.iteration}/{progress.total_iterations or '?'}  "
                f"cost {fmt(cost)}  accuracy {fmt(accuracy)}{eta}",
            )
    return None


# -- health --------------------------------------------------------------------------------------


@app.command()
def health(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Whether the server answers, its version and its workers."""
    status = client_of(ctx).health()
    if as_json:
        print_json(status)
        return
    jobs = status.jobs
    typer.echo(
        f"{status.status} (version {status.version}): {jobs.running} of {jobs.workers} "
        f"workers busy, {jobs.queued} queued"
    )


# -- datasets ------------------------------------------------------------------------------------


def dataset_fields(dataset: Dataset) -> dict[str, Any]:
    counts = ", ".join(f"{name} {count}" for name, count in dataset.class_counts.items())
    return {
        "id": dataset.id,
        "name": dataset.name,
        "samples": dataset.n_samples,
        "input shape": fmt_shape(dataset.input_shape),
        "classes": counts,
        "built in": "yes" if dataset.builtin else "no",
        "created": f"{dataset.created_at:%Y-%m-%d %H:%M:%S}",
    }


@datasets_app.command("upload")
def datasets_upload(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            exists=True,
            help="A .npz (X, y), a .zip of class folders, a folder of class folders, "
            "or the two files of an MNIST IDX pair.",
        ),
    ],
    name: Annotated[str | None, typer.Option(help="A label (default: the file name).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload a dataset; prints its id."""
    dataset = client_of(ctx).upload_dataset(paths, name)
    if as_json:
        print_json(dataset)
        return
    shape = fmt_shape(dataset.input_shape)
    say(f"uploaded {dataset.n_samples} samples of {shape} in {len(dataset.classes)} classes")
    typer.echo(dataset.id)


@datasets_app.command("list")
def datasets_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every dataset."""
    page = client_of(ctx).list_datasets()
    columns = ("id", "name", "samples", "shape", "classes")
    rows = [
        [d.id, d.name, d.n_samples, fmt_shape(d.input_shape), len(d.classes)] for d in page.datasets
    ]
    print_listing(page, columns, rows, as_json)


@datasets_app.command("show")
def datasets_show(ctx: typer.Context, dataset_id: str, as_json: JsonFlag = False) -> None:
    """One dataset: samples, input shape, classes and their counts."""
    dataset = client_of(ctx).get_dataset(dataset_id)
    print_record(dataset, dataset_fields(dataset), as_json)


@datasets_app.command("delete")
def datasets_delete(ctx: typer.Context, dataset_id: str, as_json: JsonFlag = False) -> None:
    """Delete an uploaded dataset."""
    client_of(ctx).delete_dataset(dataset_id)
    print_done({"deleted": dataset_id}, f"deleted dataset {dataset_id}", as_json)


# -- training ------------------------------------------------------------------------------------


def architecture_arg(value: str) -> str | dict[str, Any]:
    """A preset name as is, or the config in a JSON file."""
    path = Path(value)
    if not (value.endswith(".json") or path.is_file()):
        return value
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        usage_error(f"cannot read --architecture {value}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        usage_error(f"--architecture {value} is not valid JSON: {exc}")


@app.command()
def train(
    ctx: typer.Context,
    dataset: Annotated[
        str, typer.Option(help="A dataset id, or a file or folder to upload first.")
    ],
    architecture: Annotated[
        str, typer.Option(help="A preset (lenet5, convnet) or a FILE.json config.")
    ] = "lenet5",
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd, momentum, rmsprop or adam (the default).")
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(min=0)] = None,
    validation_split: Annotated[float | None, typer.Option(min=0, max=0.5)] = None,
    seed: Annotated[int | None, typer.Option(min=0)] = None,
    name: Annotated[str | None, typer.Option(help="A label for the job and its model.")] = None,
    follow: Annotated[bool, typer.Option(help="Show progress until the job ends.")] = False,
    wait: Annotated[bool, typer.Option(help="Wait quietly until the job ends.")] = False,
    timeout: TimeoutOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Submit a training job; prints its id.

    With --follow or --wait the exit code is the job's outcome: 0 succeeded, 1 failed, 3 cancelled.
    """
    client = client_of(ctx)
    config = architecture_arg(architecture)
    if Path(dataset).exists():
        uploaded = client.upload_dataset([Path(dataset)])
        say(f"uploaded {dataset} as dataset {uploaded.id}")
        dataset = uploaded.id
    settings: dict[str, Any] = {
        key: value
        for key, value in (
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("validation_split", validation_split),
            ("seed", seed),
        )
        if value is not None
    }
    if optimizer or learning_rate is not None:
        settings["optimizer"] = {"name": optimizer or "adam"}
        if learning_rate is not None:
            settings["optimizer"]["learning_rate"] = learning_rate
    job = client.submit_job(dataset, config, settings, name)
    if as_json:
        print_json(job)
    else:
        typer.echo(job.id)
        if not (follow or wait):
            say(f"job {job.id} {job.status}; follow it with: cnn jobs follow {job.id}")
    if follow or wait:
        finish(client, job, follow, as_json, timeout)


def finish(client: Client, job: Job, show: bool, as_json: bool, timeout: float | None) -> NoReturn:
    """Follow (`show`) or quietly wait for `job`, then exit with its outcome's code."""
    if show:
        follow_job(client, job, as_json, timeout)
    with detaching(job, "wait"):
        final = client.wait(job.id, timeout)
    print_done(final, outcome_line(final), as_json)
    raise typer.Exit(OUTCOME_EXIT[final.status])


# -- jobs ----------------------------------------------------------------------------------------


def job_fields(job: Job) -> dict[str, Any]:
    progress = job.progress
    metrics = job.metrics
    fields = {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "dataset": job.dataset_id,
        "epoch": f"{progress.epoch}/{progress.epochs}",
        "iteration": f"{progress.iteration}/{progress.total_iterations or '?'}",
        "eta": None if progress.eta_seconds is None else f"{progress.eta_seconds:.0f} s",
        "created": f"{job.created_at:%Y-%m-%d %H:%M:%S}",
        "model": job.model_id,
        "error": job.error,
    }
    if metrics:
        fields["metrics"] = epoch_line(progress.epochs, metrics)
    return fields


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs with this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Jobs, newest first."""
    page = client_of(ctx).list_jobs(status, limit, offset)
    columns = ("id", "name", "status", "epoch", "val_accuracy", "model")
    rows = [
        [
            j.id,
            j.name,
            j.status,
            f"{j.progress.epoch}/{j.progress.epochs}",
            fmt(j.metrics.val_accuracy if j.metrics else None),
            j.model_id,
        ]
        for j in page.jobs
    ]
    print_listing(page, columns, rows, as_json)
    if not as_json and page.count > offset + len(page.jobs):
        say(f"{page.count} jobs in all; see more with --offset {offset + len(page.jobs)}")


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """One job: status, progress, latest metrics, model or error."""
    job = client_of(ctx).get_job(job_id)
    print_record(job, job_fields(job), as_json)


@jobs_app.command("follow")
def jobs_follow(
    ctx: typer.Context, job_id: str, timeout: TimeoutOption = None, as_json: JsonFlag = False
) -> None:
    """Show a job's progress until it ends (JSON lines with --json); exit with its outcome."""
    client = client_of(ctx)
    finish(client, client.get_job(job_id), True, as_json, timeout)


@jobs_app.command("wait")
def jobs_wait(
    ctx: typer.Context, job_id: str, timeout: TimeoutOption = None, as_json: JsonFlag = False
) -> None:
    """Wait until a job ends; exit 0 succeeded, 1 failed, 3 cancelled."""
    client = client_of(ctx)
    finish(client, client.get_job(job_id), False, as_json, timeout)


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """Cancel a queued or running job."""
    job = client_of(ctx).cancel_job(job_id)
    print_done(job, f"job {job.id} {job.status}", as_json)


@jobs_app.command("costs")
def jobs_costs(
    ctx: typer.Context,
    job_id: str,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Every iteration's cost as CSV on stdout.")
    ] = False,
    png: Annotated[Path | None, typer.Option(help="Also save the cost curve to this PNG.")] = None,
    max_points: Annotated[int | None, typer.Option(min=2, help="Thin the iterations.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """A job's cost history: a table of epochs, every iteration with --csv."""
    client = client_of(ctx)
    history = client.job_costs(job_id, max_points=max_points)
    while not history.complete:  # a long history comes in pages
        page = client.job_costs(job_id, since=history.last_iteration)
        history = page.model_copy(
            update={
                "iterations": history.iterations + page.iterations,
                "epochs": history.epochs + page.epochs,
            }
        )
    if png is not None:
        png.write_bytes(client.cost_plot(job_id))
        say(f"saved the cost curve to {png}")
    if as_json:
        print_json(history)
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["epoch", "iteration", "cost"])
        writer.writerows([i.epoch, i.iteration, i.cost] for i in history.iterations)
    else:
        rows = [
            [e.epoch, fmt(e.cost), fmt(e.train_accuracy), fmt(e.val_cost), fmt(e.val_accuracy)]
            + [fmt(e.seconds, 2)]
            for e in history.epochs
        ]
        print_table("epoch", "cost", "accuracy", "val_cost", "val_accuracy", "seconds", rows=rows)


# -- models --------------------------------------------------------------------------------------


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every model, oldest first."""
    page = client_of(ctx).list_models()
    columns = ("id", "name", "dataset", "parameters", "val_accuracy")
    rows = [
        [m.id, m.name, m.dataset_id, f"{m.param_count:,}", fmt(m.metrics.val_accuracy)]
        for m in page.models
    ]
    print_listing(page, columns, rows, as_json)


def model_fields(model: Model) -> dict[str, Any]:
    metrics = model.metrics
    return {
        "id": model.id,
        "name": model.name,
        "job": model.job_id,
        "dataset": model.dataset_id,
        "input shape": fmt_shape(model.input_shape),
        "classes": ", ".join(model.classes),
        "parameters": f"{model.param_count:,}",
        "epochs trained": metrics.epochs_trained,
        "accuracy": f"{fmt(metrics.train_accuracy)} (validation {fmt(metrics.val_accuracy)})",
    }


@models_app.command("show")
def models_show(ctx: typer.Context, model_id: str, as_json: JsonFlag = False) -> None:
    """One model: classes, metrics, source job and its layers."""
    model = client_of(ctx).get_model(model_id)
    print_record(model, model_fields(model), as_json)
    if as_json:
        return
    rows = [
        [layer.index, layer.type, fmt_shape(layer.output_shape), f"{layer.param_count:,}"]
        for layer in model.layers
    ]
    print_table("layer", "type", "output", "parameters", rows=rows)


@models_app.command("download")
def models_download(
    ctx: typer.Context,
    model_id: str,
    format: Annotated[str, typer.Option(help="npz (loads with Network.load) or onnx.")] = "npz",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Default: model-ID.FORMAT")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Save a model file; prints its path."""
    if format not in ("npz", "onnx"):
        usage_error(f"--format {format}: choose npz or onnx")
    target = output or Path(f"model-{model_id}.{format}")
    path = client_of(ctx).download_model(model_id, target, format=format)
    if as_json:
        print_json({"model_id": model_id, "format": format, "path": str(path)})
    else:
        say(f"saved {path.stat().st_size:,} bytes")
        typer.echo(path)


@models_app.command("delete")
def models_delete(ctx: typer.Context, model_id: str, as_json: JsonFlag = False) -> None:
    """Delete a model."""
    client_of(ctx).delete_model(model_id)
    print_done({"deleted": model_id}, f"deleted model {model_id}", as_json)


# -- predict and evaluate ------------------------------------------------------------------------


def image_files(paths: list[Path], recursive: bool) -> list[Path]:
    """The files named, and the images (by suffix) in the folders named, in a stable order."""
    found = []
    for path in paths:
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            found += sorted(
                p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            found.append(path)
    return found


@app.command()
def predict(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="MODEL")],
    paths: Annotated[
        list[Path], typer.Argument(exists=True, metavar="FILE_OR_FOLDER...", show_default=False)
    ],
    top_k: Annotated[int, typer.Option(min=1, help="Classes listed per image.")] = 3,
    recursive: Annotated[bool, typer.Option(help="Also look in subfolders.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Predict images (files, or every image in the folders given)."""
    files = image_files(paths, recursive)
    if not files:
        usage_error("no images found (looked for " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")")
    client = client_of(ctx)
    predictions = []
    for start in range(0, len(files), IMAGES_PER_REQUEST):
        batch = files[start : start + IMAGES_PER_REQUEST]
        answer = client.predict(model_id, [(p.name, p.read_bytes()) for p in batch], top_k)
        for path, prediction in zip(batch, answer.predictions, strict=True):
            predictions.append(prediction.model_copy(update={"filename": str(path)}))
    if as_json:
        print_json(
            {"model_id": model_id, "predictions": [p.model_dump(mode="json") for p in predictions]}
        )
        return
    rows = [
        [
            p.filename,
            p.class_name,
            f"{p.probability:.4f}",
            ", ".join(f"{s.class_name} {s.probability:.3f}" for s in p.top_k),
        ]
        for p in predictions
    ]
    print_table("file", "class", "probability", f"top {top_k}", rows=rows)


@app.command()
def evaluate(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="MODEL")],
    dataset: Annotated[str, typer.Option(help="The id of a dataset with the model's classes.")],
    as_json: JsonFlag = False,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix on a dataset."""
    report = client_of(ctx).evaluate(model_id, dataset)
    if as_json:
        print_json(report)
        return
    say(f"accuracy {report.accuracy:.4f} on {report.n_samples} samples")
    rows = [
        [c.class_name, f"{c.precision:.4f}", f"{c.recall:.4f}", f"{c.f1:.4f}", c.support]
        for c in report.per_class
    ]
    print_table("class", "precision", "recall", "f1", "support", rows=rows)
    matrix = [[c, *row] for c, row in zip(report.classes, report.confusion_matrix, strict=True)]
    print_table("true \\ predicted", *report.classes, rows=matrix)


def main() -> None:
    """The `cnn` console script."""
    app(prog_name="cnn")
