"""Contract tests for every runner endpoint of the embedded control plane (docs/runner-api.md §2-§4).

Real HTTP over loopback against the in-process server; status codes, JSON names, nanosecond
durations and body types are asserted as the contract states them, plus our §12 fixes.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from typing import Any

import httpx
import pytest

from tests.support.controlplane import EmbeddedControlPlane, OperatorError

pytestmark = pytest.mark.integration

ID = re.compile(r"^[a-z]{3}[0-9a-z]{23}$")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def cp(embedded_control_plane: EmbeddedControlPlane) -> EmbeddedControlPlane:
    return embedded_control_plane


@pytest.fixture
def runner(cp: EmbeddedControlPlane) -> Any:
    with cp.runner_http() as client:
        yield client


@pytest.fixture
def admin(cp: EmbeddedControlPlane) -> Any:
    with cp.runner_http(cp.admin_token) as client:
        yield client


def submit(admin: httpx.Client, cp: EmbeddedControlPlane, **body: Any) -> dict[str, Any]:
    body.setdefault("type", "noop")
    response = admin.post(f"/v1/runners/{cp.runner_id}/jobs", json=body)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def claim(runner: httpx.Client, job_id: str) -> dict[str, Any]:
    response = runner.post(f"/v1/runner-jobs/{job_id}/executions", json={})
    assert response.status_code == 201, response.text
    execution: dict[str, Any] = response.json()
    return execution


def patch(runner: httpx.Client, job_id: str, execution_id: str, status: str) -> httpx.Response:
    return runner.patch(f"/v1/runner-jobs/{job_id}/executions/{execution_id}", json={"status": status})


# ------------------------------------------------------------------ identity and settings


def test_ids_and_credentials_have_the_contract_shape(cp: EmbeddedControlPlane) -> None:
    creds = cp.credentials
    assert creds.runner_id.startswith("run")
    assert ID.match(creds.runner_id)
    assert creds.org_id.startswith("org")
    assert ID.match(creds.org_id)
    assert creds.admin_token.startswith("tok")
    assert creds.runner_token.startswith("tok")
    assert creds.admin_token != creds.runner_token
    assert creds.api_url == cp.url


def test_settings_are_compact_json_with_the_required_fields(
    cp: EmbeddedControlPlane, runner: httpx.Client
) -> None:
    response = runner.get(f"/v1/runners/{cp.runner_id}/settings")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    text = response.text
    assert '": ' not in text, "settings JSON must be compact (init-script grep)"
    assert '", "' not in text
    settings = response.json()
    assert settings["heart_beat_timeout"] == 5_000_000_000
    assert settings["logging_level"] == "INFO"
    assert settings["enable_logging"] is True
    assert settings["sandbox_mode"] is False
    assert settings["long_poll_jobs"] is True
    assert settings["groups"] == ["operations", "build", "sync", "deploy", "sandbox", "actions"]
    assert isinstance(settings["metadata"], dict)
    assert settings["metadata"]["runner.id"] == cp.runner_id
    assert settings["runner_api_url"] == cp.url
    assert settings["id"].startswith("rgs")


def test_get_runner_embeds_group_and_settings_and_tracks_heartbeats(
    cp: EmbeddedControlPlane, runner: httpx.Client
) -> None:
    before = runner.get(f"/v1/runners/{cp.runner_id}").json()
    assert before["status"] == "pending"
    assert before["runner_group"]["settings"]["heart_beat_timeout"] == 5_000_000_000
    response = runner.post(
        f"/v1/runners/{cp.runner_id}/heart-beats", json={"alive_time": 2_500_000_000, "version": "1.2.3"}
    )
    assert response.status_code == 201
    beat = response.json()
    assert beat["alive_time"] == 2_500_000_000
    assert beat["version"] == "1.2.3"
    assert beat["process"] == ""
    assert beat["id"].startswith("hrt")
    assert TS.match(beat["started_at"])
    assert TS.match(beat["created_at"])
    assert runner.get(f"/v1/runners/{cp.runner_id}").json()["status"] == "active"
    latest = runner.get(f"/v1/runners/{cp.runner_id}/heart-beats/latest").json()
    assert latest["id"] == beat["id"]


def test_heartbeat_and_health_check_validate_their_bodies(
    cp: EmbeddedControlPlane, runner: httpx.Client
) -> None:
    base = f"/v1/runners/{cp.runner_id}"
    assert runner.post(base + "/heart-beats", json={"alive_time": "soon"}).status_code == 400
    assert runner.post(base + "/heart-beats", json={}).status_code == 400
    assert runner.post(base + "/heart-beats", content=b"{nope").status_code == 400
    response = runner.post(base + "/health-checks", json={"process": "install"})
    assert response.status_code == 201
    assert response.json()["process"] == "install"
    assert response.json()["id"].startswith("hlt")


def test_unknown_runner_is_404_for_admin(admin: httpx.Client) -> None:
    assert admin.get("/v1/runners/run00000000000000000000000/jobs").status_code == 404
    assert admin.get("/v1/runners/run00000000000000000000000/settings").status_code == 404
    response = admin.get("/v1/runners/run00000000000000000000000")
    assert response.status_code == 404
    assert set(response.json()) >= {"error", "description", "user_error"}


def test_settings_can_be_patched_live(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    response = admin.patch(
        f"/v1/runners/{cp.runner_id}/settings",
        json={
            "groups": ["build"],
            "heart_beat_timeout": 1_000_000_000,
            "job_group_parallelism": {"build": 2},
        },
    )
    assert response.status_code == 200, response.text
    settings = runner.get(f"/v1/runners/{cp.runner_id}/settings").json()
    assert settings["groups"] == ["build"]
    assert settings["heart_beat_timeout"] == 1_000_000_000
    assert settings["job_group_parallelism"] == {"build": "2"}
    assert admin.patch(f"/v1/runners/{cp.runner_id}/settings", json={"bogus": 1}).status_code == 400
    assert (
        admin.patch(f"/v1/runners/{cp.runner_id}/settings", json={"heart_beat_timeout": 0}).status_code == 400
    )
    assert runner.patch(f"/v1/runners/{cp.runner_id}/settings", json={"groups": []}).status_code == 403


# ------------------------------------------------------------------ auth


def test_auth_by_header_or_query_and_401_otherwise(cp: EmbeddedControlPlane) -> None:
    path = f"/v1/runners/{cp.runner_id}/settings"
    with httpx.Client(base_url=cp.url) as anonymous:
        assert anonymous.get(path).status_code == 401
        assert anonymous.get(path, headers={"Authorization": "Bearer tokunknown"}).status_code == 401
        assert anonymous.get(path, headers={"Authorization": "Basic abc"}).status_code == 401
        assert anonymous.get(path, params={"token": cp.runner_token}).status_code == 200
        body = anonymous.get(path).json()
        assert body["error"]
        assert body["user_error"] is True
        assert body["description"]
        assert anonymous.get("/livez").status_code == 200
        assert anonymous.get("/oapi/v3").status_code == 200


def test_a_runner_token_cannot_touch_another_runners_jobs(
    cp: EmbeddedControlPlane, admin: httpx.Client
) -> None:
    other = admin.post("/v1/runners", json={"name": "second"}).json()
    assert other["id"].startswith("run")
    assert other["token"].startswith("tok")
    job = submit(admin, cp)
    with cp.runner_http(other["token"]) as intruder:
        assert intruder.get(f"/v1/runner-jobs/{job['id']}").status_code == 404
        assert intruder.get(f"/v1/runner-jobs/{job['id']}/plan").status_code == 404
        assert intruder.post(f"/v1/runner-jobs/{job['id']}/executions", json={}).status_code == 404
        assert intruder.get(f"/v1/runners/{cp.runner_id}/jobs").status_code == 403
        assert intruder.get(f"/v1/runners/{cp.runner_id}/settings").status_code == 403
        assert intruder.get(f"/v1/runners/{other['id']}/jobs").json() == []
        assert intruder.get(f"/v1/runners/{cp.runner_id}/jobs/{job['id']}").status_code == 403
        assert intruder.post(f"/v1/runners/{cp.runner_id}/jobs", json={"type": "noop"}).status_code == 403
    # the job is still there for its own runner
    with cp.runner_http() as owner:
        assert owner.get(f"/v1/runner-jobs/{job['id']}").status_code == 200


def test_log_stream_write_token_writes_only_its_stream(cp: EmbeddedControlPlane, admin: httpx.Client) -> None:
    first, second = submit(admin, cp), submit(admin, cp)
    token = first["log_stream"]["write_token"]
    body = _otlp_body(["hello"])
    headers = {"Content-Type": "application/x-protobuf"}
    with cp.runner_http(token) as writer:
        ok = writer.post(f"/v1/log-streams/{first['log_stream_id']}/logs", content=body, headers=headers)
        assert ok.status_code == 201
        assert ok.json() == "ok"
        denied = writer.post(f"/v1/log-streams/{second['log_stream_id']}/logs", content=body, headers=headers)
        assert denied.status_code == 403
        assert writer.get(f"/v1/runner-jobs/{first['id']}").status_code == 403
        assert writer.get(f"/v1/runners/{cp.runner_id}/settings").status_code == 403


# ------------------------------------------------------------------ jobs


def test_submitted_job_has_the_contract_fields(cp: EmbeddedControlPlane, admin: httpx.Client) -> None:
    job = submit(
        admin, cp, type="terraform-deploy", operation="create-apply-plan", metadata={"install_id": "inl1"}
    )
    assert ID.match(job["id"])
    assert job["id"].startswith("job")
    assert job["status"] == "available"
    assert job["group"] == "deploy"
    assert job["type"] == "terraform-deploy"
    assert job["operation"] == "create-apply-plan"
    assert job["execution_timeout"] == 60 * 60 * 1_000_000_000
    assert job["available_timeout"] == 30 * 1_000_000_000
    assert job["max_executions"] == 1
    assert job["metadata"] == {"install_id": "inl1"}
    assert job["owner_id"].startswith("dpl")
    assert job["owner_type"] == "install_deploys"
    stream = job["log_stream"]
    assert stream["id"] == job["log_stream_id"]
    assert stream["id"].startswith("log")
    assert stream["write_token"].startswith("tok")
    assert stream["runner_api_url"] == cp.url
    assert stream["open"] is True
    build = submit(admin, cp, type="docker-build")
    assert build["group"] == "build"
    assert build["operation"] == "build"
    assert build["owner_id"].startswith("bld")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"type": "no-such-type"}, "unknown job type"),
        ({"type": "noop", "plan": [1, 2]}, "invalid plan"),
        ({"type": "noop", "plan": "text"}, "invalid plan"),
        ({"type": "noop", "group": "nope"}, "invalid group"),
        ({"type": "noop", "operation": "dance"}, "invalid operation"),
        ({"type": "noop", "execution_timeout": "5m"}, "invalid request"),
        ({"type": "noop", "max_executions": 0}, "invalid request"),
        ({"type": "noop", "execution_timeout": 2**62}, "invalid request"),
        ({"type": 7}, "invalid request"),
        ({}, "invalid request"),
    ],
)
def test_bad_submissions_are_400(
    cp: EmbeddedControlPlane, admin: httpx.Client, body: Any, error: str
) -> None:
    response = admin.post(f"/v1/runners/{cp.runner_id}/jobs", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert response.json()["description"]


def test_longest_timeouts_are_accepted_without_overflow(
    cp: EmbeddedControlPlane, admin: httpx.Client
) -> None:
    ten_years = 10 * 365 * 24 * 3600 * 1_000_000_000
    job = submit(
        admin,
        cp,
        max_executions=100,
        execution_timeout=ten_years,
        available_timeout=ten_years,
        queue_timeout=ten_years,
    )
    assert job["overall_timeout"] == 100 * 365 * 24 * 3600 * 1_000_000_000
    assert job["execution_timeout"] == ten_years


def test_custom_type_needs_a_group(cp: EmbeddedControlPlane, admin: httpx.Client) -> None:
    job = submit(admin, cp, type="my-extension", group="deploy")
    assert job["group"] == "deploy"
    assert job["type"] == "my-extension"


def test_jobs_list_is_oldest_first_with_filters_and_pagination(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    ids = [submit(admin, cp, type="noop-build")["id"] for _ in range(5)]
    other = submit(admin, cp, type="noop")["id"]
    base = f"/v1/runners/{cp.runner_id}/jobs"
    listed = runner.get(base, params={"group": "build"}).json()
    assert [j["id"] for j in listed] == ids
    assert all(j["log_stream"]["write_token"] for j in listed)
    page = runner.get(base, params={"group": "build", "limit": 2, "offset": 2})
    assert [j["id"] for j in page.json()] == ids[2:4]
    assert page.headers["x-nuon-page-next"] == "true"
    assert runner.get(base, params={"group": "build", "limit": 2, "page": 3}).json()[0]["id"] == ids[4]
    assert [j["id"] for j in runner.get(base).json()] == [*ids, other]  # no group: all available
    assert [j["id"] for j in runner.get(base, params={"group": "any"}).json()] == [*ids, other]
    claim(runner, ids[0])
    assert ids[0] not in [j["id"] for j in runner.get(base).json()]  # default status=available
    assert [j["id"] for j in runner.get(base, params={"status": "in-progress"}).json()] == [ids[0]]
    assert len(runner.get(base, params={"status": "any"}).json()) == 6
    assert len(runner.get(base, params={"status": ""}).json()) == 6
    assert len(runner.get(base, params={"limit": 1000, "status": "any"}).json()) == 6
    for bad in (
        {"limit": "x"},
        {"limit": 0},
        {"offset": -1},
        {"status": "bogus"},
        {"group": "bogus"},
        {"wait": "soon"},
    ):
        response = runner.get(base, params=bad)
        assert response.status_code == 400, bad
        assert response.json()["error"].startswith("invalid")


def test_job_get_v1_and_v2_and_plan_as_text(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    plan = {"terraform": {"terraform_backend": {"WorkspaceID": "tfwplan"}}, "Z": [1, "two"]}
    job = submit(admin, cp, type="terraform-deploy", plan=plan)
    v1 = runner.get(f"/v1/runner-jobs/{job['id']}").json()
    v2 = runner.get(f"/v1/runners/{cp.runner_id}/jobs/{job['id']}").json()
    assert v1["id"] == v2["id"] == job["id"]
    assert v1["executions"] == []
    assert "execution_count" not in v1  # omitzero
    for path in (f"/v1/runner-jobs/{job['id']}/plan", f"/v1/runners/{cp.runner_id}/jobs/{job['id']}/plan"):
        response = runner.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert json.loads(response.text) == plan
    no_plan = submit(admin, cp)
    assert runner.get(f"/v1/runner-jobs/{no_plan['id']}/plan").status_code == 404
    assert runner.get("/v1/runner-jobs/job00000000000000000000000").status_code == 404
    # the plan's workspace was created on submission
    assert admin.get("/v1/terraform-workspaces/tfwplan").status_code == 200


def test_execution_lifecycle_and_job_follows(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    job = submit(admin, cp)
    response = runner.post(
        f"/v1/runner-jobs/{job['id']}/executions", json={}, headers={"X-Nuon-Client-Version": "runner:9.9"}
    )
    assert response.status_code == 201
    execution = response.json()
    assert execution["status"] == "pending"
    assert execution["runner_job_id"] == job["id"]
    assert execution["id"].startswith("run")
    assert execution["metadata"] == {"client.version": "runner:9.9"}
    assert runner.get(f"/v1/runner-jobs/{job['id']}").json()["status"] == "in-progress"
    for status in ("initializing", "initializing", "in-progress", "in-progress", "cleaning-up"):
        response = patch(runner, job["id"], execution["id"], status)
        assert response.status_code == 200
        assert response.json()["status"] == status
    illegal = patch(runner, job["id"], execution["id"], "pending")
    assert illegal.status_code == 409
    assert "cleaning-up -> pending" in illegal.json()["description"]
    assert patch(runner, job["id"], execution["id"], "bogus").status_code == 400
    assert patch(runner, job["id"], execution["id"], "finished").status_code == 200
    assert patch(runner, job["id"], execution["id"], "finished").status_code == 200  # idempotent retry
    assert patch(runner, job["id"], execution["id"], "failed").status_code == 409
    done = runner.get(f"/v1/runner-jobs/{job['id']}").json()
    assert done["status"] == "finished"
    assert done["execution_count"] == 1
    assert done["executions"][0]["id"] == execution["id"]
    assert isinstance(done["execution_time"], int)
    assert done["finished_at"]
    assert done["log_stream"]["open"] is False
    listed = runner.get(f"/v1/runner-jobs/{job['id']}/executions").json()
    assert [e["id"] for e in listed] == [execution["id"]]
    assert (
        runner.get(f"/v1/runner-jobs/{job['id']}/executions/{execution['id']}").json()["status"] == "finished"
    )
    assert runner.get(f"/v1/runner-jobs/{job['id']}/executions/run00000000000000000000000").status_code == 404


@pytest.mark.parametrize(
    ("execution_status", "job_status"),
    [
        ("failed", "failed"),
        ("timed-out", "timed-out"),
        ("cancelled", "cancelled"),
        ("not-attempted", "failed"),
    ],
)
def test_job_status_follows_a_terminal_execution(
    cp: EmbeddedControlPlane,
    admin: httpx.Client,
    runner: httpx.Client,
    execution_status: str,
    job_status: str,
) -> None:
    job = submit(admin, cp)
    execution = claim(runner, job["id"])
    assert patch(runner, job["id"], execution["id"], "initializing").status_code == 200
    assert patch(runner, job["id"], execution["id"], execution_status).status_code == 200
    assert runner.get(f"/v1/runner-jobs/{job['id']}").json()["status"] == job_status


def test_claim_of_a_job_that_is_not_available_is_409(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    job = submit(admin, cp)
    claim(runner, job["id"])
    again = runner.post(f"/v1/runner-jobs/{job['id']}/executions", json={})
    assert again.status_code == 409
    assert again.json()["user_error"] is True
    cancelled = submit(admin, cp)
    assert admin.post(f"/v1/runner-jobs/{cancelled['id']}/cancel", json={}).status_code == 200
    assert runner.post(f"/v1/runner-jobs/{cancelled['id']}/executions", json={}).status_code == 409
    assert runner.post("/v1/runner-jobs/job00000000000000000000000/executions", json={}).status_code == 404


def test_result_is_stored_with_or_without_contents_and_replaced(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    job = submit(admin, cp, type="terraform-deploy")
    execution = claim(runner, job["id"])
    url = f"/v1/runner-jobs/{job['id']}/executions/{execution['id']}/result"
    error = {"success": False, "error_code": 3, "error_metadata": {"step": "execute", "message": "boom"}}
    response = runner.post(url, json=error)
    assert response.status_code == 201
    assert response.content == b"null"
    stored = admin.get(url).json()
    assert stored["success"] is False
    assert stored["error_code"] == 3
    assert stored["error_metadata"] == {"step": "execute", "message": "boom"}
    raw = b"\x00\xfftfplan bytes"
    display = gzip.compress(b'{"resource_changes":[]}')
    ok = {
        "success": True,
        "contents_compressed": base64.urlsafe_b64encode(raw).decode(),
        "contents_display_compressed": base64.urlsafe_b64encode(display).decode(),
        "contents_display": {"k": "v"},
    }
    assert runner.post(url, json=ok).status_code == 201
    stored = admin.get(url).json()
    assert stored["success"] is True
    assert "error_metadata" not in stored
    assert base64.b64decode(stored["contents_gzip"]) == raw
    assert base64.b64decode(stored["contents_display_gzip"]) == display
    assert json.loads(base64.b64decode(stored["contents_display"])) == {"k": "v"}
    bad = runner.post(url, json={"success": True, "contents_compressed": "not base64 !!"})
    assert bad.status_code == 400
    assert runner.post(url, json={"success": "yes"}).status_code == 400
    execution_view = runner.get(f"/v1/runner-jobs/{job['id']}/executions/{execution['id']}").json()
    assert execution_view["result"]["success"] is True


def test_outputs_201_then_duplicate_key_and_job_shows_latest_finished(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    job = submit(admin, cp, max_executions=2)
    first = claim(runner, job["id"])
    url = f"/v1/runner-jobs/{job['id']}/executions/{first['id']}/outputs"
    response = runner.post(url, json={"outputs": {"attempt": 1}})
    assert response.status_code == 201
    assert json.loads(base64.b64decode(response.json()["outputs_json"])) == {"attempt": 1}
    duplicate = runner.post(url, json={"outputs": {"attempt": 1}})
    assert duplicate.status_code == 400
    assert duplicate.json()["error"] == "duplicate key"
    assert patch(runner, job["id"], first["id"], "failed").status_code == 200
    retried = runner.get(f"/v1/runner-jobs/{job['id']}").json()
    assert retried["status"] == "available"
    assert "outputs" not in retried
    second = claim(runner, job["id"])
    runner.post(
        f"/v1/runner-jobs/{job['id']}/executions/{second['id']}/outputs", json={"outputs": {"attempt": 2}}
    )
    assert patch(runner, job["id"], second["id"], "in-progress").status_code == 200
    assert patch(runner, job["id"], second["id"], "finished").status_code == 200
    done = runner.get(f"/v1/runner-jobs/{job['id']}").json()
    assert done["status"] == "finished"
    assert done["execution_count"] == 2
    assert done["outputs"] == {"attempt": 2}
    assert done["final_runner_job_execution_id"] == second["id"]
    assert json.loads(base64.b64decode(done["outputs_json"])) == {"attempt": 2}
    assert runner.post(f"/v1/runner-jobs/{job['id']}/executions", json={}).status_code == 409


def test_deprecated_job_patch_answers_empty_object(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    job = submit(admin, cp, type="shut-down")
    execution = claim(runner, job["id"])
    assert patch(runner, job["id"], execution["id"], "initializing").status_code == 200
    assert patch(runner, job["id"], execution["id"], "finished").status_code == 200
    response = runner.patch(f"/v1/runner-jobs/{job['id']}", json={"status": "finished"})
    assert response.status_code == 200
    assert response.json() == {}
    other = submit(admin, cp, type="shut-down")
    assert runner.patch(f"/v1/runner-jobs/{other['id']}", json={"status": "finished"}).json() == {}
    assert runner.get(f"/v1/runner-jobs/{other['id']}").json()["status"] == "finished"
    assert runner.patch(f"/v1/runner-jobs/{other['id']}", json={"status": "available"}).status_code == 409
    assert runner.patch(f"/v1/runner-jobs/{other['id']}", json={"status": "nope"}).status_code == 400


def test_cancel_cancels_the_running_execution(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    job = submit(admin, cp)
    execution = claim(runner, job["id"])
    patch(runner, job["id"], execution["id"], "in-progress")
    assert runner.post(f"/v1/runner-jobs/{job['id']}/cancel", json={}).status_code == 403
    response = admin.post(f"/v1/runner-jobs/{job['id']}/cancel", json={})
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert runner.get(f"/v1/runner-jobs/{job['id']}").json()["executions"][0]["status"] == "cancelled"
    assert patch(runner, job["id"], execution["id"], "finished").status_code == 409
    assert admin.post(f"/v1/runner-jobs/{job['id']}/cancel", json={}).status_code == 409


# ------------------------------------------------------------------ long poll


def test_long_poll_holds_then_answers_when_a_job_arrives(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    import threading

    result: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        response = runner.get(f"/v1/runners/{cp.runner_id}/jobs", params={"group": "sync", "wait": "10s"})
        result["elapsed"] = time.monotonic() - started
        result["jobs"] = response.json()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    submit(admin, cp, type="noop")  # another group: must not answer the poll
    time.sleep(0.2)
    assert thread.is_alive()
    submitted_at = time.monotonic()
    job = submit(admin, cp, type="noop-sync")
    thread.join(10)
    woke_after = time.monotonic() - submitted_at
    assert [j["id"] for j in result["jobs"]] == [job["id"]]
    assert 0.4 < result["elapsed"] < 5
    assert woke_after < 1.0


def test_long_poll_returns_empty_list_when_the_wait_ends(
    cp: EmbeddedControlPlane, runner: httpx.Client
) -> None:
    started = time.monotonic()
    response = runner.get(f"/v1/runners/{cp.runner_id}/jobs", params={"group": "build", "wait": "300ms"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json() == []
    assert 0.25 < elapsed < 3
    started = time.monotonic()
    assert runner.get(f"/v1/runners/{cp.runner_id}/jobs", params={"wait": "0.2"}).json() == []
    assert time.monotonic() - started >= 0.15


# ------------------------------------------------------------------ logs


def _otlp_body(bodies: list[str], **attributes: str) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_INFO, LogRecord, ResourceLogs, ScopeLogs

    records = [
        LogRecord(
            time_unix_nano=1_700_000_000_000_000_000 + i,
            severity_text="INFO",
            severity_number=SEVERITY_NUMBER_INFO,
            body=AnyValue(string_value=text),
            attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes.items()],
        )
        for i, text in enumerate(bodies)
    ]
    request = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    )
    return bytes(request.SerializeToString())


def test_log_ingest_keeps_order_and_pages(
    cp: EmbeddedControlPlane, admin: httpx.Client, runner: httpx.Client
) -> None:
    job = submit(admin, cp)
    url = f"/v1/log-streams/{job['log_stream_id']}/logs"
    headers = {"Content-Type": "application/x-protobuf"}
    assert runner.post(url, content=_otlp_body(["a", "b"], step="one"), headers=headers).status_code == 201
    gz = gzip.compress(_otlp_body(["c"]))
    assert runner.post(url, content=gz, headers={**headers, "Content-Encoding": "gzip"}).status_code == 201
    records = admin.get(url).json()
    assert [r["body"] for r in records] == ["a", "b", "c"]
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert records[0]["attributes"] == {"step": "one"}
    assert records[0]["severity_text"] == "INFO"
    page = admin.get(url, params={"offset": 1, "limit": 1})
    assert [r["body"] for r in page.json()] == ["b"]
    assert page.headers["x-nuon-api-offset"] == "2"
    assert (
        runner.post(url, content=b'{"json": true}', headers={"Content-Type": "application/json"}).status_code
        == 415
    )
    assert runner.post(url, content=b"\xff\xff\xff", headers=headers).status_code == 400
    bad_gzip = runner.post(url, content=b"nope", headers={**headers, "Content-Encoding": "gzip"})
    assert bad_gzip.status_code == 400
    assert (
        runner.post(
            "/v1/log-streams/log00000000000000000000000/logs", content=b"", headers=headers
        ).status_code
        == 404
    )
    stream = admin.get(f"/v1/log-streams/{job['log_stream_id']}").json()
    assert stream["record_count"] == 3
    assert "write_token" not in stream


# ------------------------------------------------------------------ errors and limits


def test_every_error_has_the_contract_shape(cp: EmbeddedControlPlane, admin: httpx.Client) -> None:
    for response in (
        admin.get("/v1/nothing-here"),
        admin.delete(f"/v1/runners/{cp.runner_id}"),
        admin.post(f"/v1/runners/{cp.runner_id}/jobs", content=b"[1,"),
        admin.post(f"/v1/runners/{cp.runner_id}/jobs", content=b""),
        admin.get("/v1/runner-jobs/unknown"),
    ):
        assert 400 <= response.status_code < 500
        body = response.json()
        assert isinstance(body["error"], str)
        assert isinstance(body["user_error"], bool)
        assert isinstance(body.get("description", ""), str)


def test_pathological_json_is_400_not_500(cp: EmbeddedControlPlane, admin: httpx.Client) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert admin.post(f"/v1/runners/{cp.runner_id}/jobs", content=deep).status_code == 400
    text = '{"type":"noop","plan":' + '{"a":' * 3000 + "{}" + "}" * 3000 + "}"
    assert admin.post(f"/v1/runners/{cp.runner_id}/jobs", content=text.encode()).status_code == 400
    workspace = admin.post("/v1/terraform-workspaces", json={}).json()["id"]
    state = admin.post("/v1/terraform-backend", params={"workspace_id": workspace}, content=deep)
    assert state.status_code == 400
    assert admin.post(f"/v1/runners/{cp.runner_id}/jobs", content=b"\xff\xfe").status_code == 400
    surrogate = b'{"type": "noop", "owner_id": "\\udcff"}'
    assert admin.post(f"/v1/runners/{cp.runner_id}/jobs", content=surrogate).status_code == 400
    pair = b'{"type": "noop", "owner_id": "\\ud83d\\ude00"}'
    assert admin.post(f"/v1/runners/{cp.runner_id}/jobs", content=pair).json()["owner_id"] == "\U0001f600"


def test_oversize_bodies_are_413(embedded_control_plane_factory: Any) -> None:
    cp = embedded_control_plane_factory(max_body_bytes=1024)
    with cp.runner_http(cp.admin_token) as admin:
        big = {"type": "noop", "plan": {"x": "y" * 2000}}
        response = admin.post(f"/v1/runners/{cp.runner_id}/jobs", json=big)
        assert response.status_code == 413
        assert response.json()["error"] == "request body too large"

        def chunks() -> Any:
            yield b'{"type": "noop", "plan": {"x": "'
            for _ in range(10):
                yield b"y" * 200
            yield b'"}}'

        streamed = admin.post(f"/v1/runners/{cp.runner_id}/jobs", content=chunks())
        assert streamed.status_code == 413
        bomb = gzip.compress(b"\x00" * 100_000)
        job = admin.post(f"/v1/runners/{cp.runner_id}/jobs", json={"type": "noop"}).json()
        inflated = admin.post(
            f"/v1/log-streams/{job['log_stream_id']}/logs",
            content=bomb,
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        )
        assert inflated.status_code == 413


def test_operator_client_round_trip(cp: EmbeddedControlPlane) -> None:
    with cp.operator() as operator:
        job = operator.submit("noop", {"k": 1}, execution_timeout_s=5)
        assert job["execution_timeout"] == 5_000_000_000
        assert operator.plan(job["id"]) == '{"k": 1}'
        assert operator.list_jobs()[-1]["id"] == job["id"]
        assert operator.cancel(job["id"])["status"] == "cancelled"
        assert operator.wait_job(job["id"], {"cancelled"}, timeout=5)["status"] == "cancelled"
        with pytest.raises(OperatorError) as raised:
            operator.cancel(job["id"])
        assert raised.value.status == 409
        assert operator.runner()["id"] == cp.runner_id
        assert operator.patch_settings(logging_level="debug")["logging_level"] == "DEBUG"
