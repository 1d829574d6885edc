"""Workspace layout, variables, kubeconfig, credentials, output parsing and plan files."""

from __future__ import annotations

import io
import json
import stat
import sys
import zipfile
from pathlib import Path

import anyio
import pytest
import yaml

from handlers.terraform.cli_config import hcl_string, render_cli_config
from handlers.terraform.credentials import aws_env, azure_env, looks_secret
from handlers.terraform.output import TerraformOutput
from handlers.terraform.planfile import BadPlanFile, decode_plan_file, parse_plan_file, plan_mode
from handlers.terraform.workspace import (
    BACKEND_OVERRIDE_NAME,
    InvalidInput,
    declared_backends,
    kubeconfig_for,
    prepare_module,
    write_kubeconfig,
    write_policies,
    write_var_files,
)
from runner.api.plans import AWSAuth, AzureAuth, ClusterInfo
from runner.redact import Redactor
from tests.support.terraform import ListJobLog


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- variables


@pytest.mark.unit
def test_var_files_json_or_hcl_by_content(tmp_path: Path) -> None:
    files = write_var_files(
        tmp_path, {"name": "x", "tags": {"a": "b"}}, ['{"region": "eu-west-1"}', 'size = "large"\n', "  {\n}"]
    )
    assert [f.name for f in files] == [
        "plan-vars.tfvars.json",
        "vars_files-0.tfvars.json",
        "vars_files-1.tfvars",
        "vars_files-2.tfvars.json",
    ]
    assert json.loads(files[0].read_text()) == {"name": "x", "tags": {"a": "b"}}
    assert all(_mode(f) == 0o600 for f in files)
    assert write_var_files(tmp_path / "none", {}, []) == []


@pytest.mark.unit
def test_unparsable_json_var_file_is_a_clear_failure(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"vars_files\[1\] looks like JSON but does not parse"):
        write_var_files(tmp_path, {}, ["a = 1", '{"broken": }'])
    with pytest.raises(InvalidInput, match=r"vars_files\[0\] looks like JSON"):
        write_var_files(tmp_path, {}, ['{"a": 1} trailing'])


@pytest.mark.unit
def test_policies_are_plain_files(tmp_path: Path) -> None:
    directory = write_policies(tmp_path / "p", {"0.yaml": "a: 1\n", "b.yaml": "b: 2\n"})
    assert sorted(p.name for p in directory.iterdir()) == ["0.yaml", "b.yaml"]
    assert _mode(directory) == 0o700
    with pytest.raises(InvalidInput, match="plain file name"):
        write_policies(tmp_path / "q", {"../escape.yaml": "x"})


# --------------------------------------------------------------------------- module


@pytest.mark.unit
def test_prepare_module_forces_the_http_backend(tmp_path: Path) -> None:
    (tmp_path / ".terraform" / "providers").mkdir(parents=True)
    (tmp_path / "terraform.tfstate").write_text("{}")
    (tmp_path / "main.tf").write_text('terraform {\n  backend "s3" {}\n}\n')
    (tmp_path / "other.tf.json").write_text(json.dumps({"terraform": [{"cloud": {"organization": "x"}}]}))
    log = ListJobLog(Redactor())
    assert declared_backends(tmp_path) == ["main.tf", "other.tf.json"]
    prepare_module(tmp_path, log)
    assert not (tmp_path / ".terraform").exists()
    assert not (tmp_path / "terraform.tfstate").exists()
    assert 'backend "http" {}' in (tmp_path / BACKEND_OVERRIDE_NAME).read_text()
    assert any("declares its own backend" in m for m in log.messages("warning"))
    with pytest.raises(InvalidInput, match="no terraform files"):
        prepare_module(_empty(tmp_path), log)


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("no module here\n")
    return empty


# --------------------------------------------------------------------------- kubeconfig


