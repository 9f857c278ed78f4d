"""The Docker image, built and run by a real engine (marker `docker`: `make docker-test`).

The image is built from a clean copy of the tree (what git tracks, plus new files it does not
ignore: never the local .venv or data), then rebuilt after a code-only change, which must take
the dependency layers from the cache. A container of it (`--init`, the host's network, a named
volume on /data, a free port given as CNN_PORT) answers /health as a user other than root,
trains, is stopped by `docker stop` mid-training (within 10 s, exit code 0, the job
checkpointed), resumes on `docker start` to the same weights as a job that was never
interrupted, serves predictions and reports healthy; after `docker rm`, the shipped compose file
with a host-network override brings the same volume back with everything on it. Every compose
file is validated. Every container, volume and image made here is removed; the engine and the
base image stay.

The engine is this machine's own: `.ci/docker-standin.sh` starts it (no bridge network, so
builds and containers use the host's) with a stand-in `python:3.11-slim` built from Debian
packages, since no image registry is reachable. Without it the tests skip, saying how to run
them; with CI=true they start it or fail.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import yaml

from benchmarks.live_server import free_port, wait_for_health
from cnn_core import gemm
from tests.support.builders import holdout, png_bytes
from tests.support.server import REPO, model_params, submit, wait_for_iteration, wait_for_job

pytestmark = pytest.mark.docker

STANDIN = REPO / ".ci" / "docker-standin.sh"
BASE_IMAGE = "python:3.11-slim"
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_OVERRIDE = REPO / "docker-compose.override.yml"  # read with it by default
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
STOP_TIMEOUT_S = 10  # Docker's default: SIGKILL 10 s after SIGTERM
IMAGE_BUDGET_MB = 900  # on the stand-in base, itself 212 MB; MKL's libraries are 458 MB of it
# Long enough to be still running when `docker stop` comes, a few iterations in.
LONG_LENET = {
    "epochs": 8,
    "batch_size": 16,
    "validation_split": 0.1,
    "seed": 3,
    "optimizer": {"name": "adam", "learning_rate": 0.001},
}
SERVING_TIMEOUT_S = 180  # a start imports numpy, matplotlib and FastAPI from source
ITERATIONS_PER_EPOCH = 113  # 1,800 training digits of mnist-sample in batches of 16


def unavailable(reason: str) -> None:
    """Skip, saying how to run the Docker tests; in CI they must run, so fail."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: the Docker tests must run)")
    pytest.skip(f"{reason}; run them with `make docker-test` as root (it runs .ci/{STANDIN.name})")


def succeeds(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, timeout=60, check=False).returncode == 0


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    """`docker ARGS`' standard output; a failure shows the command and its output."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result.stdout.strip()


def engine_missing() -> str | None:
    """Why the Docker tests cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker command"
    if not succeeds("docker", "info"):
        return "no Docker engine answers"
    if not succeeds("docker", "image", "inspect", BASE_IMAGE):
        return f"the base image {BASE_IMAGE} is missing"
    return None


@pytest.fixture(scope="module")
def engine() -> None:
    """A running engine with the base image; in CI, started with the stand-in script."""
    missing = engine_missing()
    if missing and IN_CI:
        started = subprocess.run(
            [str(STANDIN)], capture_output=True, text=True, timeout=900, check=False
        )
        assert started.returncode == 0, f"{STANDIN} failed:\n{started.stdout}{started.stderr}"
        missing = engine_missing()
    if missing:
        unavailable(missing)


@pytest.fixture(scope="module")
def compose() -> list[str]:
    """The compose command: Docker's plugin, or Debian's `docker-compose`."""
    if shutil.which("docker") and succeeds("docker", "compose", "version"):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    unavailable("neither `docker compose` nor `docker-compose` is installed")


# The secrets compose files demand from the environment (`${NAME:?...}`), as an operator sets them.
COMPOSE_SECRETS = {"POSTGRES_PASSWORD": "compose-check", "CNN_API_KEY": "compose-check"}


