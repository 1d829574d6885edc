"""``runner exec`` runs every terraform operation on its own (issue 5, point 8).

Each step is a separate ``runner exec`` process sharing one state directory, so the in-process
control plane keeps the terraform state between them, exactly as a developer debugging a module
would use it: plan -> apply -> teardown plan -> apply.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from tests.support.terraform import data_module, write_module

pytestmark = [pytest.mark.terraform, pytest.mark.usefixtures("terraform_bin")]


def runner_exec(state: Path, *args: str) -> tuple[int, Any, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "exec", "--state-dir", str(state), "--log-format", "json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    try:
        outputs = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        outputs = proc.stdout
    return proc.returncode, outputs, proc.stderr


def test_plan_apply_teardown_from_a_shell(tmp_path: Path) -> None:
    module = write_module(tmp_path / "module", data_module(2))
    plan = tmp_path / "p.json"
    plan.write_text(
        json.dumps(
            {
                "local_archive": {"local_archive": str(module)},
                "terraform_backend": {"WorkspaceID": "tfw-exec-test"},
                "vars": {"name": "shell"},
            }
        )
    )
    state = tmp_path / "state"
    sandbox = ["--type", "sandbox-terraform", "--plan", str(plan)]

    code, outputs, err = runner_exec(
        state, *sandbox, "--operation", "create-apply-plan", "--result-out", str(tmp_path / "r.json")
    )
    assert code == 0, err[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["success"] is True
    raw = base64.b64decode(result["contents_gzip"])
    assert "tfplan" in zipfile.ZipFile(BytesIO(raw)).namelist()

    code, outputs, err = runner_exec(
        state, *sandbox, "--operation", "apply-plan", "--apply-plan", str(tmp_path / "r.json")
    )
    assert code == 0, err[-3000:]
    assert outputs["names"] == ["shell-0", "shell-1"]
    assert outputs["count"] == 2

    code, _, err = runner_exec(
        state, *sandbox, "--operation", "create-teardown-plan", "--result-out", str(tmp_path / "t.json")
    )
    assert code == 0, err[-3000:]
    code, outputs, err = runner_exec(
        state, *sandbox, "--operation", "apply-plan", "--apply-plan", str(tmp_path / "t.json")
    )
    assert code == 0, err[-3000:]
    assert outputs == {}
    assert "2 destroyed" in err


def test_a_plan_without_a_workspace_fails_clearly(tmp_path: Path) -> None:
    module = write_module(tmp_path / "module", data_module(1))
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"local_archive": {"local_archive": str(module)}}))
    code, _, err = runner_exec(
        tmp_path / "state",
        "--type",
        "sandbox-terraform",
        "--plan",
        str(plan),
        "--operation",
        "create-apply-plan",
        "--result-out",
        str(tmp_path / "r.json"),
    )
    assert code == 1
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["success"] is False
    assert "WorkspaceID" in result["error_metadata"]["message"]
    assert result["error_metadata"]["step"] == "prepare"
    assert "terraform init" not in err, "nothing ran"
