"""scripts/test.sh and scripts/services.sh, run as real processes; the lock files read as data."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    "script", ["install-tools.sh", "services.sh", "test.sh", "build-kube-from-debian-src.sh", "lock.sh"]
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


# --------------------------------------------------------------------------- the locked set

LOCK_TEST = REPO / "requirements" / "test.txt"
LOCK_RUNTIME = REPO / "requirements" / "runtime.txt"
# The lock's target (scripts/lock.sh): CPython 3.11 on linux x86_64.
TARGET_ENV = {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")
HASH = re.compile(r"^\s+--hash=sha256:([0-9a-f]{64})(?: \\)?$")


def read_lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes); fails on anything but pins with hashes (no ranges, no URLs)."""
    pins: dict[str, tuple[str, set[str]]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if pin := PIN.match(line):
            current = canonicalize_name(pin.group(1))
            assert current not in pins, f"{path.name}: {current} pinned twice"
            pins[current] = (pin.group(2), set())
        elif digest := HASH.match(line):
            assert current, f"{path.name}: a hash before any pin"
            pins[current][1].add(digest.group(1))
        else:
            raise AssertionError(f"{path.name}: not a pin or a hash: {line!r}")
    for name, (_, hashes) in pins.items():
        assert hashes, f"{path.name}: {name} has no hash"
    return {name: (version, frozenset(hashes)) for name, (version, hashes) in pins.items()}


def declared(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    raw = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    out = []
    for text in raw:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(TARGET_ENV):
            out.append(requirement)
    return out


@pytest.mark.unit
@pytest.mark.parametrize(("lock", "extra"), [(LOCK_RUNTIME, None), (LOCK_TEST, "test")])
def test_the_lock_satisfies_every_declared_range(lock: Path, extra: str | None) -> None:
    """pyproject.toml's ranges and the lock agree: scripts/lock.sh was run after the last change."""
    pins = read_lock(lock)
    wanted = declared(None) + (declared(extra) if extra else [])
    assert wanted
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock.name} does not pin {requirement.name} (run scripts/lock.sh)"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {name}=={version}, outside pyproject's {requirement} (run scripts/lock.sh)"
        )
    assert Marker("python_version >= '3.11'").evaluate(TARGET_ENV)


@pytest.mark.unit
def test_runtime_lock_is_the_test_lock_without_the_test_tools() -> None:
    """The image installs the very versions (and files) that the tests ran against."""
    runtime, test = read_lock(LOCK_RUNTIME), read_lock(LOCK_TEST)
    for name, (version, hashes) in runtime.items():
        assert name in test, f"{name} is in the runtime lock only"
        assert test[name] == (version, hashes), f"{name}: runtime and test locks differ"
    assert "pytest" in test
    assert "pytest" not in runtime
    assert "schemathesis" not in runtime


@pytest.mark.unit
def test_setup_ci_and_lock_script_use_the_lock() -> None:
    test_sh = (SCRIPTS / "test.sh").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    for text in (test_sh, ci):
        assert "pip install -q --require-hashes -r requirements/test.txt" in text
        assert "pip install -q --no-deps -e ." in text
        assert "'.[test]'" not in text, "an unlocked install would pick whatever is newest"
    lock_sh = (SCRIPTS / "lock.sh").read_text()
    assert "--generate-hashes" in lock_sh
    assert "--python-version 3.11" in lock_sh
    assert "--constraint requirements/test.txt" in lock_sh
    for lock in (LOCK_TEST, LOCK_RUNTIME):
        assert "#    scripts/lock.sh" in lock.read_text(), f"{lock.name} was not written by scripts/lock.sh"


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