def run_compose(
    compose: list[str], *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> None:
    result = subprocess.run(
        [*compose, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join([*compose, *args])}:\n{result.stdout}{result.stderr}"


def compose_projects() -> list[list[Path]]:
    """Every compose file of the repo, each as compose reads it: `X.override.yml` on top of
    `X.yml`, any other file alone."""
    found = sorted({*REPO.glob("docker-compose*.y*ml"), *REPO.glob("compose*.y*ml")})
    return [
        [path.with_name(path.name.replace(".override", "")), path]
        if ".override." in path.name
        else [path]
        for path in found
    ]


# --------------------------------------------------------------------------- the image


def clean_copy(destination: Path) -> Path:
    """The files git tracks or would track (deleted ones left out): no .venv, data or caches."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def build(context: Path, tag: str, *flags: str) -> float:
    """Seconds `docker build` took."""
    started = time.monotonic()
    docker(
        "build", "--network", "host", "--force-rm", "--tag", tag, *flags, str(context), timeout=900
    )
    return time.monotonic() - started


def layers(image: str) -> list[str]:
    return json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", image))


def cached_layers() -> set[str]:
    """Every layer the engine holds, in any image (intermediate ones included): what a build
    can take from the cache. Other runs' builds count: the cache may pick their copy of a
    step, whose layer differs from this run's (useradd and pip write timestamps)."""
    images = set(docker("image", "ls", "--all", "--quiet", "--no-trunc").split())
    # check=False: another run may remove one of them meanwhile; the others are still listed.
    found = docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", *images, check=False)
    return {layer for line in found.splitlines() for layer in json.loads(line)}


@dataclass(frozen=True)
class Image:
    tag: str
    build_s: float  # from scratch on the base image
    rebuild_s: float  # after a code-only change
    size_mb: float


@pytest.fixture(scope="module")
def image(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    """The image built from a clean copy, then rebuilt after a code-only change (that one is
    used), which must take the dependency layers from the cache."""
    context = clean_copy(tmp_path_factory.mktemp("context"))
    run = uuid.uuid4().hex[:12]
    first, tag, dependencies = (f"cnn-service-test:{run}-{n}" for n in ("first", "code", "deps"))
    try:
        build_s = build(context, first, "--no-cache")
        with (context / "app" / "__init__.py").open("a") as module:
            module.write("# a code-only change\n")
        cached = cached_layers()
        rebuild_s = build(context, tag)
        build(context, dependencies, "--target", "dependencies")
        shared = len(layers(dependencies))
        assert set(layers(tag)[:shared]) <= cached, (
            "a code-only change rebuilt the dependency layer: copy pyproject.toml and install "
            "the dependencies before copying the code"
        )
        assert len(layers(tag)) > shared, "the code is not in a layer of its own"
        assert layers(tag)[-1] not in cached, "the changed code came from the cache"
        size_mb = int(docker("image", "inspect", "--format", "{{.Size}}", tag)) / 1e6
        yield Image(tag, build_s, rebuild_s, size_mb)
    finally:
        docker("image", "rm", "--force", first, tag, dependencies, check=False)


def wait_serving(url: str, running: Callable[[], bool], logs: Callable[[], str]) -> None:
    """`wait_for_health` with a container's time to start and its logs."""
    wait_for_health(url, running, lambda: f":\n{logs()}", SERVING_TIMEOUT_S)


class Container:
    """`docker run --init --network host` of the image, on a named volume and a free port."""

    def __init__(self, image: str, volume: str, name: str) -> None:
        self.image, self.volume, self.name = image, volume, name
        self.url = f"http://127.0.0.1:{free_port()}"

    def run(self) -> None:
        docker(
            "run", "--detach", "--init", "--network", "host", "--name", self.name,
            "--volume", f"{self.volume}:/data",
            "--env", "CNN_HOST=127.0.0.1",  # the host's network: stay on its loopback
            "--env", f"CNN_PORT={self.url.rsplit(':', 1)[1]}",
            "--env", "CNN_POLL_INTERVAL=0.05",
            # The image's HEALTHCHECK, probed every second instead of every 30 s.
            "--health-interval", "1s",
            self.image,
        )  # fmt: skip
        wait_serving(self.url, self.running, self.logs)

    def start(self) -> None:
        docker("start", self.name)
        wait_serving(self.url, self.running, self.logs)

    def stop(self) -> float:
        """`docker stop`; the seconds it took."""
        started = time.monotonic()
        docker("stop", "--time", str(STOP_TIMEOUT_S), self.name, timeout=60)
        return time.monotonic() - started

    def state(self) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.name))

    def running(self) -> bool:
        return self.state()["Running"]

    def logs(self) -> str:
        result = subprocess.run(
            ["docker", "logs", "--tail", "80", self.name], capture_output=True, text=True
        )
        return result.stdout + result.stderr

    def wait_healthy(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while (health := self.state()["Health"])["Status"] != "healthy":
            assert health["Status"] != "unhealthy", health["Log"]
            assert time.monotonic() < deadline, f"not healthy in {timeout} s: {health}"
            time.sleep(0.2)
        return health

    def uids(self) -> set[int]:
        """The effective uids of the container's processes (the init and all it started), as
        the host sees them."""
        init = psutil.Process(self.state()["Pid"])
        uids = set()
        for process in [init, *init.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                uids.add(process.uids().effective)
        return uids

    def remove(self) -> None:
        docker("rm", "--force", "--volumes", self.name, check=False)


@contextlib.contextmanager
def compose_up(compose: list[str], image: Image, volume: str, folder: Path) -> Iterator[str]:
    """The shipped docker-compose.yml up with a host-network override in place of the default
    one (which publishes the port), on the image built here and an existing volume; its URL."""
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    (service,) = config["services"]
    (data,) = config["volumes"]
    port = free_port()
    override = folder / "docker-compose.host-network.yml"
    override.write_text(
        yaml.safe_dump(
            {
                "services": {
                    service: {
                        "image": image.tag,  # not a build of its own
                        "network_mode": "host",
                        "environment": ["CNN_HOST=127.0.0.1", f"CNN_PORT={port}"],
                    }
                },
                "volumes": {data: {"external": True, "name": volume}},
            }
        )
    )
    project = [
        f"--file={COMPOSE_FILE}",
        f"--file={override}",
        f"--project-name=cnn-service-test-{uuid.uuid4().hex[:12]}",
    ]
    url = f"http://127.0.0.1:{port}"

    def logs() -> str:
        result = subprocess.run([*compose, *project, "logs", "--tail=80"], cwd=REPO,
                                capture_output=True, text=True)  # fmt: skip
        return result.stdout + result.stderr

    def running() -> bool:
        ps = subprocess.run([*compose, *project, "ps", "--quiet"], cwd=REPO,
                            capture_output=True, text=True)  # fmt: skip
        return any(docker("inspect", "--format", "{{.State.Running}}", c) == "true"
                   for c in ps.stdout.split())  # fmt: skip

    try:
        run_compose(compose, *project, "up", "--detach", "--no-build")
        wait_serving(url, running, logs)
        yield url
    finally:
        run_compose(compose, *project, "down", "--timeout", str(STOP_TIMEOUT_S))


def files_in_volume(image: Image, volume: str, folder: str) -> list[str]:
    return docker(
        "run", "--rm", "--network", "host", "--volume", f"{volume}:/data", "--entrypoint", "ls",
        image.tag, f"/data/{folder}",
    ).split()  # fmt: skip


def gemm_backend(image: Image) -> str:
    """The product library cnn_core computes with in the image, and whether MKL, which the image
    keeps in part, loads there: "mkl True" on an Intel CPU, "numpy True" on others."""
    return docker(
        "run", "--rm", "--network", "host", "--entrypoint", "python", image.tag, "-c",
        "from cnn_core import gemm; print(gemm.BACKEND, gemm.MKL_PATH is not None)",
    ).strip()  # fmt: skip


def predict_digits(client: httpx.Client, model_id: str, count: int) -> list[dict]:
    X, _ = holdout()
    files = [("files", (f"{i}.png", png_bytes(X[i]))) for i in range(count)]
    response = client.post(f"/models/{model_id}/predict", files=files)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


@pytest.mark.timeout(900)
def test_image_trains_stops_cleanly_resumes_and_its_volume_outlives_the_container(
    image: Image, compose: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert gemm_backend(image) == f"{gemm.BACKEND} True"  # the host's CPU, the same rule
    run = uuid.uuid4().hex[:12]
    volume = f"cnn-service-test-{run}"
    docker("volume", "create", volume)
    container = Container(image.tag, volume, f"cnn-service-test-{run}")
    try:
        started = time.monotonic()
        container.run()
        serving_s = time.monotonic() - started
        assert 0 not in container.uids(), f"processes run as root: uids {container.uids()}"

        with httpx.Client(base_url=container.url, timeout=30) as client:
            assert client.get("/health").json()["status"] == "ok"
            interrupted = submit(client, "mnist-sample", "lenet5", **LONG_LENET)
            reference = submit(client, "mnist-sample", "lenet5", **LONG_LENET)  # queued
            state = wait_for_iteration(client, interrupted["id"], 20)
            assert state["status"] == "running", state
            assert 0 not in container.uids(), "a training process runs as root"

        stop_s = container.stop()  # mid-epoch: SIGTERM checkpoints the iteration reached
        stopped = container.state()
        assert stopped["ExitCode"] == 0, f"docker stop: {stopped}:\n{container.logs()}"
        assert stop_s < STOP_TIMEOUT_S
        checkpoints = files_in_volume(image, volume, "checkpoints")
        assert any(re.fullmatch(rf"{interrupted['id']}\.\d+\.npz", f) for f in checkpoints)

        started = time.monotonic()
        container.start()
        restart_s = time.monotonic() - started
        with httpx.Client(base_url=container.url, timeout=30) as client:
            resumed = wait_for_job(client, interrupted["id"], timeout=600)
            uninterrupted = wait_for_job(client, reference["id"], timeout=600)
            assert resumed["status"] == uninterrupted["status"] == "succeeded", resumed
            total = LONG_LENET["epochs"] * ITERATIONS_PER_EPOCH
            costs = client.get(f"/jobs/{interrupted['id']}/costs").json()
            assert [i["iteration"] for i in costs["iterations"]] == list(range(1, total + 1))
            got = model_params(client, resumed["model_id"], tmp_path)
            expected = model_params(client, uninterrupted["model_id"], tmp_path)
            assert got.keys() == expected.keys()
            for name in expected:
                np.testing.assert_array_equal(got[name], expected[name], err_msg=name)

            _, labels = holdout()
            predictions = predict_digits(client, resumed["model_id"], 20)
            assert sum(p["label"] == labels[i] for i, p in enumerate(predictions)) >= 16
            # What the image leaves out (byte-code, fontTools' speedups, source maps) is not
            # missed: matplotlib draws the cost curve, the docs page loads.
            plot = client.get(f"/jobs/{interrupted['id']}/costs.png")
            assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG"), plot.text
            assert client.get("/docs").status_code == 200

        health = container.wait_healthy()
        assert health["Log"][-1]["ExitCode"] == 0, health
        idle_stop_s = container.stop()
        assert container.state()["ExitCode"] == 0
        docker("rm", container.name)

        started = time.monotonic()
        with compose_up(compose, image, volume, tmp_path) as url:
            compose_serving_s = time.monotonic() - started
            with httpx.Client(base_url=url, timeout=30) as client:
                assert client.get(f"/jobs/{interrupted['id']}").json()["status"] == "succeeded"
                assert predict_digits(client, resumed["model_id"], 20) == predictions
    finally:
        container.remove()
        docker("volume", "rm", "--force", volume, check=False)

    with capsys.disabled():
        print(
            f"\ndocker: build {image.build_s:.1f} s from the base, rebuild after a code-only "
            f"change {image.rebuild_s:.1f} s, image {image.size_mb:.0f} MB; /health "
            f"{serving_s:.1f} s after `docker run`, {restart_s:.1f} s after `docker start`, "
            f"{compose_serving_s:.1f} s after `compose up`; `docker stop` {stop_s:.2f} s while "
            f"training, {idle_stop_s:.2f} s idle, exit code 0"
        )
    assert image.size_mb < IMAGE_BUDGET_MB, f"the image is {image.size_mb:.0f} MB"


# --------------------------------------------------------------------------- compose


def test_every_compose_file_is_valid(compose: list[str]) -> None:
    projects = compose_projects()
    assert [COMPOSE_FILE] in projects and [COMPOSE_FILE, COMPOSE_OVERRIDE] in projects
    for files in projects:
        paths = (f"--file={path}" for path in files)
        run_compose(compose, *paths, "config", "--quiet", env=COMPOSE_SECRETS)


def test_compose_publishes_loopback_only_with_a_named_volume_and_init() -> None:
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    ((name, service),) = config["services"].items()
    assert service["init"] is True
    # Published ports and the host's network exclude each other, and an override can add
    # ports but not take them away: they are in the default override.
    assert "ports" not in service
    override = yaml.safe_load(COMPOSE_OVERRIDE.read_text())["services"][name]
    assert override["ports"] == ["127.0.0.1:8000:8000"]
    named = [v.split(":")[0] for v in service["volumes"] if v.endswith(":/data")]
    assert named and named[0] in config["volumes"], "/data must be a named volume"
    # A key without a value is passed through from the shell only when set there; an
    # empty CNN_API_KEY would otherwise reach the service.
    assert not any(str(e).startswith("CNN_API_KEY=") for e in service.get("environment", []))


# --------------------------------------------------------------------------- build context


def test_dockerignore_lets_through_only_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context should start from nothing (no .venv, data, .git)"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copied.update(w.rstrip("/") for w in words[1:-1] if not w.startswith("--"))
    assert allowed == copied
