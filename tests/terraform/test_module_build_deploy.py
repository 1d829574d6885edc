"""terraform-module-build pushes a module artifact; terraform-deploy pulls and applies it.

Real git (git daemon), a real registry (distribution) with skopeo as the oracle for what was
pushed, real terraform, and the loopback backend stand-in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from handlers.terraform.deploy import TerraformDeployHandler
from handlers.terraform.module_build import TerraformModuleBuildHandler
from runner.api.plans import BuildPlan, DeployPlan
from tests.support.registry import PASSWORD, USER, RegistryServer
from tests.support.terraform import BackendStub, GitServer, JobFactory, data_module
from tests.support.tools import require_tool

pytestmark = [pytest.mark.terraform, pytest.mark.oci, pytest.mark.usefixtures("terraform_bin")]


def registry_config(server: RegistryServer, path: str, *, auth: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = {"RegistryType": "private_oci", "Repository": f"{server.host}/{path}"}
    if auth:
        config["OCIAuth"] = {"Username": USER, "Password": PASSWORD}
    return config


def skopeo_manifest(server: RegistryServer, path: str, tag: str, *, auth: bool = False) -> dict[str, Any]:
    skopeo = require_tool("skopeo")
    argv = [skopeo, "inspect", "--raw", "--tls-verify=false"]
    if auth:
        argv += ["--creds", f"{USER}:{PASSWORD}"]
    out = subprocess.run(
        [*argv, f"docker://{server.host}/{path}:{tag}"], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout))


def module_repo(git_server: GitServer) -> str:
    files = data_module(2)
    files["modules/app/main.tf"] = files.pop("main.tf")
    files["modules/app/pre-apply.sh"] = "#!/bin/sh\necho deploy pre-apply hook\n"
    files["modules/app/.terraform/stale.txt"] = "must not be shipped\n"
    files["README.md"] = "repository root, not part of the module\n"
    return git_server.create("infra", files)


def build(
    tf_job: JobFactory, url: str, registry: dict[str, Any], *, owner_id: str = "bld-0001", dst_tag: str = ""
) -> Any:
    plan = BuildPlan.model_validate(
        {
            "component_id": "cmp1",
            "component_build_id": owner_id,
            "git_source": {"url": url, "ref": "main", "path": "modules/app"},
            "dst_registry": registry,
            "dst_tag": dst_tag or owner_id,
        }
    )
    job = tf_job(TerraformModuleBuildHandler, plan, job_type="terraform-module-build", owner_id=owner_id)
    job.run_sync()
    return job


def test_build_pushes_the_module_and_deploy_plans_and_applies_it(
    tf_job: JobFactory, tf_backend: BackendStub, git_server: GitServer, oci_registry: RegistryServer
) -> None:
    url = module_repo(git_server)
    registry = registry_config(oci_registry, "org/app")
    built = build(tf_job, url, registry)

    outputs = built.ctx.outputs
    assert outputs is not None
    assert sorted(outputs["files"]) == ["main.tf", "pre-apply.sh"], (
        ".git, .terraform and the repo root left out"
    )
    assert outputs["image"]["tag"] == "bld-0001"
    manifest = skopeo_manifest(oci_registry, "org/app", "bld-0001")
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"file/terraform"}
    titles = sorted(layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"])
    assert titles == ["main.tf", "pre-apply.sh"]
    raw = subprocess.run(
        [
            require_tool("skopeo"),
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{oci_registry.host}/org/app:bld-0001",
        ],
        capture_output=True,
        check=True,
    ).stdout
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert outputs["image"]["digest"] == digest

    ws = tf_backend.add_workspace()
    deploy_plan = DeployPlan.model_validate(
        {
            "install_id": "inst1",
            "component_id": "cmp1",
            "src_registry": registry,
            "src_tag": "bld-0001",
            "terraform": {
                "vars": {"name": "deployed"},
                "terraform_backend": {"WorkspaceID": ws},
                "hooks": {"Enabled": True, "EnvVars": {}},
            },
        }
    )
    planned = tf_job(
        TerraformDeployHandler, deploy_plan, job_type="terraform-deploy", operation="create-apply-plan"
    )
    planned.run_sync()
    assert planned.ctx.result is not None
    stored = base64.urlsafe_b64decode(planned.ctx.result.contents_compressed or "")
    apply_plan = deploy_plan.model_copy(update={"apply_plan_contents": base64.b64encode(stored).decode()})
    applied = tf_job(TerraformDeployHandler, apply_plan, job_type="terraform-deploy", operation="apply-plan")
    applied.run_sync()
    assert applied.ctx.outputs is not None
    assert applied.ctx.outputs["names"] == ["deployed-0", "deployed-1"]
    assert "deploy pre-apply hook" in applied.log.messages(), (
        "the hook kept its execute bit through the registry"
    )
    assert len(tf_backend.resources(ws)[0]["instances"]) == 2


def test_registry_credentials_are_masked_and_the_tag_falls_back_to_dst_tag(
    tf_job: JobFactory, git_server: GitServer, oci_basic_registry: RegistryServer
) -> None:
    url = module_repo(git_server)
    registry = registry_config(oci_basic_registry, "org/secure", auth=True)
    built = build(tf_job, url, registry, owner_id="", dst_tag="bld-fallback")
    assert built.ctx.outputs is not None
    assert built.ctx.outputs["image"]["tag"] == "bld-fallback"
    assert skopeo_manifest(oci_basic_registry, "org/secure", "bld-fallback", auth=True)["layers"]
    assert PASSWORD not in built.log.text()


def test_deploy_of_a_missing_artifact_fails_before_terraform(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub, oci_registry: RegistryServer
) -> None:
    plan = DeployPlan.model_validate(
        {
            "src_registry": registry_config(oci_registry, "org/none"),
            "src_tag": "does-not-exist",
            "terraform": {"terraform_backend": {"WorkspaceID": tf_backend.add_workspace()}},
        }
    )
    job = tf_job(TerraformDeployHandler, plan, job_type="terraform-deploy", operation="create-apply-plan")
    with pytest.raises(Exception, match="does-not-exist") as info:
        job.run_sync()
    assert type(info.value).__name__ in ("NotFound", "RegistryError")
    assert not [m for m in job.log.messages() if "terraform init" in m]


ENV_MODULE = {
    "main.tf": """
