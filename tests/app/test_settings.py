"""Settings from `CNN_*` environment variables, and the defaults that depend on the machine."""

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No `CNN_*` variable set, whatever the environment running the tests."""
    for name in list(os.environ):
        if name.upper().startswith("CNN_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(("cpus", "threads"), [(None, 1), (1, 1), (2, 2), (16, 2)])
def test_train_threads_default_to_the_cpus_but_at_most_two(
    clean_env: pytest.MonkeyPatch, cpus: int | None, threads: int
) -> None:
    clean_env.setattr(os, "cpu_count", lambda: cpus)
    assert Settings(_env_file=None).train_threads == threads


def test_settings_come_from_cnn_variables(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("CNN_DATA_DIR", str(tmp_path))
    clean_env.setenv("CNN_TRAIN_THREADS", "3")
    clean_env.setenv("CNN_WORKER_MEMORY_MB", "0")
    clean_env.setenv("CNN_API_KEY", "")
    settings = Settings(_env_file=None)
    assert settings.data_dir == tmp_path and settings.train_threads == 3
    assert settings.worker_memory_mb == 0 and settings.api_key is None  # empty: no key
    clean_env.setenv("CNN_WORKERS", "0")
    with pytest.raises(ValidationError, match="workers"):
        Settings(_env_file=None)
