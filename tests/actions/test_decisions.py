"""The pure decisions of the actions-workflow handler: step matching by id, command choice and
resolution, environment layering, outputs parsing and merging, deadlines."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from handlers.actions.command import (
    INLINE_SHELL,
    CommandError,
    choose_command,
    inline_argv,
    resolve_program,
    split_command,
)
from handlers.actions.env import builtins, layer_env
from handlers.actions.outputs import OutputsError, job_outputs, parse_outputs
from handlers.actions.repos import repo_dir_name
from handlers.actions.steps import ConfigStep, WorkflowMismatch, match_steps, parse_config, parse_run
from handlers.actions.timeouts import step_deadline, workflow_deadline
from runner.sdk.plans import ActionStep

pytestmark = pytest.mark.unit


def _run(*pairs: tuple[str, str]) -> dict[str, object]:
    return {
        "id": "iar1",
        "action_workflow_config_id": "awc1",
        "steps": [{"id": rid, "step_id": sid} for rid, sid in pairs],
        "run_env_vars": {"R": "1"},
    }


def _config(*ids_names: tuple[str, str]) -> dict[str, object]:
    return {
        "id": "awc1",
        "timeout": 30_000_000_000,
        "steps": [
            {"id": i, "name": n, "idx": k, "command": f"echo {n}"} for k, (i, n) in enumerate(ids_names)
        ],
    }


# --------------------------------------------------------------------------- matching


def test_steps_are_matched_by_id_not_by_index() -> None:
    run = parse_run(_run(("ars1", "aws1"), ("ars2", "aws2")))
    config = parse_config(_config(("aws2", "second"), ("aws1", "first")))  # config order differs
    plan = [
        ActionStep(run_id="ars2", interpolated_command="b"),
        ActionStep(run_id="ars1", interpolated_command="a"),
    ]
    steps = match_steps(plan, run, config)
    assert [(s.run_step_id, s.name, s.plan.interpolated_command) for s in steps] == [
        ("ars1", "first", "a"),
        ("ars2", "second", "b"),
    ]
    assert config.timeout_ns == 30_000_000_000
    assert run.run_env_vars == {"R": "1"}


def test_a_plan_step_missing_is_an_error_naming_it() -> None:
    run = parse_run(_run(("ars1", "aws1"), ("ars2", "aws2")))
    config = parse_config(_config(("aws1", "a"), ("aws2", "b")))
    with pytest.raises(WorkflowMismatch, match="run step ars2 has no plan step"):
        match_steps([ActionStep(run_id="ars1")], run, config)


def test_an_extra_plan_step_or_config_step_is_an_error() -> None:
    run = parse_run(_run(("ars1", "aws1")))
    config = parse_config(_config(("aws1", "a"), ("aws9", "z")))
    with pytest.raises(WorkflowMismatch) as caught:
        match_steps([ActionStep(run_id="ars1"), ActionStep(run_id="arsX")], run, config)
    assert "plan steps not in the run: arsX" in str(caught.value)
    assert "config steps not in the run: aws9" in str(caught.value)


def test_a_run_step_naming_an_unknown_config_step_is_an_error() -> None:
    run = parse_run(_run(("ars1", "nope")))
    config = parse_config(_config(("aws1", "a")))
    with pytest.raises(WorkflowMismatch, match="names config step 'nope'"):
        match_steps([ActionStep(run_id="ars1")], run, config)


def test_repeated_ids_and_an_empty_run_are_errors() -> None:
    config = parse_config(_config(("aws1", "a")))
    with pytest.raises(WorkflowMismatch, match="plan step run_id ids repeat: ars1"):
        match_steps(
            [ActionStep(run_id="ars1"), ActionStep(run_id="ars1")], parse_run(_run(("ars1", "aws1"))), config
        )
    with pytest.raises(WorkflowMismatch, match="the run has no steps"):
        match_steps([], parse_run(_run()), parse_config(_config()))


def test_a_negative_or_non_numeric_timeout_is_refused() -> None:
    with pytest.raises(WorkflowMismatch, match="must not be negative"):
        parse_config({"timeout": -1, "steps": []})
    with pytest.raises(WorkflowMismatch, match="number of nanoseconds"):
        parse_config({"steps": [{"id": "a", "name": "a", "timeout": "5s"}]})


# --------------------------------------------------------------------------- commands


CFG = ConfigStep(id="aws1", name="s", idx=0, command="echo raw", inline_contents="echo raw inline")


def test_interpolated_inline_contents_come_first() -> None:
    plan = ActionStep(interpolated_inline_contents="echo hi", interpolated_command="echo cmd")
    choice = choose_command(plan, CFG)
    assert (choice.kind, choice.text, choice.origin) == ("inline", "echo hi", "plan")


def test_interpolated_command_comes_before_the_configs() -> None:
    choice = choose_command(ActionStep(interpolated_command="echo cmd"), CFG)
    assert (choice.kind, choice.text, choice.origin) == ("command", "echo cmd", "plan")


def test_the_configs_inline_contents_then_its_command() -> None:
    choice = choose_command(ActionStep(), CFG)
    assert (choice.kind, choice.text, choice.origin) == ("inline", "echo raw inline", "config")
    choice = choose_command(ActionStep(), ConfigStep(id="a", name="s", idx=0, command="echo raw"))
    assert (choice.kind, choice.text, choice.origin) == ("command", "echo raw", "config")


def test_a_step_without_any_command_is_an_error() -> None:
    with pytest.raises(CommandError, match="no command and no inline_contents"):
        choose_command(ActionStep(interpolated_command="  "), ConfigStep(id="a", name="s", idx=0))


def test_an_inline_script_runs_with_bash_unless_it_has_a_shebang(tmp_path: Path) -> None:
    script = tmp_path / "s"
    assert inline_argv(script, "echo hi\n") == [*INLINE_SHELL, str(script)]
    assert INLINE_SHELL == ("bash", "-eo", "pipefail")
    assert inline_argv(script, "#!/usr/bin/env python3\nprint(1)\n") == [str(script)]


def test_commands_split_like_a_shell_without_one() -> None:
    assert split_command("./run.sh 'two words' x") == ["./run.sh", "two words", "x"]
    with pytest.raises(CommandError, match="cannot split"):
        split_command("echo 'unclosed")


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_dot_slash_must_be_an_executable_in_the_source(tmp_path: Path) -> None:
    script = _exe(tmp_path / "bin" / "go.sh")
    assert resolve_program("./bin/go.sh", tmp_path, "/usr/bin") == str(script)
    (tmp_path / "plain.sh").write_text("x")
    with pytest.raises(CommandError, match="not executable"):
        resolve_program("./plain.sh", tmp_path, "/usr/bin")
    with pytest.raises(CommandError, match="does not exist"):
        resolve_program("./missing.sh", tmp_path, "/usr/bin")
    with pytest.raises(CommandError, match="outside"):
        resolve_program("./../escape.sh", tmp_path / "bin", "/usr/bin")
    with pytest.raises(CommandError, match="no git source"):
        resolve_program("./go.sh", None, "/usr/bin")


def test_a_bare_name_is_the_sources_executable_else_on_path(tmp_path: Path) -> None:
    local = _exe(tmp_path / "src" / "tool")
    on_path = _exe(tmp_path / "path" / "tool")
    other = _exe(tmp_path / "path" / "other")
    assert resolve_program("tool", tmp_path / "src", str(tmp_path / "path")) == str(local)
    assert resolve_program("other", tmp_path / "src", str(tmp_path / "path")) == str(other)
    assert resolve_program("tool", None, str(tmp_path / "path")) == str(on_path)
    with pytest.raises(CommandError, match="neither an executable"):
        resolve_program("nowhere", tmp_path / "src", str(tmp_path / "path"))


# --------------------------------------------------------------------------- environment


def test_env_layers_in_order_later_wins() -> None:
    layers = {
        "builtin_env_vars": {"A": "builtin", "B": "builtin", "C": "builtin", "D": "builtin", "E": "builtin"},
        "builtins": {"B": "runner", "C": "runner", "D": "runner", "E": "runner"},
        "step_env_vars": {"C": "step", "D": "step", "E": "step"},
        "run_env_vars": {"D": "run", "E": "run"},
        "override_env_vars": {"E": "override"},
    }
    env = layer_env(**layers)
    assert env == {"A": "builtin", "B": "runner", "C": "step", "D": "run", "E": "override"}


def test_builtins_name_outputs_root_and_kubeconfig(tmp_path: Path) -> None:
    env = builtins(
        outputs_file=tmp_path / "0.out", root=tmp_path, kubeconfig=None, cloud_env={"AWS_REGION": "x"}
    )
    assert env == {
        "NUON_ACTIONS_OUTPUT_FILEPATH": str(tmp_path / "0.out"),
        "NUON_ACTIONS_ROOT": str(tmp_path),
        "NUON_KUBECONFIG_ENABLED": "false",
        "AWS_REGION": "x",
    }
    env = builtins(outputs_file=tmp_path / "0.out", root=tmp_path, kubeconfig=tmp_path / "k", cloud_env={})
    assert env["NUON_KUBECONFIG_ENABLED"] == "true"
    assert env["KUBECONFIG"] == str(tmp_path / "k")


# --------------------------------------------------------------------------- outputs


def test_outputs_lines_json_objects_merge_and_key_values_are_strings() -> None:
    text = '{"a": 1, "nested": {"x": true}}\n\nb=two=2\n{"a": 3}\n'
    assert parse_outputs(text) == {"a": 3, "nested": {"x": True}, "b": "two=2"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ok=1\n[1, 2]\n", "line 2 is a JSON array"),
        ("ok=1\nok=2\njust words\n", "line 3 is neither a JSON object nor key=value"),
        ('{"broken": \n', "line 1 starts like a JSON object but is not one"),
        ("=value\n", "line 1 is neither"),
    ],
)
def test_malformed_outputs_name_the_line_not_its_text(text: str, message: str) -> None:
    with pytest.raises(OutputsError, match=message) as caught:
        parse_outputs(text)
    assert "words" not in str(caught.value)


def test_job_outputs_merge_keys_and_keep_each_step() -> None:
    merged = job_outputs([("one", {"a": 1, "b": 1}), ("two", {"b": 2})])
    assert merged == {"a": 1, "b": 2, "steps": {"one": {"a": 1, "b": 1}, "two": {"b": 2}}}


# --------------------------------------------------------------------------- deadlines and names


def test_a_zero_timeout_means_the_jobs_deadline_not_at_once() -> None:
    assert workflow_deadline(100.0, 0, 400.0) == 400.0
    assert workflow_deadline(100.0, 30_000_000_000, 400.0) == 130.0
    assert workflow_deadline(100.0, 900_000_000_000, 400.0) == 400.0
    assert workflow_deadline(100.0, 0, math.inf) == math.inf


def test_a_step_timeout_never_outlives_the_workflow() -> None:
    assert step_deadline(100.0, 0, 130.0) == 130.0
    assert step_deadline(100.0, 5_000_000_000, 130.0) == 105.0
    assert step_deadline(100.0, 60_000_000_000, 130.0) == 130.0


def test_repository_directory_names() -> None:
    assert repo_dir_name("https://github.com/acme/app.git") == "app"
    assert repo_dir_name("file:///srv/repos/tools/") == "tools"
    assert repo_dir_name("git@github.com:acme/x y.git") == "x_y"
    assert repo_dir_name("https://host/") == "repo"
