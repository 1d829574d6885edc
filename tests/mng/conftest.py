"""Fixtures of the mng tier: locally built versions of this project, and an mng harness.

Versions: wheels of the working tree at ``GOOD`` and ``NEXT`` and a ``BROKEN`` one whose
``/readyz`` never passes (``tests.mng.wheels``), installed into virtualenvs made with
``--system-site-packages`` (the dependencies come from the interpreter running the tests: no
network). The session installs ``GOOD`` and ``BROKEN`` once into a cache; each test's venvs dir
links to them, and a test that wants mng to install a version itself leaves it out.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from runner.mng.venvs import VenvStore
from tests.mng.harness import MngHarness
from tests.mng.wheels import build_wheel, never_ready
from tests.support.controlplane import ControlPlaneProcess

GOOD = "0.9.1"
NEXT = "0.9.2"
BROKEN = "0.9.3"


@dataclass
class Versions:
    wheelhouse: Path
    cache: VenvStore

    @property
    def pip_args(self) -> tuple[str, ...]:
        return ("--no-index", "--find-links", str(self.wheelhouse), "--no-deps", "--ignore-installed")

    def ensure(self, version: str) -> None:
        anyio.run(self.cache.install, version)

    def venvs_dir(self, root: Path, *versions: str) -> Path:
        """A venvs dir for one test with ``versions`` already installed (links into the cache)."""
        (root / "versions").mkdir(parents=True, exist_ok=True)
        for version in versions:
            self.ensure(version)
            (root / "versions" / version).symlink_to(self.cache.path(version))
        return root


@pytest.fixture(scope="session")
def mng_versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    base = tmp_path_factory.mktemp("mng-versions")
    wheelhouse = base / "wheels"
    build_wheel(GOOD, wheelhouse)
    build_wheel(NEXT, wheelhouse)
    build_wheel(BROKEN, wheelhouse, patches={"runner/health.py": never_ready})
    versions = Versions(wheelhouse, VenvStore(root=base / "cache", system_site_packages=True))
    versions.cache = VenvStore(root=base / "cache", pip_args=versions.pip_args, system_site_packages=True)
    versions.ensure(GOOD)
    return versions


@pytest.fixture
def mng_cp(control_plane_factory: Callable[..., ControlPlaneProcess]) -> ControlPlaneProcess:
    # A short heartbeat period: a restarted runner is accepted once its predecessor has been
    # silent for two periods (one runner id, one process), so restarts take ~2 s, not ~11 s.
    return control_plane_factory(heart_beat_timeout=1.0)


@pytest.fixture
def mng_factory(
    mng_cp: ControlPlaneProcess, mng_versions: Versions, tmp_path: Path
) -> Iterator[Callable[..., MngHarness]]:
    """``factory(installed=(GOOD,), **env) -> MngHarness`` in process mode, not started yet."""
    made: list[MngHarness] = []

    def make(installed: tuple[str, ...] = (GOOD,), **env: str) -> MngHarness:
        harness = MngHarness(mng_cp, tmp_path / f"mng{len(made)}")
        venvs = mng_versions.venvs_dir(harness.root / "venvs", *installed)
        harness.extra.update(
            {
                "RUNNER_MNG_VENVS_DIR": str(venvs),
                "RUNNER_MNG_VERSION": GOOD,
                "RUNNER_MNG_PIP_ARGS": shlex.join(mng_versions.pip_args),
                "RUNNER_MNG_SYSTEM_SITE_PACKAGES": "true",
                **env,
            }
        )
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
