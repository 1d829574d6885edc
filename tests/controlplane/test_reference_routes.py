"""Routes the reference runner calls that the embedded control plane did not serve (issue 10
break 3): app config, helm release storage, action workflow runs/configs/steps, and settings
values the reference runner cannot parse (docs/runner-api.md §3.2, §8, §9)."""

from __future__ import annotations

import pytest

from tests.support.controlplane import EmbeddedControlPlane

pytestmark = pytest.mark.integration

RELEASE = {
    "name": "web",
    "namespace": "apps",
    "version": 1,
    "info": {"status": "deployed", "description": "Install complete"},
    "chart": {"metadata": {"name": "web", "version": "0.1.0"}},
    "config": {"replicas": 2},
    "manifest": "---\nkind: Service\n",
    "labels": {"team": "a"},
}


def test_app_config_stored_per_app_and_attached_to_a_job(
    embedded_control_plane: EmbeddedControlPlane,
) -> None:
    cp = embedded_control_plane
    config = {
        "sandbox": {"terraform_version": "1.11.4"},
        "component_config_connections": [
            {"component_id": "cmp1", "terraform_module": {"version": "1.10.0"}},
            {"component_id": "cmp2", "helm": {"chart_name": "web"}},
        ],
    }
    with cp.runner_http() as runner, cp.runner_http(cp.admin_token) as admin:
        # Before: the reference's terraform, sandbox, helm and kubernetes Fetch fail on this 404.
        assert runner.get("/v1/apps/app1/config/apc1").status_code == 404
        stored = admin.put("/v1/apps/app1/config/apc1", json=config)
        assert stored.status_code == 200
        served = runner.get("/v1/apps/anything/config/apc1").json()  # app_id ignored, as the reference
        assert served["id"] == "apc1"
        assert served["app_id"] == "app1"
        assert served["sandbox"]["terraform_version"] == "1.11.4"
        assert served["component_config_connections"][0]["terraform_module"]["version"] == "1.10.0"
        assert served["component_ids"] == []
        assert admin.put("/v1/apps/app1/config/apc2", json={"sandbox": "x"}).status_code == 400
        assert runner.put("/v1/apps/app1/config/apc3", json={}).status_code == 403

        with cp.operator() as operator:
            job = operator.submit("terraform-deploy", {"app_id": "app9", "app_config_id": "apc9"})
            bare = operator.submit("noop", {"k": "v"})
        attached = admin.post(f"/v1/runner-jobs/{job['id']}/app-config", json=config)
        assert attached.status_code == 201
        assert attached.json()["id"] == "apc9"
        assert runner.get("/v1/apps/app9/config/apc9").json()["app_id"] == "app9"
        refused = admin.post(f"/v1/runner-jobs/{bare['id']}/app-config", json=config)
        assert refused.status_code == 400
        assert "app_config_id" in refused.json()["description"]


def test_helm_release_storage_as_the_nuon_driver_uses_it(
    embedded_control_plane: EmbeddedControlPlane,
) -> None:
    cp = embedded_control_plane
    base = "/v1/helm-releases/hch1/releases/apps"
    key = "sh.helm.release.v1.web.v1"
    with cp.runner_http() as runner:
        assert runner.get(f"{base}/{key}").status_code == 404  # the reference: 500
        created = runner.post(f"{base}/{key}", json=RELEASE)
        assert created.status_code == 201
        row = created.json()
        assert (row["HelmChartID"], row["Key"], row["Name"], row["Namespace"]) == ("hch1", key, "web", "apps")
        assert (row["Version"], row["Status"], row["Owner"], row["Type"]) == (
            1,
            "deployed",
            "helm",
            "helm.sh/release.v1",
        )
        assert runner.post(f"{base}/{key}", json=RELEASE).status_code == 409  # the reference: 400
        assert runner.get(f"{base}/{key}").json() == RELEASE

        second = {**RELEASE, "version": 2, "info": {"status": "pending-upgrade"}}
        runner.post(f"{base}/sh.helm.release.v1.web.v2", json=second)
        assert [r["version"] for r in runner.get(base).json()] == [1, 2]
        query = runner.get(f"{base}/query", params={"name": "web", "owner": "helm", "status": "deployed"})
        assert [r["version"] for r in query.json()] == [1]
        assert (
            runner.get(f"{base}/query", params={"version": "2"}).json()[0]["info"]["status"]
            == "pending-upgrade"
        )
        assert runner.get(f"{base}/query", params={"name": "other"}).status_code == 404
        assert runner.get(f"{base}/query", params={"bogus": "1"}).status_code == 400  # the reference: 500

        superseded = {**RELEASE, "info": {"status": "superseded"}}
        updated = runner.put(f"{base}/{key}", json=superseded)
        assert updated.status_code == 200
        assert updated.json() is None
        assert runner.get(f"{base}/{key}").json()["info"]["status"] == "superseded"
        assert runner.put(f"{base}/sh.helm.release.v1.web.v9", json=RELEASE).status_code == 404
        deleted = runner.delete(f"{base}/{key}")
        assert deleted.status_code == 200
        assert deleted.json() is None
        assert runner.delete(f"{base}/{key}").status_code == 404
        assert runner.get("/v1/helm-releases/hch1/releases/other").json() == []


