"""Plans decode like Go: keys case-insensitive, Go field names, clear errors."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from runner.api.plans import (
    DeployPlan,
    EmptyPlan,
    PlanError,
    SandboxRunPlan,
    SyncOCIPlan,
    decode_any_base64,
    decode_apply_plan_contents,
    decode_plan,
    encode_plan_result,
)

pytestmark = pytest.mark.unit


def test_go_names_any_case() -> None:
    text = json.dumps(
        {
            "src_registry": {
                "registryType": "private_oci",
                "OCIAUTH": {"username": "u", "Password": "p"},
                "Repository": "org/app",
                "loginServer": "127.0.0.1:5000",
            },
            "SRC_TAG": "bld1",
            "dst_registry": {"RegistryType": "ecr", "Region": "eu-west-1", "ECRAuth": {"use_default": True}},
            "dst_tag": "dpl1",
        }
    )
    plan = decode_plan("oci-sync", text)
    assert isinstance(plan, SyncOCIPlan)
    assert plan.src_registry is not None
    assert plan.src_registry.registry_type == "private_oci"
    assert plan.src_registry.oci_auth is not None
    assert plan.src_registry.oci_auth.password == "p"
    assert plan.src_registry.login_server == "127.0.0.1:5000"
    assert plan.src_tag == "bld1"
    assert plan.dst_registry is not None
    assert plan.dst_registry.ecr_auth is not None
    assert plan.dst_registry.ecr_auth.use_default
    wire = plan.to_wire()
    assert wire["src_registry"]["RegistryType"] == "private_oci"
    assert wire["src_registry"]["OCIAuth"] == {"Username": "u", "Password": "p"}


def test_deploy_and_sandbox_plans() -> None:
    deploy = decode_plan(
        "terraform-deploy",
        '{"terraform": {"terraform_backend": {"workspaceid": "tfw1"}, "vars": {"a": 1}, '
        '"hooks": {"enabled": true, "envVars": {"X": "1"}}}, "apply_plan_contents": "abc"}',
    )
    assert isinstance(deploy, DeployPlan)
    assert deploy.terraform is not None
    assert deploy.terraform.terraform_backend is not None
    assert deploy.terraform.terraform_backend.workspace_id == "tfw1"
    assert deploy.terraform.hooks is not None
    assert deploy.terraform.hooks.env_vars == {"X": "1"}
    sandbox = decode_plan(
        "sandbox-terraform", '{"policies": {"0.yaml": "x"}, "local_archive": {"local_archive": "/m"}}'
    )
    assert isinstance(sandbox, SandboxRunPlan)
    assert sandbox.policies == {"0.yaml": "x"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"src_tag": {"a": 1}}', "src_tag"),
    ],
)
def test_bad_plans(text: str, needle: str) -> None:
    with pytest.raises(PlanError, match=needle):
        decode_plan("oci-sync", text)


def test_empty_and_planless() -> None:
    assert isinstance(decode_plan("noop", ""), EmptyPlan)
    assert isinstance(decode_plan("noop", "null"), EmptyPlan)
    plan = decode_plan("health-check", '{"sandbox_mode": {"enabled": true, "outputs": {"a": 1}}}')
    assert plan.sandbox_mode is not None
    assert plan.sandbox_mode.outputs == {"a": 1}


def test_plan_result_round_trip_to_the_byte() -> None:
    raw = bytes(range(256)) * 10  # a tfplan is a zip: arbitrary bytes, not gzipped again
    display = b'{"format_version": "1.2", "resource_changes": []}'
    fields = encode_plan_result(raw, display)
    # what the server does: base64-URL decode, store; the apply job gets base64-std of it
    stored = base64.urlsafe_b64decode(fields["contents_compressed"])
    assert stored == raw
    apply_contents = base64.standard_b64encode(stored).decode()
    assert decode_apply_plan_contents(apply_contents) == raw
    assert gzip.decompress(base64.urlsafe_b64decode(fields["contents_display_compressed"])) == display
    assert decode_any_base64(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw


def test_apply_contents_errors() -> None:
    with pytest.raises(PlanError, match="empty"):
        decode_apply_plan_contents("")
    with pytest.raises(PlanError, match="not base64"):
        decode_apply_plan_contents("!!!! not base64 ****")
