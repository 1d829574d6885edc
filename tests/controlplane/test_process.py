"""The standalone control plane process: identity on disk, restarts that keep everything, SIGKILL,
and the ``runner jobs`` CLI against it."""

from __future__ import annotations

import json
import stat
import threading
import time
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from controlplane.cli import controlplane_command, jobs_group
from tests.support.controlplane import ControlPlaneProcess

pytestmark = pytest.mark.integration


def test_first_start_writes_credentials_0600(control_plane: ControlPlaneProcess) -> None:
    path = control_plane.state_dir / "credentials.json"
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600
    data = json.loads(path.read_text())
    assert set(data) == {"api_url", "org_id", "runner_id", "admin_token", "runner_token"}
    assert data["api_url"] == control_plane.url
    deadline = time.monotonic() + 10  # the banner is printed right after the server answers
    while str(path) not in (log := control_plane.log_tail()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert str(path) in log  # where the operator finds the tokens; never the tokens themselves
    assert data["admin_token"] not in log
    assert data["runner_token"] not in log


def test_restart_keeps_all_data(control_plane: ControlPlaneProcess) -> None:
    cp = control_plane
    creds = cp.credentials
    with cp.operator() as operator:
        finished = operator.submit("noop", {"a": 1})
        waiting = operator.submit("noop-build")
        with cp.runner_http() as runner:
            runner.post(f"/v1/runners/{cp.runner_id}/heart-beats", json={"alive_time": 1})
            execution = runner.post(f"/v1/runner-jobs/{finished['id']}/executions", json={}).json()
            base = f"/v1/runner-jobs/{finished['id']}/executions/{execution['id']}"
            runner.patch(base, json={"status": "in-progress"})
            runner.post(base + "/outputs", json={"outputs": {"kept": True}})
            runner.patch(base, json={"status": "finished"})
            workspace = operator.create_workspace("tfwrestart")["id"]
            state = {"version": 4, "serial": 1, "lineage": "x", "outputs": {}, "resources": []}
            runner.post("/v1/terraform-backend", params={"workspace_id": workspace}, json=state)
    cp.stop()
    assert not cp.running
    with pytest.raises(httpx.TransportError):
        httpx.get(cp.url + "/livez", timeout=1)
    cp.start()
    assert cp.credentials == creds
    with cp.operator() as operator:
        assert operator.get_job(finished["id"])["outputs"] == {"kept": True}
        assert operator.get_job(waiting["id"])["status"] == "available"
        assert operator.plan(finished["id"]) == '{"a": 1}'
        with cp.runner_http() as runner:
            restored = runner.get("/v1/terraform-backend", params={"workspace_id": "tfwrestart"})
            assert restored.json()["serial"] == 1
            assert runner.get(f"/v1/runners/{cp.runner_id}/settings").status_code == 200


def test_sigkill_loses_nothing_committed(control_plane: ControlPlaneProcess) -> None:
    cp = control_plane
    with cp.operator() as operator:
        ids = [operator.submit("noop")["id"] for _ in range(20)]
    cp.kill()
    cp.start()
    with cp.operator() as operator:
        listed = [job["id"] for job in operator.list_jobs()]
    assert listed == ids


def test_stop_releases_held_polls_quickly(control_plane: ControlPlaneProcess) -> None:
    cp = control_plane
    results: dict[str, Any] = {}

    def poll() -> None:
        with cp.runner_http() as runner:
            response = runner.get(f"/v1/runners/{cp.runner_id}/jobs", params={"wait": "30s"})
            results["status"], results["body"] = response.status_code, response.json()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    cp.stop()
    thread.join(10)
    assert time.monotonic() - started < 5
    assert results == {"status": 200, "body": []}


def test_down_for_a_while_then_back_on_the_same_port(control_plane: ControlPlaneProcess) -> None:
    cp = control_plane
    port = cp.port
    cp.stop()
    time.sleep(1.0)
    cp.start()
    assert cp.port == port
    assert httpx.get(cp.url + "/livez").status_code == 200
    assert json.loads((cp.state_dir / "credentials.json").read_text())["api_url"] == cp.url


def _cli(cp: ControlPlaneProcess, *args: str, **env: str) -> Any:
    runner = CliRunner()
    base_env = {"RUNNER_API_URL": "", "RUNNER_ADMIN_TOKEN": "", "RUNNER_ID": "", "RUNNER_STATE_DIR": ""}
    return runner.invoke(jobs_group, ["--state-dir", str(cp.state_dir), *args], env={**base_env, **env})


def test_jobs_cli_submit_list_get_logs_cancel(control_plane: ControlPlaneProcess, tmp_path: Any) -> None:
    cp = control_plane
    plan = tmp_path / "plan.json"
    plan.write_text('{"hello": "world"}')
    submitted = _cli(cp, "submit", "--type", "noop", "--plan", str(plan), "--metadata", "k=v", "--json")
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.output)
    assert job["metadata"] == {"k": "v"}
    listed = _cli(cp, "list", "--json")
    assert [j["id"] for j in json.loads(listed.output)] == [job["id"]]
    table = _cli(cp, "list")
    assert table.exit_code == 0
    assert job["id"] in table.output
    got = _cli(cp, "get", job["id"], "--json")
    assert json.loads(got.output)["id"] == job["id"]
    assert job["id"] in _cli(cp, "get", job["id"]).output
    from tests.controlplane.test_contract import _otlp_body

    with cp.runner_http() as runner:
        runner.post(
            f"/v1/log-streams/{job['log_stream_id']}/logs",
            content=_otlp_body(["line one", "line two"]),
            headers={"Content-Type": "application/x-protobuf"},
        )
    logs = _cli(cp, "logs", job["id"])
    assert logs.exit_code == 0
    assert "line one" in logs.output
    assert logs.output.index("line one") < logs.output.index("line two")
    cancelled = _cli(cp, "cancel", job["id"])
    assert cancelled.exit_code == 0
    assert "cancelled" in cancelled.output
    followed = _cli(cp, "logs", "--follow", "--json", job["id"])
    assert [json.loads(line)["body"] for line in followed.output.splitlines()] == ["line one", "line two"]
    again = _cli(cp, "cancel", job["id"])
    assert again.exit_code == 1
    assert "409" in again.output