@pytest.mark.unit
def test_kubeconfig_from_cluster_info(tmp_path: Path) -> None:
    cluster = ClusterInfo(
        id="prod-eks",
        endpoint="ABC.gr7.us-east-1.eks.amazonaws.com",
        ca_data="LS0tLS1CRUdJTg==",
        aws_auth=AWSAuth(region="us-east-1"),
    )
    config = yaml.safe_load(kubeconfig_for(cluster))
    assert config["clusters"][0]["cluster"]["server"] == "https://ABC.gr7.us-east-1.eks.amazonaws.com"
    assert config["clusters"][0]["cluster"]["certificate-authority-data"] == "LS0tLS1CRUdJTg=="
    exec_cfg = config["users"][0]["user"]["exec"]
    # the runner's own interpreter makes the token: the image has no AWS CLI
    assert exec_cfg["command"] == sys.executable
    assert exec_cfg["args"] == [
        "-m",
        "handlers.common.eks",
        "--cluster-name",
        "prod-eks",
        "--region",
        "us-east-1",
    ]
    path = write_kubeconfig(tmp_path / "kubeconfig", cluster)
    assert _mode(path) == 0o600
    given = ClusterInfo(kube_config="apiVersion: v1\nkind: Config\n")
    assert kubeconfig_for(given) == "apiVersion: v1\nkind: Config\n"


# --------------------------------------------------------------------------- credentials


@pytest.mark.unit
def test_static_aws_and_azure_env_register_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = Redactor()
    log = ListJobLog(secrets)
    auth = AWSAuth.model_validate(
        {
            "region": "eu-central-1",
            "static": {
                "access_key_id": "AKIAEXAMPLE",
                "secret_access_key": "wJalr/secret",
                "session_token": "tok-1",
            },
        }
    )
    env = anyio.run(lambda: aws_env(auth, secrets=secrets, log=log))
    assert env == {
        "AWS_REGION": "eu-central-1",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalr/secret",
        "AWS_SESSION_TOKEN": "tok-1",
    }
    assert secrets.mask("key wJalr/secret tok-1") == "key *** ***"

    monkeypatch.setenv("AWS_PROFILE", "runner-profile")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-runner-env")
    default = anyio.run(lambda: aws_env(AWSAuth(use_default=True), secrets=secrets, log=log))
    assert default["AWS_PROFILE"] == "runner-profile"
    assert secrets.mask("from-runner-env") == "***"
    assert anyio.run(lambda: aws_env(None, secrets=secrets, log=log)) == {}

    azure = AzureAuth.model_validate(
        {"service_principal": {"subscription_id": "sub-1", "subscription_tenant_id": "tenant-1"}}
    )
    assert azure_env(azure, secrets=secrets) == {"ARM_SUBSCRIPTION_ID": "sub-1", "ARM_TENANT_ID": "tenant-1"}
    monkeypatch.setenv("ARM_CLIENT_SECRET", "azure-secret-value")
    assert (
        azure_env(AzureAuth(use_default=True), secrets=secrets)["ARM_CLIENT_SECRET"] == "azure-secret-value"
    )
    assert secrets.mask("azure-secret-value") == "***"
    assert looks_secret("GITHUB_TOKEN")
    assert not looks_secret("AWS_REGION")


@pytest.mark.terraform
def test_assume_role_through_sts(aws_endpoint: str) -> None:
    secrets = Redactor()
    log = ListJobLog(secrets)
    auth = AWSAuth.model_validate(
        {
            "region": "us-east-1",
            "static": {"access_key_id": "AKIDBASE", "secret_access_key": "base-secret"},
            "assume_role": {
                "role_arn": "arn:aws:iam::123456789012:role/deploy",
                "session_name": "install-deploy-1",
                "session_duration_seconds": 900,
            },
        }
    )
    env = anyio.run(lambda: aws_env(auth, secrets=secrets, log=log))
    assert env["AWS_ACCESS_KEY_ID"] != "AKIDBASE"
    assert env["AWS_SESSION_TOKEN"]
    assert secrets.mask(env["AWS_SECRET_ACCESS_KEY"]) == "***"
    assert any("assuming AWS role" in m for m in log.messages())


# --------------------------------------------------------------------------- output and plan files