def test_action_workflow_run_config_and_step_updates(embedded_control_plane: EmbeddedControlPlane) -> None:
    cp = embedded_control_plane
    with cp.runner_http() as runner, cp.runner_http(cp.admin_token) as admin:
        config = admin.post(
            "/v1/action-workflows/configs",
            json={
                "timeout": 300_000_000_000,
                "steps": [
                    {"name": "hello", "inline_contents": "echo hi", "env_vars": {"A": "1"}},
                    {"name": "clone", "command": "./run.sh", "public_git_vcs_config": {"repo": "o/r"}},
                ],
            },
        )
        assert config.status_code == 201
        cfg = config.json()
        assert [s["idx"] for s in cfg["steps"]] == [0, 1]
        run = admin.post(
            "/v1/installs/inl1/action-workflows/runs",
            json={"action_workflow_config_id": cfg["id"], "run_env_vars": {"X": "y"}},
        )
        assert run.status_code == 201
        run_id = run.json()["id"]

        fetched = runner.get(f"/v1/installs/inl1/action-workflows/runs/{run_id}").json()
        assert fetched["action_workflow_config_id"] == cfg["id"]
        assert fetched["run_env_vars"] == {"X": "y"}
        assert [s["status"] for s in fetched["steps"]] == ["pending", "pending"]
        assert [s["step_id"] for s in fetched["steps"]] == [s["id"] for s in cfg["steps"]]
        assert runner.get(f"/v1/installs/other/action-workflows/runs/{run_id}").status_code == 404

        served = runner.get(f"/v1/action-workflows/configs/{cfg['id']}").json()
        assert served["timeout"] == 300_000_000_000
        assert served["steps"][0]["inline_contents"] == "echo hi"
        assert served["steps"][1]["public_git_vcs_config"] == {"repo": "o/r"}

        step = fetched["steps"][0]["id"]
        # The reference runner puts the workflow id in the run slot: the step is found by id alone.
        put = runner.put(
            f"/v1/installs/inl1/action-workflow-runs/{cfg['action_workflow_id']}/steps/{step}",
            json={"status": "finished", "execution_duration": 1_500_000_000},
        )
        assert put.status_code == 200
        assert (put.json()["status"], put.json()["execution_duration"]) == ("finished", 1_500_000_000)
        after = runner.get(f"/v1/installs/inl1/action-workflows/runs/{run_id}").json()
        assert after["steps"][0]["status"] == "finished"
        bad = runner.put(f"/v1/installs/inl1/action-workflow-runs/x/steps/{step}", json={"status": "done"})
        assert bad.status_code == 400
        assert (
            runner.put(
                "/v1/installs/inl1/action-workflow-runs/x/steps/nope", json={"status": "error"}
            ).status_code
            == 404
        )


@pytest.mark.parametrize(
    ("level", "stored"),
    [("debug", "DEBUG"), ("Info", "INFO"), ("WARN", "WARN"), ("error+2", "ERROR+2"), ("info-4", "INFO-4")],
)
def test_settings_logging_level_the_reference_parses(
    embedded_control_plane: EmbeddedControlPlane, level: str, stored: str
) -> None:
    cp = embedded_control_plane
    with cp.runner_http(cp.admin_token) as admin:
        response = admin.patch(f"/v1/runners/{cp.runner_id}/settings", json={"logging_level": level})
        assert response.status_code == 200
        assert response.json()["logging_level"] == stored


@pytest.mark.parametrize("level", ["warning", "WARNING", "trace", "", "info+", "info+x"])
def test_settings_logging_level_the_reference_cannot_parse_is_refused(
    embedded_control_plane: EmbeddedControlPlane, level: str
) -> None:
    """Go's ``slog.Level.UnmarshalText`` refuses these, and the reference runner exits at start-up."""
    cp = embedded_control_plane
    with cp.runner_http(cp.admin_token) as admin:
        response = admin.patch(f"/v1/runners/{cp.runner_id}/settings", json={"logging_level": level})
        assert response.status_code == 400
        with cp.runner_http() as runner:
            assert runner.get(f"/v1/runners/{cp.runner_id}/settings").json()["logging_level"] == "INFO"