def test_jobs_cli_wait_exits_non_zero_unless_finished(control_plane: ControlPlaneProcess) -> None:
    cp = control_plane
    env = {"RUNNER_API_URL": cp.url, "RUNNER_ADMIN_TOKEN": cp.admin_token}

    def finish_next_job() -> None:
        with cp.runner_http() as runner:
            for _ in range(100):
                jobs = runner.get(f"/v1/runners/{cp.runner_id}/jobs", params={"wait": "5"}).json()
                if jobs:
                    break
            job_id = jobs[0]["id"]
            execution = runner.post(f"/v1/runner-jobs/{job_id}/executions", json={}).json()
            for status in ("in-progress", "finished"):
                runner.patch(
                    f"/v1/runner-jobs/{job_id}/executions/{execution['id']}", json={"status": status}
                )

    helper = threading.Thread(target=finish_next_job)
    helper.start()
    ok = CliRunner().invoke(jobs_group, ["submit", "--type", "noop", "--wait", "--timeout", "20"], env=env)
    helper.join(10)
    assert ok.exit_code == 0, ok.output
    assert "finished" in ok.output
    timed_out = CliRunner().invoke(
        jobs_group, ["submit", "--type", "noop", "--available-timeout", "0.3", "--wait", "--json"], env=env
    )
    assert timed_out.exit_code == 1
    assert json.loads(timed_out.output)["status"] == "timed-out"


def test_jobs_cli_without_any_address_is_a_usage_error(tmp_path: Any) -> None:
    result = CliRunner().invoke(
        jobs_group,
        ["--state-dir", str(tmp_path), "list"],
        env={"RUNNER_API_URL": "", "RUNNER_ADMIN_TOKEN": ""},
    )
    assert result.exit_code == 2
    assert "credentials.json" in result.output


def test_controlplane_command_help_lists_the_options() -> None:
    result = CliRunner().invoke(controlplane_command, ["--help"])
    assert result.exit_code == 0
    for flag in (
        "--state-dir",
        "--monitor-interval",
        "--heartbeat-offline-after",
        "--restart-grace",
        "--max-body-bytes",
    ):
        assert flag in result.output