resource "terraform_data" "env" {
  provisioner "local-exec" {
    command = "env | sort > tf-env.txt && cp \\"$KUBECONFIG\\" kubeconfig-copy.yaml"
  }
}
"""
}


def test_deploy_env_credentials_and_kubeconfig_reach_terraform_only(
    tmp_path: Path,
    tf_job: JobFactory,
    tf_backend: BackendStub,
    git_server: GitServer,
    oci_registry: RegistryServer,
) -> None:
    url = git_server.create("envmod", {f"modules/app/{k}": v for k, v in ENV_MODULE.items()})
    registry = registry_config(oci_registry, "org/envmod")
    build(tf_job, url, registry, owner_id="bld-env")
    ws = tf_backend.add_workspace()
    plan = DeployPlan.model_validate(
        {
            "src_registry": registry,
            "src_tag": "bld-env",
            "terraform": {
                "terraform_backend": {"WorkspaceID": ws},
                "env_vars": {"TF_VAR_region": "eu-west-1", "DEPLOY_API_TOKEN": "deploy-token-123456"},
                "aws_auth": {
                    "region": "eu-west-1",
                    "static": {"access_key_id": "AKIATESTKEY", "secret_access_key": "aws-secret-abcdef"},
                },
                "azure_auth": {
                    "service_principal": {"subscription_id": "sub-1", "subscription_tenant_id": "ten-1"}
                },
                "cluster_info": {"id": "prod", "endpoint": "kube.example.internal", "ca_data": "Q0EK"},
            },
        }
    )
    planned = tf_job(TerraformDeployHandler, plan, job_type="terraform-deploy", operation="create-apply-plan")
    planned.run_sync()
    assert planned.ctx.result is not None
    stored = base64.urlsafe_b64decode(planned.ctx.result.contents_compressed or "")
    applied = tf_job(
        TerraformDeployHandler,
        plan.model_copy(update={"apply_plan_contents": base64.b64encode(stored).decode()}),
        job_type="terraform-deploy",
        operation="apply-plan",
    )
    applied.run_sync()
    module_dir = applied.ctx.workspace / "module"
    env = dict(
        line.split("=", 1) for line in (module_dir / "tf-env.txt").read_text().splitlines() if "=" in line
    )
    assert env["TF_VAR_region"] == "eu-west-1"
    assert env["AWS_ACCESS_KEY_ID"] == "AKIATESTKEY"
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["ARM_SUBSCRIPTION_ID"] == "sub-1"
    assert env["ARM_TENANT_ID"] == "ten-1"
    assert env["TF_IN_AUTOMATION"] == "1"
    assert env["CHECKPOINT_DISABLE"] == "1"
    assert env["TF_HTTP_ADDRESS"].startswith("http://127.0.0.1:")
    assert tf_backend.token not in (module_dir / "tf-env.txt").read_text()
    assert "RUNNER_API_TOKEN" not in env
    kubeconfig = Path(env["KUBECONFIG"])
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert "https://kube.example.internal" in (module_dir / "kubeconfig-copy.yaml").read_text()
    text = applied.log.text() + planned.log.text()
    assert "aws-secret-abcdef" not in text
    assert "deploy-token-123456" not in text
