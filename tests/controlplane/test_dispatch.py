"""The dispatcher and monitor: the atomic claim under contention, every timeout path, retries,
heartbeat-driven ``offline`` and restart detection (docs/runner-api.md §14.3, issue 3 point 4)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.controlplane import EmbeddedControlPlane

pytestmark = pytest.mark.integration

SECOND = 1_000_000_000


@pytest.fixture
def fast(embedded_control_plane_factory: Callable[..., EmbeddedControlPlane]) -> EmbeddedControlPlane:
    return embedded_control_plane_factory(
        monitor_interval=0.05, heartbeat_offline_after=0.6, restart_grace=0.2
    )


def _submit(cp: EmbeddedControlPlane, **body: Any) -> dict[str, Any]:
    with cp.operator() as operator:
        return operator.submit(body.pop("type", "noop"), **body)


def _wait_status(cp: EmbeddedControlPlane, job_id: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
    with cp.operator() as operator:
        return operator.wait_job(job_id, {status}, timeout=timeout)


def _claim(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.post(f"/v1/runner-jobs/{job_id}/executions", json={})
    assert response.status_code == 201, response.text
    execution: dict[str, Any] = response.json()
    return execution


def _patch(client: httpx.Client, job_id: str, execution_id: str, status: str) -> None:
    response = client.patch(f"/v1/runner-jobs/{job_id}/executions/{execution_id}", json={"status": status})
    assert response.status_code == 200, response.text


def _beat(client: httpx.Client, cp: EmbeddedControlPlane, alive_s: float) -> None:
    response = client.post(
        f"/v1/runners/{cp.runner_id}/heart-beats", json={"alive_time": int(alive_s * SECOND)}
    )
    assert response.status_code == 201, response.text


def test_twenty_concurrent_claimers_exactly_one_wins(embedded_control_plane: EmbeddedControlPlane) -> None:
    cp = embedded_control_plane
    claimers = 20
    clients = [cp.runner_http() for _ in range(claimers)]
    try:
        for client in clients:  # open the connections first so the race is on the claim
            client.get("/livez")
        for _ in range(3):
            job = _submit(cp)
            barrier = threading.Barrier(claimers)
            statuses: list[int] = []
            lock = threading.Lock()

            def race(
                client: httpx.Client, job_id: str = job["id"], barrier: threading.Barrier = barrier
            ) -> None:
                barrier.wait()
                code = client.post(f"/v1/runner-jobs/{job_id}/executions", json={}).status_code
                with lock:
                    statuses.append(code)

            threads = [threading.Thread(target=race, args=(client,)) for client in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(statuses) == [201] + [409] * (claimers - 1)
            with cp.operator() as operator:
                assert len(operator.executions(job["id"])) == 1
                assert operator.get_job(job["id"])["status"] == "in-progress"
    finally:
        for client in clients:
            client.close()


def test_available_timeout_times_the_job_out(fast: EmbeddedControlPlane) -> None:
    job = _submit(fast, available_timeout=SECOND // 5)
    done = _wait_status(fast, job["id"], "timed-out")
    assert done["status_description"] == "timeout waiting for runner to pick up job"
    assert done["finished_at"]
    with fast.runner_http() as runner:
        assert runner.post(f"/v1/runner-jobs/{job['id']}/executions", json={}).status_code == 409


def test_available_timeout_gives_another_window_while_attempts_remain(fast: EmbeddedControlPlane) -> None:
    job = _submit(fast, available_timeout=SECOND // 4, max_executions=40)
    time.sleep(0.4)
    with fast.operator() as operator:
        again = operator.get_job(job["id"])
    assert again["status"] == "available"
    assert "attempt" in again["status_description"]
    with fast.runner_http() as runner:
        execution = _claim(runner, job["id"])
        _patch(runner, job["id"], execution["id"], "in-progress")
        _patch(runner, job["id"], execution["id"], "finished")
    assert _wait_status(fast, job["id"], "finished")["execution_count"] == 1


def test_execution_timeout_times_out_execution_and_job(fast: EmbeddedControlPlane) -> None:
    job = _submit(fast, execution_timeout=SECOND // 4)
    with fast.runner_http() as runner:
        execution = _claim(runner, job["id"])
        _patch(runner, job["id"], execution["id"], "in-progress")
        done = _wait_status(fast, job["id"], "timed-out")
        assert done["status_description"] == "execution timeout"
        assert done["executions"][0]["status"] == "timed-out"
        late = runner.patch(
            f"/v1/runner-jobs/{job['id']}/executions/{execution['id']}", json={"status": "finished"}
        )
        assert late.status_code == 409


def test_overall_timeout(fast: EmbeddedControlPlane) -> None:
    job = _submit(fast, overall_timeout=SECOND // 4)
    assert job["overall_timeout"] == SECOND // 4
    done = _wait_status(fast, job["id"], "timed-out")
    assert done["status_description"] == "overall timeout"
    claimed = _submit(fast, overall_timeout=SECOND // 2)
    with fast.runner_http() as runner:
        execution = _claim(runner, claimed["id"])
        done = _wait_status(fast, claimed["id"], "timed-out")
        assert done["status_description"] == "overall timeout"
        view = runner.get(f"/v1/runner-jobs/{claimed['id']}/executions/{execution['id']}").json()
        assert view["status"] == "timed-out"


def test_default_overall_timeout_is_queue_plus_attempts(fast: EmbeddedControlPlane) -> None:
    job = _submit(fast, type="terraform-deploy", max_executions=2)
    assert job["overall_timeout"] == job["queue_timeout"] + 2 * (
        job["available_timeout"] + job["execution_timeout"]
    )


def test_failed_execution_is_retried_and_wakes_a_held_poll(fast: EmbeddedControlPlane) -> None:
    job = _submit(fast, type="noop-deploy", max_executions=2)
    with fast.runner_http() as runner, fast.runner_http() as poller:
        first = _claim(runner, job["id"])
        _patch(runner, job["id"], first["id"], "in-progress")
        answer: dict[str, Any] = {}

        def poll() -> None:
            started = time.monotonic()
            response = poller.get(
                f"/v1/runners/{fast.runner_id}/jobs", params={"group": "deploy", "wait": "10"}
            )
            answer["jobs"], answer["elapsed"] = response.json(), time.monotonic() - started

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.3)
        _patch(runner, job["id"], first["id"], "failed")
        thread.join(10)
        assert [j["id"] for j in answer["jobs"]] == [job["id"]]
        assert answer["elapsed"] < 5
        assert answer["jobs"][0]["status_description"].startswith("retrying")
        second = _claim(runner, job["id"])
        _patch(runner, job["id"], second["id"], "in-progress")
        _patch(runner, job["id"], second["id"], "failed")
        done = runner.get(f"/v1/runner-jobs/{job['id']}").json()
        assert done["status"] == "failed"
        assert done["execution_count"] == 2
        assert runner.post(f"/v1/runner-jobs/{job['id']}/executions", json={}).status_code == 409


def test_silent_runner_goes_offline_and_its_executions_fail(fast: EmbeddedControlPlane) -> None:
    job = _submit(fast)
    with fast.runner_http() as runner:
        _beat(runner, fast, 5)
        assert runner.get(f"/v1/runners/{fast.runner_id}").json()["status"] == "active"
        execution = _claim(runner, job["id"])
        _patch(runner, job["id"], execution["id"], "in-progress")
        done = _wait_status(fast, job["id"], "failed")
        assert "offline" in done["status_description"]
        assert "no heartbeat" in done["status_description"]
        assert done["executions"][0]["status"] == "failed"
        view = runner.get(f"/v1/runners/{fast.runner_id}").json()
        assert view["status"] == "offline"
        _beat(runner, fast, 6)
        assert runner.get(f"/v1/runners/{fast.runner_id}").json()["status"] == "active"


def test_heartbeats_keep_a_runner_active(fast: EmbeddedControlPlane) -> None:
    job = _submit(fast)
    with fast.runner_http() as runner:
        _beat(runner, fast, 1)
        execution = _claim(runner, job["id"])
        _patch(runner, job["id"], execution["id"], "in-progress")
        for i in range(8):
            time.sleep(0.15)
            _beat(runner, fast, 1.2 + i * 0.15)
        assert runner.get(f"/v1/runners/{fast.runner_id}").json()["status"] == "active"
        assert runner.get(f"/v1/runner-jobs/{job['id']}").json()["status"] == "in-progress"


def test_restart_detected_by_alive_time_cancels_the_execution(fast: EmbeddedControlPlane) -> None:
    job = _submit(fast)
    with fast.runner_http() as runner:
        _beat(runner, fast, 30)
        execution = _claim(runner, job["id"])
        _patch(runner, job["id"], execution["id"], "in-progress")
        time.sleep(0.35)
        _beat(runner, fast, 30.4)  # the same process: started long before the execution
        assert runner.get(f"/v1/runner-jobs/{job['id']}").json()["status"] == "in-progress"
        _beat(runner, fast, 0.01)  # a new process started after execution.created_at + grace
        done = runner.get(f"/v1/runner-jobs/{job['id']}").json()
        assert done["status"] == "cancelled"
        assert done["status_description"] == "runner restarted"
        assert done["executions"][0]["status"] == "cancelled"


def test_restart_within_the_grace_does_not_cancel(fast: EmbeddedControlPlane) -> None:
    job = _submit(fast)
    with fast.runner_http() as runner:
        execution = _claim(runner, job["id"])
        _patch(runner, job["id"], execution["id"], "in-progress")
        _beat(runner, fast, 0.0)  # started "now", but within restart_grace of the claim
        assert runner.get(f"/v1/runner-jobs/{job['id']}").json()["status"] == "in-progress"
