"""actions-workflow end to end: the real control plane (its action routes), a real ``runner run``
process, real bash and git. Each test builds a workflow in the file format, creates the config
and the run through the operator routes and submits the job with the plan the real planner
would build (tests/actions/support.py)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.actions.support import (
    Submitted,
    failure,
    log_text,
    step_statuses,
    submit_workflow,
    wait_done,
)
from tests.support.runner_proc import RunnerProcess

pytestmark = pytest.mark.integration

WRITE_OUT = '>> "$NUON_ACTIONS_OUTPUT_FILEPATH"'


def _wait_for(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {timeout}s")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


# --------------------------------------------------------------------------- success


def test_three_steps_with_outputs(operator: Any, runner_process: RunnerProcess) -> None:
    workflow = {
        "steps": [
            {"name": "first", "inline_contents": f'echo \'{{"a": 1, "shared": "first"}}\' {WRITE_OUT}\n'},
            {
                "name": "second",
                "inline_contents": f"echo b=two {WRITE_OUT}\necho shared=second {WRITE_OUT}\n"
                "echo hello from second\n",
            },
            {"name": "third", "command": "echo third-step-says-hi"},
        ]
    }
    submitted = submit_workflow(operator, workflow)
    job = wait_done(operator, submitted)
    assert job["status"] == "finished", failure(operator, job)
    assert job["outputs"] == {
        "a": 1,
        "b": "two",
        "shared": "second",
        "steps": {
            "first": {"a": 1, "shared": "first"},
            "second": {"b": "two", "shared": "second"},
            "third": {},
        },
    }
    statuses = step_statuses(operator, submitted)
    assert [s for s, _ in statuses] == ["finished"] * 3
    assert all(0 < ns < 30 * 10**9 for _, ns in statuses), statuses
    logs = log_text(operator, job)
    assert "hello from second" in logs
    assert "third-step-says-hi" in logs


# --------------------------------------------------------------------------- failures


def test_a_failing_middle_step_marks_the_rest_error(
    operator: Any, runner_process: RunnerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "third-ran"
    workflow = {
        "steps": [
            {"name": "ok", "inline_contents": f"echo fine=yes {WRITE_OUT}\n"},
            {"name": "broken", "inline_contents": "echo about to fail >&2\nfalse\necho never printed\n"},
            {"name": "after", "inline_contents": f"touch {marker}\n"},
        ]
    }
    submitted = submit_workflow(operator, workflow)
    job = wait_done(operator, submitted)
    assert job["status"] == "failed"
    meta = failure(operator, job)
    assert "step broken failed" in meta["message"]
    assert meta.get("exit_code") == "1"
    statuses = step_statuses(operator, submitted)
    assert [s for s, _ in statuses] == ["finished", "error", "error"]
    assert statuses[1][1] > 0
    assert statuses[2][1] == 0
    assert not marker.exists()
    logs = log_text(operator, job)
    assert "step after not attempted: step broken failed before it" in logs
    assert "never printed" not in logs  # bash -e stopped at false


def test_a_timed_out_step_is_put_timed_out_and_its_group_killed(
    operator: Any, runner_process: RunnerProcess, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    workflow = {
        "steps": [
            {
                "name": "slow",
                "timeout": "1s",
                "inline_contents": f"sleep 300 &\necho $$ $! > {pids}\nsleep 300\n",
            },
            {"name": "later", "command": "echo later"},
        ]
    }
    started = time.monotonic()
    submitted = submit_workflow(operator, workflow)
    job = wait_done(operator, submitted)
    assert job["status"] == "failed"
    assert time.monotonic() - started < 20
    assert "step slow timed out after 1.0s (its timeout)" in failure(operator, job)["message"]
    statuses = step_statuses(operator, submitted)
    assert [s for s, _ in statuses] == ["timed-out", "error"]
    assert 1 * 10**9 <= statuses[0][1] < 15 * 10**9
    assert _wait_gone([int(p) for p in pids.read_text().split()]) == []


def test_the_workflow_timeout_bounds_its_steps(operator: Any, runner_process: RunnerProcess) -> None:
    workflow = {
        "timeout": "1500ms",
        "steps": [
            {"name": "quick", "command": "true"},
            {"name": "slow", "timeout": "60s", "command": "sleep 300"},
        ],
    }
    submitted = submit_workflow(operator, workflow)
    job = wait_done(operator, submitted)
    assert job["status"] == "failed"
    assert "(the workflow's timeout)" in failure(operator, job)["message"]
    assert [s for s, _ in step_statuses(operator, submitted)] == ["finished", "timed-out"]


def test_malformed_outputs_fail_the_step_with_the_line_number(
    operator: Any, runner_process: RunnerProcess
) -> None:
    workflow = {
        "steps": [
            {
                "name": "writer",
                "inline_contents": f"echo ok=1 {WRITE_OUT}\necho 'hunter2 is not an output' {WRITE_OUT}\n",
            },
            {"name": "next", "command": "true"},
        ]
    }
    submitted = submit_workflow(operator, workflow)
    job = wait_done(operator, submitted)
    assert job["status"] == "failed"
    message = failure(operator, job)["message"]
    assert "step writer failed: outputs line 2 is neither a JSON object nor key=value" in message
    assert "hunter2" not in log_text(operator, job)
    assert [s for s, _ in step_statuses(operator, submitted)] == ["error", "error"]


def test_steps_that_do_not_match_by_id_fail_before_anything_runs(
    operator: Any, runner_process: RunnerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    workflow = {
        "steps": [
            {"name": "one", "inline_contents": f"touch {marker}\n"},
            {"name": "two", "inline_contents": f"touch {marker}\n"},
        ]
    }

    def swap_second_id(plan: dict[str, Any]) -> None:
        plan["steps"][1]["run_id"] = "arsnotarunstep"

    submitted = submit_workflow(operator, workflow, plan_edit=swap_second_id)
    job = wait_done(operator, submitted)
    assert job["status"] == "failed"
    message = failure(operator, job)["message"]
    assert "do not describe the same steps" in message
    assert "plan steps not in the run: arsnotarunstep" in message
    assert not marker.exists()
    assert [s for s, _ in step_statuses(operator, submitted)] == ["error", "error"]


# --------------------------------------------------------------------------- commands


def test_interpolated_commands_are_preferred(operator: Any, runner_process: RunnerProcess) -> None:
    workflow = {
        "steps": [
            {"name": "inline", "command": "echo raw-command-one"},
            {"name": "command", "inline_contents": "echo raw-inline-two\n"},
        ]
    }

    def interpolate(plan: dict[str, Any]) -> None:
        first, second = plan["steps"]
        first["interpolated_command"] = "echo interpolated-command-one"
        first["interpolated_inline_contents"] = f"echo picked=inline-one {WRITE_OUT}\n"
        second["interpolated_inline_contents"] = ""
        second["interpolated_command"] = "echo interpolated-command-two"

    submitted = submit_workflow(operator, workflow, plan_edit=interpolate)
    job = wait_done(operator, submitted)
    assert job["status"] == "finished", failure(operator, job)
    assert job["outputs"]["picked"] == "inline-one"
    logs = log_text(operator, job)
    assert "interpolated-command-two" in logs
    for raw in ("raw-command-one", "raw-inline-two", "interpolated-command-one"):
        assert raw not in logs


def _git_repo(path: Path) -> str:
    scripts = path / "scripts"
    scripts.mkdir(parents=True)
    hello = scripts / "hello.sh"
    hello.write_text(f'#!/bin/bash\necho "greeting=hello $1 from $(basename "$PWD")" {WRITE_OUT}\n')
    hello.chmod(0o755)
    tool = scripts / "tool"
    tool.write_text(f"#!/bin/sh\necho tool=repo {WRITE_OUT}\n")
    tool.chmod(0o755)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "scripts"]):
        subprocess.run(["git", *argv], cwd=path, env=env, check=True)
    return f"file://{path}"


def test_steps_from_a_git_repository_cloned_once(
    operator: Any, runner_process: RunnerProcess, tmp_path: Path
) -> None:
    url = _git_repo(tmp_path / "ops-repo")
    source = {"url": url, "ref": "main", "path": "scripts"}
    workflow = {
        "steps": [
            {"name": "script", "command": "./hello.sh world", "git_source": source},
            {"name": "bare", "command": "tool", "git_source": source},
        ]
    }
    submitted = submit_workflow(operator, workflow)
    job = wait_done(operator, submitted)
    assert job["status"] == "finished", failure(operator, job)
    assert job["outputs"]["steps"] == {
        "script": {"greeting": "hello world from ops-repo"},
        "bare": {"tool": "repo"},
    }
    logs = log_text(operator, job)
    assert logs.count("cloning git source") == 1
    assert "reusing the checkout of an earlier step" in logs


# --------------------------------------------------------------------------- environment


ENV_PROBE = (
    "\n".join(
        f'echo "{name}=${{{name}:-unset}}" {WRITE_OUT}'
        for name in (
            "ONLY_BUILTIN",
            "NUON_ACTIONS_ROOT",
            "BUILTIN_VS_STEP",
            "STEP_VS_RUN",
            "RUN_VS_OVERRIDE",
            "LEAKY_RUNNER_VAR",
            "HOME",
            "PATH",
            "NUON_KUBECONFIG_ENABLED",
        )
    )
    + "\n"
)


def test_env_layers_one_assertion_per_layer(
    operator: Any, runner_process_factory: Callable[..., RunnerProcess]
) -> None:
    runner_process_factory(LEAKY_RUNNER_VAR="from-the-runner")
    workflow = {
        "builtin_env_vars": {
            "ONLY_BUILTIN": "builtin",
            "NUON_ACTIONS_ROOT": "builtin-loses-to-the-runner",
            "BUILTIN_VS_STEP": "builtin",
        },
        "run_env_vars": {"STEP_VS_RUN": "run", "RUN_VS_OVERRIDE": "run"},
        "override_env_vars": {"RUN_VS_OVERRIDE": "override"},
        "steps": [
            {
                "name": "probe",
                "env_vars": {"BUILTIN_VS_STEP": "step", "STEP_VS_RUN": "step"},
                "inline_contents": ENV_PROBE,
            }
        ],
    }
    submitted = submit_workflow(operator, workflow)
    job = wait_done(operator, submitted)
    assert job["status"] == "finished", failure(operator, job)
    env = job["outputs"]["steps"]["probe"]
    assert "/usr/bin" in env["PATH"]  # 1. the minimal base
    assert "/workspaces/" in env["HOME"]  # 1. HOME inside the job's workspace, not the runner's
    assert env["ONLY_BUILTIN"] == "builtin"  # 2. builtin_env_vars
    assert "/workspaces/" in env["NUON_ACTIONS_ROOT"]  # 3. the built-ins win over builtin_env_vars
    assert env["NUON_KUBECONFIG_ENABLED"] == "false"  # 3. no cluster_info
    assert env["BUILTIN_VS_STEP"] == "step"  # 4. the step's env vars win over the built-ins
    assert env["STEP_VS_RUN"] == "run"  # 5. the run's env vars win over the step's
    assert env["RUN_VS_OVERRIDE"] == "override"  # 6. override_env_vars win over all
    assert env["LEAKY_RUNNER_VAR"] == "unset"  # nothing else of the runner's environment
    logs = log_text(operator, job)
    assert "builtin-loses-to-the-runner" not in logs  # values are never logged


def test_the_runner_token_is_not_in_a_running_steps_environ(
    operator: Any, runner_process: RunnerProcess, tmp_path: Path
) -> None:
    pidfile, go = tmp_path / "pid", tmp_path / "go"
    workflow = {
        "run_env_vars": {"DEPLOY_TOKEN": "s3cr3t-deploy-token-value"},
        "steps": [
            {
                "name": "wait",
                "inline_contents": f"echo $$ > {pidfile}\nwhile [ ! -e {go} ]; do sleep 0.05; done\n"
                'echo "token is $DEPLOY_TOKEN"\n',
            }
        ],
    }
    submitted = submit_workflow(operator, workflow)
    pid = int(_wait_for(pidfile))
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    go.touch()
    job = wait_done(operator, submitted)
    assert job["status"] == "finished", failure(operator, job)
    names = {item.split(b"=", 1)[0] for item in environ.split(b"\0") if item}
    assert runner_process.runner_token.encode() not in environ
    assert not [n for n in names if n.startswith(b"RUNNER_")]
    assert b"DEPLOY_TOKEN=s3cr3t-deploy-token-value" in environ
    logs = log_text(operator, job)
    assert "s3cr3t-deploy-token-value" not in logs  # a secret-looking name is masked
    assert "token is ***" in logs


# --------------------------------------------------------------------------- cancel and sandbox


def test_cancel_mid_step_kills_it_and_marks_the_rest(
    operator: Any, runner_process: RunnerProcess, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    workflow = {
        "steps": [
            {"name": "long", "inline_contents": f"sleep 300 &\necho $$ $! > {pids}\nsleep 300\n"},
            {"name": "after", "command": "true"},
        ]
    }
    submitted = submit_workflow(operator, workflow)
    running = [int(p) for p in _wait_for(pids).split()]
    operator.cancel(submitted.job["id"])
    job = wait_done(operator, submitted)
    assert job["status"] == "cancelled"
    assert _wait_gone(running) == []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        statuses = [s for s, _ in step_statuses(operator, submitted)]
        if statuses == ["error", "error"]:
            break
        time.sleep(0.1)
    assert statuses == ["error", "error"]
    assert "step long stopped: the job was cancelled" in log_text(operator, job)


def test_sandbox_mode_puts_every_step_finished_in_five_seconds(
    operator: Any, runner_process_factory: Callable[..., RunnerProcess], tmp_path: Path
) -> None:
    operator.patch_settings(sandbox_mode=True)
    runner_process_factory(RUNNER_SANDBOX_JOB_DURATION="0.3")
    marker = tmp_path / "ran"
    workflow = {
        "sandbox_mode": {"enabled": True, "outputs": {"fake": "yes"}},
        "steps": [{"name": n, "inline_contents": f"touch {marker}\n"} for n in ("a", "b", "c")],
    }
    submitted: Submitted = submit_workflow(operator, workflow)
    job = wait_done(operator, submitted)
    assert job["status"] == "finished", failure(operator, job)
    assert step_statuses(operator, submitted) == [("finished", 5 * 10**9)] * 3
    assert job["outputs"] == {"fake": "yes"}
    assert not marker.exists()


def test_sandbox_mode_without_a_sandbox_block_still_puts_the_steps(
    operator: Any, runner_process_factory: Callable[..., RunnerProcess]
) -> None:
    operator.patch_settings(sandbox_mode=True)
    runner_process_factory(RUNNER_SANDBOX_JOB_DURATION="0.3")
    submitted = submit_workflow(operator, {"steps": [{"name": "only", "command": "false"}]})
    job = wait_done(operator, submitted)
    assert job["status"] == "finished", failure(operator, job)
    assert step_statuses(operator, submitted) == [("finished", 5 * 10**9)]
    assert job["outputs"] == {}
