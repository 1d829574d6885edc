"""The supervisor's pure decisions and the version choice of mng-runner-update-version."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from handlers.mng.version import VersionError as NoVersion
from handlers.mng.version import resolve_version
from runner.config import ConfigError
from runner.mng.app import parse_env_file, workload_health_url
from runner.mng.policy import (
    ExitKind,
    ReadyResult,
    RestartPolicy,
    Verdict,
    VersionError,
    after_crash,
    after_update,
    check_version,
    classify_exit,
    describe_exit,
    rollback_message,
    update_on_restart,
)

pytestmark = pytest.mark.unit


def test_exit_codes() -> None:
    assert classify_exit(0) is ExitKind.STOPPED
    assert classify_exit(75) is ExitKind.RESTART
    assert classify_exit(1) is ExitKind.CRASH
    assert classify_exit(-9) is ExitKind.CRASH
    assert classify_exit(None) is ExitKind.CRASH
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(2) == "exit code 2"


def test_backoff_doubles_within_the_window_and_the_limit_is_a_crash_loop() -> None:
    policy = RestartPolicy(base=1.0, cap=8.0, crash_loop_limit=4, window=60.0)
    first = after_crash([100.0], 100.0, policy)
    assert not first.crash_loop
    assert 0.5 <= first.delay <= 1.0
    assert first.recent_crashes == 1
    third = after_crash([100.0, 101.0, 102.0], 102.0, policy)
    assert not third.crash_loop
    assert 2.0 <= third.delay <= 4.0
    loop = after_crash([100.0, 101.0, 102.0, 103.0], 103.0, policy)
    assert loop.crash_loop
    assert loop.recent_crashes == 4
    # Old crashes age out of the window: a runner that crashed long ago starts from the base again.
    aged = after_crash([0.0, 1.0, 2.0, 200.0], 200.0, policy)
    assert not aged.crash_loop
    assert aged.recent_crashes == 1
    assert aged.delay <= 1.0


def test_backoff_never_exceeds_its_cap() -> None:
    policy = RestartPolicy(base=1.0, cap=5.0, crash_loop_limit=100, window=1000.0)
    decision = after_crash([float(i) for i in range(30)], 29.0, policy)
    assert 2.5 <= decision.delay <= 5.0


def test_version_comes_from_metadata_first_then_settings() -> None:
    assert resolve_version("1.2.0", {"version": "1.3.0"}) == "1.3.0"
    assert resolve_version("1.2.0", {"container_image_tag": "1.4.0"}) == "1.4.0"
    assert resolve_version("1.2.0", {"shutdown_type": "vm"}) == "1.2.0"
    assert resolve_version(" 1.2.0 ", None) == "1.2.0"
    with pytest.raises(NoVersion, match="container_image_tag"):
        resolve_version("", {})


def test_versions_the_supervisor_accepts() -> None:
    assert check_version("0.9.2+local.1") == "0.9.2+local.1"
    for bad in ("-e", "../x", "1.0 --index-url=http://x", "", "a/b", "x" * 200):
        with pytest.raises(VersionError):
            check_version(bad)


def test_exit_75_updates_only_to_a_different_valid_version() -> None:
    assert update_on_restart("1.0", "1.1") == "1.1"
    assert update_on_restart("1.0", "1.0") is None
    assert update_on_restart("1.0", None) is None
    assert update_on_restart("1.0", "--evil") is None


def test_rollback_decision() -> None:
    ready = ReadyResult(True, 2.0, "ready")
    never = ReadyResult(False, 8.0, "/readyz answered 503")
    assert after_update(ready, have_previous=True) is Verdict.KEEP
    assert after_update(never, have_previous=True) is Verdict.ROLL_BACK
    assert after_update(never, have_previous=False) is Verdict.KEEP  # nothing to go back to
    message = rollback_message("2.0", "1.0", never, 8.0, old_ready=True)
    assert message == (
        "version 2.0 failed its health check (/readyz): it was not ready within 8s (/readyz answered 503); "
        "rolled back to 1.0 and is ready again"
    )
    died = rollback_message(
        "2.0", "1.0", ReadyResult(False, 1.0, "the workload exited", exited=True), 8.0, old_ready=False
    )
    assert "exited before it was ready" in died
    assert "not ready either" in died


def test_workload_env_file(tmp_path: Path) -> None:
    env = tmp_path / "workload.env"
    env.write_text(
        "# comment\nexport RUNNER_ID=run1\nRUNNER_API_URL='https://x'\n\nRUNNER_HEALTH_ADDR=0.0.0.0:9099\n"
    )
    parsed = parse_env_file(env)
    assert parsed == {
        "RUNNER_ID": "run1",
        "RUNNER_API_URL": "https://x",
        "RUNNER_HEALTH_ADDR": "0.0.0.0:9099",
    }
    assert workload_health_url(parsed) == "http://127.0.0.1:9099/readyz"
    env.write_text("RUNNER_API_TOKEN=secret\n")
    with pytest.raises(ConfigError, match="--workload-token-file"):
        parse_env_file(env)
    with pytest.raises(ConfigError, match="off"):
        workload_health_url({"RUNNER_HEALTH_ADDR": "off"})


def test_the_management_handlers_are_registered_entry_points() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    table = pyproject["project"]["entry-points"]["byoc_runner.handlers"]
    for job_type in ("mng-shut-down", "mng-runner-restart", "mng-runner-update-version", "mng-vm-shut-down"):
        assert table[job_type].startswith("handlers.mng.jobs:")
    assert "mng-fetch-token" not in table
