"""deploy/vm: the systemd units pass ``systemd-analyze verify`` and the cloud-init example parses.

The installed ``runner`` is not on this machine, so each unit is verified as written except for
``ExecStart``'s path (pointed at /bin/true): every other directive is checked by systemd itself.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.tools import require_tool

pytestmark = pytest.mark.unit

VM = Path(__file__).resolve().parents[2] / "deploy" / "vm"


@pytest.mark.parametrize("unit", ["byoc-runner.service", "byoc-runner-mng.service"])
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", hint="apt-get install systemd")
    text = (VM / unit).read_text()
    assert "ExecStart=/opt/byoc-runner/" in text
    lines = ["ExecStart=/bin/true" if line.startswith("ExecStart=") else line for line in text.splitlines()]
    (tmp_path / unit).write_text("\n".join(lines) + "\n")
    result = subprocess.run([analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_mng_unit_leaves_the_workload_running_on_stop() -> None:
    text = (VM / "byoc-runner-mng.service").read_text()
    assert "KillMode=process" in text
    assert "RUNNER_API_TOKEN_FILE=%d/mng-token" in text
    assert "RUNNER_API_TOKEN=" not in text


def test_cloud_init_example_parses() -> None:
    data = yaml.safe_load((VM / "cloud-init.yaml").read_text())
    assert "byoc-runner-mng.service" in " ".join(map(str, data["runcmd"]))