@pytest.mark.unit
def test_json_ui_lines_and_error_summary() -> None:
    log = ListJobLog(Redactor())
    out = TerraformOutput("apply")
    out(log, "stdout", json.dumps({"@level": "info", "@message": "Terraform 1.11.4", "type": "version"}))
    out(
        log,
        "stdout",
        json.dumps(
            {
                "@level": "warn",
                "@message": "Warning: Deprecated",
                "type": "diagnostic",
                "diagnostic": {"severity": "warning", "summary": "Deprecated", "detail": "use x"},
            }
        ),
    )
    out(
        log,
        "stdout",
        json.dumps(
            {
                "@level": "error",
                "@message": "Error: Invalid value",
                "type": "diagnostic",
                "diagnostic": {
                    "severity": "error",
                    "summary": "Invalid value",
                    "detail": "The value   is\nnot allowed.",
                    "address": "terraform_data.x",
                    "range": {"filename": "main.tf"},
                },
            }
        ),
    )
    out(log, "stderr", "not json at all")
    assert [r.level for r in log.records] == ["info", "warning", "error", "warning"]
    assert log.records[1].attrs["tf_type"] == "diagnostic"
    assert out.error_summary() == "terraform_data.x: Invalid value: The value is not allowed. (in main.tf)"


@pytest.mark.unit
def test_boxed_text_errors_are_summarised() -> None:
    log = ListJobLog(Redactor())
    out = TerraformOutput("init")
    for line in [
        "Initializing the backend...",
        "╷",
        "│ Error: Failed to query available provider packages",
        "│ ",
        "│ Could not retrieve the list of available versions for provider hashicorp/aws",
        "╵",
    ]:
        out(log, "stderr" if line.startswith(("╷", "│", "╵")) else "stdout", line)
    assert out.error_summary() == (
        "Failed to query available provider packages: "
        "Could not retrieve the list of available versions for provider hashicorp/aws"
    )
    assert [r.level for r in log.records] == ["info", "error", "error"]
    empty = TerraformOutput("x")
    empty(log, "stderr", "segfault somewhere")
    assert empty.error_summary() == "segfault somewhere"


def _plan_zip(tfplan: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("tfplan", tfplan)
        zf.writestr("tfstate", "{}")
    return buffer.getvalue()


@pytest.mark.unit
def test_plan_files_are_validated_and_their_mode_read() -> None:
    # field 1 varint 3, field 3 (bytes, 2 long), field 17 varint 1 (ui_mode = destroy)
    destroy = bytes([0x08, 0x03, 0x1A, 0x02, 0x61, 0x62, 0x88, 0x01, 0x01])
    assert plan_mode(destroy) == "destroy"
    assert plan_mode(bytes([0x08, 0x03])) == "normal"
    assert parse_plan_file(_plan_zip(destroy)).is_destroy
    assert not parse_plan_file(_plan_zip(b"")).is_destroy
    with pytest.raises(BadPlanFile, match="not a zip"):
        parse_plan_file(b"plain bytes")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("other", "x")
    with pytest.raises(BadPlanFile, match="no tfplan member"):
        parse_plan_file(buffer.getvalue())
    with pytest.raises(BadPlanFile, match="not a terraform plan"):
        decode_plan_file("%%%")
    with pytest.raises(BadPlanFile, match="empty"):
        decode_plan_file("")


@pytest.mark.unit
def test_cli_config_with_a_provider_mirror(tmp_path: Path) -> None:
    (tmp_path / "mirror" / "registry.terraform.io" / "hashicorp" / "null").mkdir(parents=True)
    text = render_cli_config(tmp_path / "cache", tmp_path / "mirror")
    assert f'plugin_cache_dir = "{tmp_path / "cache"}"' in text
    assert 'include = ["registry.terraform.io/hashicorp/null"]' in text
    assert 'exclude = ["registry.terraform.io/hashicorp/null"]' in text
    assert "provider_installation" not in render_cli_config(tmp_path / "cache", None)
    assert hcl_string('a"b${c}') == '"a\\"b$${c}"'
