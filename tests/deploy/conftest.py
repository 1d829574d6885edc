"""Fixtures for the deploy artifacts' tests: the real helm and terraform binaries, isolated homes."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "byoc-runner"
ECS_MODULE = REPO / "deploy" / "ecs"
VALUES_DIR = Path(__file__).resolve().parent / "values"
TOOLS_DIR = Path(os.environ.get("TOOLS_DIR", "/opt/runner-test-tools"))


@dataclass(frozen=True)
class Tool:
    """A real binary with an environment that keeps its state under the test's temp dir."""

    path: str
    env: dict[str, str]

    def run(
        self, args: Sequence[str], *, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.path, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _find(name: str) -> str:
    # scripts/install-tools.sh puts helm in $TOOLS_DIR/bin; scripts/test.sh adds that to PATH,
    # but a developer running pytest directly may not have.
    candidate = TOOLS_DIR / "bin" / name
    if shutil.which(name) is None and candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return require_tool(name, hint="scripts/install-tools.sh installs it")


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Tool:
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        # No cluster: `helm template` must never reach one.
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    return Tool(_find("helm"), env)


@pytest.fixture(scope="session")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> Tool:
    home = tmp_path_factory.mktemp("tf-home")
    rc = home / "terraformrc"
    rc.write_text("")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TF_CLI_CONFIG_FILE": str(rc),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
        "TF_DATA_DIR": str(home / "data"),
    }
    return Tool(_find("terraform"), env)
