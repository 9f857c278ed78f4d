"""The private servers' binaries: found, or the test skipped locally with the apt command to run
and failed under CI, so a CI run never passes by skipping the scale-out tests."""

from pathlib import Path

import pytest

from tests.support.servers import require


def test_a_binary_on_the_path_or_at_its_path_is_found(tmp_path: Path) -> None:
    assert require("sh", "dash").endswith("/sh")
    binary = tmp_path / "initdb"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert require(binary, "postgresql") == str(binary)


@pytest.mark.parametrize("missing", ["no-such-redis-server", Path("/nonexistent/bin/initdb")])
def test_a_missing_binary_skips_with_the_apt_command_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, missing: str | Path
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found: apt-get install the-package"):
        require(missing, "the-package")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not found: apt-get install the-package"):
        require(missing, "the-package")


def test_a_file_that_cannot_run_counts_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    binary = tmp_path / "pg_ctl"
    binary.write_text("not executable")
    with pytest.raises(pytest.fail.Exception, match="apt-get install postgresql"):
        require(binary, "postgresql")
