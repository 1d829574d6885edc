"""The local workflow file: durations, validation, and the config, run and plan built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.workflow_file import (
    WorkflowFileError,
    load_workflow_file,
    parse_duration,
    parse_workflow,
)

pytestmark = pytest.mark.unit

NS = 10**9


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        (None, 0),
        (0, 0),
        (90, 90 * NS),
        ("90", 90 * NS),
        ("1.5", int(1.5 * NS)),
        ("90s", 90 * NS),
        ("1m30s", 90 * NS),
        ("500ms", NS // 2),
        ("2h", 7200 * NS),
    ],
)
def test_durations(value: object, ns: int) -> None:
    assert parse_duration(value, "timeout") == ns


@pytest.mark.parametrize("value", ["soon", "10 s", "1m30", "-5", -1, True, [1]])
def test_bad_durations_name_the_field(value: object) -> None:
    with pytest.raises(WorkflowFileError, match="timeout"):
        parse_duration(value, "timeout")


def test_config_run_and_plan_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "smoke.yaml"
    path.write_text(
        "timeout: 10m\n"
        "run_env_vars: {GREETING: hello, DEBUG: true}\n"
        "override_env_vars: {LEVEL: 3}\n"
        "steps:\n"
        "  - name: check\n"
        "    command: ./check.sh --fast\n"
        "    env_vars: {MODE: fast}\n"
        "    timeout: 30s\n"
        "    git_source: {url: 'file:///srv/ops', ref: main, path: scripts}\n"
        "  - name: report\n"
        "    inline_contents: |\n"
        "      echo done\n"
    )
    spec = load_workflow_file(path)
    assert spec.name == "smoke"
    assert spec.job_fields() == {"execution_timeout": 660 * NS}
    body = spec.config_body()
    assert body["timeout"] == 600 * NS
    assert body["steps"][0] == {
        "name": "check",
        "env_vars": {"MODE": "fast"},
        "command": "./check.sh --fast",
        "timeout": 30 * NS,
        "public_git_vcs_config": {"repo": "file:///srv/ops", "branch": "main", "directory": "scripts"},
    }
    assert spec.run_body("awc1") == {
        "action_workflow_config_id": "awc1",
        "run_env_vars": {"GREETING": "hello", "DEBUG": "true"},
    }
    config = {"id": "awc1", "action_workflow_id": "acw1", "steps": [{"id": "s1"}, {"id": "s2"}]}
    run = {"id": "iar1", "steps": [{"id": "r1", "step_id": "s1"}, {"id": "r2", "step_id": "s2"}]}
    plan = spec.plan(config, run)
    assert plan["id"] == "iar1"
    assert plan["install_id"] == "local"
    assert plan["override_env_vars"] == {"LEVEL": "3"}
    assert [s["run_id"] for s in plan["steps"]] == ["r1", "r2"]
    assert plan["steps"][0]["interpolated_command"] == "./check.sh --fast"
    assert plan["steps"][0]["git_source"]["url"] == "file:///srv/ops"
    assert plan["steps"][1]["interpolated_inline_contents"] == "echo done\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "steps must be a non-empty list"),
        ({"steps": [{"command": "x"}]}, r"steps\[0\].name is required"),
        ({"steps": [{"name": "a"}]}, "needs command or inline_contents"),
        ({"steps": [{"name": "a", "command": "x", "cmd": "y"}]}, "unknown keys cmd"),
        ({"stepz": []}, "unknown keys stepz"),
        (
            {"steps": [{"name": "a", "command": "x", "git_source": {"ref": "main"}}]},
            "git_source.url is required",
        ),
        ({"steps": [{"name": "a", "command": "x", "env_vars": {"A": {"b": 1}}}]}, "must be a string"),
    ],
)
def test_bad_files_are_clear_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(WorkflowFileError, match=message):
        parse_workflow(data)


def test_a_file_that_is_not_yaml_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("steps: [\n")
    with pytest.raises(WorkflowFileError, match=r"bad\.yaml: not valid YAML"):
        load_workflow_file(path)
