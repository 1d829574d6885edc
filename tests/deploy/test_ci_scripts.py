"""scripts/test.sh and scripts/services.sh, run as real processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO
from tests.support.tools import in_ci, require_tool

SCRIPTS = REPO / "scripts"


def fake_python(tmp_path: Path, exit_code: int) -> Path:
    """A stand-in interpreter that records its argv and exits with ``exit_code``."""
    path = tmp_path / "python"
    path.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/argv"\nexit {exit_code}\n')
    path.chmod(0o755)
    return path


def run_test_sh(tmp_path: Path, exit_code: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": str(fake_python(tmp_path, exit_code))}
    return subprocess.run(
        ["bash", str(SCRIPTS / "test.sh"), "-k", "x"], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.unit
def test_test_sh_runs_pytest_quietly_with_extra_args(tmp_path: Path) -> None:
    proc = run_test_sh(tmp_path, 0)
    assert proc.returncode == 0
    assert (tmp_path / "argv").read_text().split() == ["-m", "pytest", "-q", "-k", "x"]


@pytest.mark.unit
def test_test_sh_turns_no_tests_collected_into_a_failure(tmp_path: Path) -> None:
    proc = run_test_sh(tmp_path, 5)
    assert proc.returncode == 1
    assert "collected no tests" in proc.stderr


@pytest.mark.unit
@pytest.mark.parametrize("code", [1, 2])
def test_test_sh_passes_failures_through(tmp_path: Path, code: int) -> None:
    assert run_test_sh(tmp_path, code).returncode == code


@pytest.mark.unit
@pytest.mark.parametrize(
    "script", ["install-tools.sh", "services.sh", "test.sh", "build-kube-from-debian-src.sh"]
)
def test_shell_scripts_parse(script: str) -> None:
    proc = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert os.access(SCRIPTS / script, os.X_OK)


@pytest.mark.unit
def test_ci_run_parses_and_calls_the_test_command() -> None:
    ci = REPO / ".ci" / "run"
    proc = subprocess.run(["bash", "-n", str(ci)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    text = ci.read_text()
    assert "set -euo pipefail" in text
    assert "scripts/test.sh" in text
    assert "scripts/install-tools.sh" in text
    assert "trap 'stop_services; " in text  # services are stopped whatever happens


@pytest.mark.docker
def test_services_dockerd_has_no_bridge_and_no_iptables() -> None:
    """The dockerd of scripts/services.sh creates no network: only `host`, `none` (and no docker0)."""
    require_tool("docker")
    status = subprocess.run(
        ["bash", str(SCRIPTS / "services.sh"), "status"], capture_output=True, text=True, timeout=30
    )
    if status.returncode != 0:
        message = "scripts/services.sh's dockerd is not running (.ci/run starts it)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    env_line = subprocess.run(
        ["bash", str(SCRIPTS / "services.sh"), "env"], capture_output=True, text=True
    ).stdout
    docker_host = env_line.strip().split("=", 1)[1]
    env = {**os.environ, "DOCKER_HOST": docker_host}
    networks = subprocess.run(
        ["docker", "network", "ls", "--format", "{{.Name}}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert networks.returncode == 0, networks.stderr
    assert set(networks.stdout.split()) == {"host", "none"}
    assert not Path("/sys/class/net/docker0").exists()
