"""The runner's own ``state-json`` rendering, byte for byte against real ``terraform show -json``.

Each case applies a module with real terraform (local backend), caches the provider schemas the
way the handlers do (``terraform providers schema -json`` -> ``SchemaCache.store``), renders the
state file with ``handlers.terraform.state_json`` and compares with what terraform prints. The
modules cover what a state holds: dynamic values of every shape, sensitive values at several
depths, count and for_each keys, dependencies, nested and keyed child modules, a data source, a
tainted instance, a third-party provider (hashicorp/null from the filesystem mirror), outputs of
every type, and the empty state after a destroy.

Then the handler path: the first apply on a runner with no cached schema falls back to
``terraform show -json`` and fills the cache, the next one renders, and both send the same bytes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from handlers.terraform.apply_state import try_render
from handlers.terraform.sandbox import SandboxTerraformHandler
from handlers.terraform.schemas import SchemaCache, locked_versions
from handlers.terraform.state_json import (
    CannotRender,
    load_state,
    providers_in_state,
    render_state_json,
)
from runner.api.plans import SandboxRunPlan
from tests.support.terraform import BackendStub, JobFactory, data_module, write_module

pytestmark = [pytest.mark.terraform, pytest.mark.usefixtures("terraform_bin")]

RICH_MODULE = {
    "main.tf": """
resource "terraform_data" "shapes" {
  input = {
    name    = "x <&> \\u2028 é"
    numbers = [1, 1.5, -0.25, 12345678901234567890, 3e-7]
    nested  = { secret = sensitive("hidden"), plain = "shown", empty = {} }
    list    = [sensitive("a"), "b"]
    null    = null
    flag    = true
  }
}

resource "terraform_data" "keyed" {
  for_each = toset(["alpha", "beta.gamma", "with space"])
  input    = each.key
  triggers_replace = [terraform_data.shapes.id]
}

resource "terraform_data" "counted" {
  count      = 12
  input      = count.index
  depends_on = [terraform_data.keyed]
}

resource "terraform_data" "whole_secret" {
  input = sensitive({ a = 1, b = ["x"] })
}

resource "terraform_data" "empty" {}

module "child" {
  source = "./child"
  value  = "from root"
}

module "counted" {
  source = "./child/grandchild"
  count  = 11
}

module "many" {
  source   = "./child"
  for_each = { one = 1, two = 2 }
  value    = each.key
}

data "terraform_remote_state" "other" {
  backend = "local"
  config  = { path = "${path.module}/other.tfstate" }
}

output "text" { value = "plain <b>" }
output "secret" {
  value     = terraform_data.shapes.output
  sensitive = true
}
output "tuple" { value = [1, "a", true, null] }
output "map" { value = { for k, v in terraform_data.keyed : k => v.id } }
output "nothing" { value = null }
output "remote" { value = data.terraform_remote_state.other.outputs }
""",
    "child/main.tf": """
variable "value" {}
resource "terraform_data" "inner" { input = var.value }
module "grandchild" {
  source = "./grandchild"
}
output "out" { value = terraform_data.inner.output }
""",
    "child/grandchild/main.tf": """
resource "terraform_data" "deep" { input = ["deep", 1] }
""",
    "other.tfstate": """{
  "version": 4, "terraform_version": "1.11.4", "serial": 1,
  "lineage": "2a4d2ad2-7b2e-4a45-9b9e-1e0c8c6a3c11",
  "outputs": {"greeting": {"value": "hi", "type": "string"}},
  "resources": [], "check_results": null
}""",
}

NULL_MODULE = {
    "main.tf": """
terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}
resource "null_resource" "one" {
  triggers = { a = "1", b = "two" }
}
resource "null_resource" "many" {
  count    = 3
  triggers = { index = tostring(count.index), secret = sensitive("s${count.index}") }
}
output "ids" { value = null_resource.many[*].id }
""",
}


#: Negative zero in every place the differential test of issue 10 found it posted as ``0``:
#: terraform keeps the sign (``-0``) in plain values, sets, sensitive values, child modules,
#: outputs and ``terraform_remote_state`` defaults.
NEGATIVE_ZERO_MODULE = {
    "main.tf": """
variable "neg" { default = -1 }
variable "zero" { default = 0 }
resource "terraform_data" "zeros" {
  input = {
    literal  = -0.0
    product  = var.neg * 0
    negated  = -var.zero
    parsed   = tonumber("-0")
    smallest = min(-0.0, 0)
    decoded  = jsondecode("-0")
    positive = 0
    set      = toset([-0.0, 1])
    list     = [-0.0, 0, -0.0]
  }
}
resource "terraform_data" "secret_zero" { input = sensitive({ z = -0.0, l = [-0.0] }) }
module "child" {
  source = "./child"
  value  = -0.0
}
data "terraform_remote_state" "defaults" {
  backend  = "local"
  config   = { path = "${path.module}/empty.tfstate" }
  defaults = { zero = -0.0, nested = { z = [-0.0] } }
}
output "zero" { value = -0.0 }
output "secret" {
  value     = -0.0
  sensitive = true
}
output "remote" { value = data.terraform_remote_state.defaults.outputs }
""",
    "child/main.tf": """
variable "value" {}
resource "terraform_data" "inner" { input = [var.value, -var.value] }
output "out" { value = terraform_data.inner.output }
""",
    "empty.tfstate": """{
  "version": 4, "terraform_version": "1.11.4", "serial": 1,
  "lineage": "5b0c7a3e-3c55-4f0e-8d63-0c3f2d1e9a01",
  "outputs": {}, "resources": [], "check_results": null
}""",
}

#: What the renderer does not render (terraform does): a whole number past Python's 4,300-digit
#: limit. It must fall back, not fail. (Values nested past the recursion limit are the other such
#: case; ``tests/unit/test_state_json_edges.py`` covers them with a hand-made state, because
#: terraform itself needs minutes to plan and apply ~1,200 levels.)
UNRENDERABLE_MODULES = {
    "huge-integer": {"main.tf": 'resource "terraform_data" "big" { input = 1e5000 }\n'},
}


def terraform_env(home: Path, mirror: Path | None = None) -> dict[str, str]:
    config = home / "terraform.rc"
    if mirror is not None:
        config.write_text(
            f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n'
        )
    else:
        config.write_text("")
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
        "TF_INPUT": "0",
        "TF_CLI_CONFIG_FILE": str(config),
    }


def tf(directory: Path, env: dict[str, str], *args: str, check: bool = True) -> bytes:
    done = subprocess.run(["terraform", *args], cwd=directory, env=env, capture_output=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"terraform {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return done.stdout


def rendered(directory: Path, env: dict[str, str], cache: SchemaCache) -> bytes:
    state = load_state((directory / "terraform.tfstate").read_bytes())
    version = str(state["terraform_version"])
    versions = locked_versions(directory, version)
    providers = providers_in_state(state)
    if cache.missing(version, providers, versions):
        cache.store(version, tf(directory, env, "providers", "schema", "-json"), versions)
    return render_state_json(state, cache.lookup(version, providers, versions))


def assert_same_as_terraform(directory: Path, env: dict[str, str], cache: SchemaCache) -> bytes:
    ours = rendered(directory, env, cache)
    theirs = tf(directory, env, "show", "-json")
    assert ours == theirs, _first_difference(ours, theirs)
    return ours


def _first_difference(ours: bytes, theirs: bytes) -> str:
    for index, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            window = slice(max(0, index - 120), index + 120)
            return f"differ at byte {index}:\n ours:   {ours[window]!r}\n theirs: {theirs[window]!r}"
    return f"lengths differ: ours {len(ours)}, terraform {len(theirs)}"


def test_rich_state_renders_exactly_as_terraform_show(tmp_path: Path) -> None:
    module = write_module(tmp_path / "rich", RICH_MODULE)
    env = terraform_env(tmp_path)
    cache = SchemaCache(tmp_path / "schemas")
    tf(module, env, "init", "-input=false")
    tf(module, env, "apply", "-auto-approve", "-input=false")
    ours = assert_same_as_terraform(module, env, cache)
    # The cases above are really in the state (the comparison is not of two empty documents).
    for needle in (
        b'"index":"with space"',
        b'"index":11',
        b'"mode":"data"',
        b'"address":"module.many[\\"two\\"].module.grandchild"',
        b'"secret":true',
        b"12345678901234567890",
        b"\\u003c\\u0026\\u003e",
    ):
        assert needle in ours, needle

    # A tainted instance: a provisioner that fails on create.
    (module / "tainted.tf").write_text(
        'resource "terraform_data" "broken" {\n  provisioner "local-exec" {\n    command = "exit 3"\n  }\n}\n'
    )
    tf(module, env, "apply", "-auto-approve", "-input=false", check=False)
    ours = assert_same_as_terraform(module, env, cache)
    assert b'"tainted":true' in ours

    tf(module, env, "destroy", "-auto-approve", "-input=false")
    assert assert_same_as_terraform(module, env, cache) == b'{"format_version":"1.0"}\n'


def test_third_party_provider_state_renders_exactly(tmp_path: Path, tf_provider_mirror: Path) -> None:
    module = write_module(tmp_path / "null", NULL_MODULE)
    env = terraform_env(tmp_path, tf_provider_mirror)
    cache = SchemaCache(tmp_path / "schemas")
    tf(module, env, "init", "-input=false")
    tf(module, env, "apply", "-auto-approve", "-input=false")
    assert locked_versions(module, "1.11.4")["registry.terraform.io/hashicorp/null"] == "2.1.2"
    ours = assert_same_as_terraform(module, env, cache)
    assert b'"provider_name":"registry.terraform.io/hashicorp/null"' in ours
    assert list((tmp_path / "schemas").rglob("registry.terraform.io%2Fhashicorp%2Fnull@2.1.2.json"))


def test_handler_falls_back_then_renders_the_same_bytes(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub
) -> None:
    """A fresh tools dir: the first apply has no schema (terraform show -json, and the schemas are
    fetched alongside); the second renders; the control plane gets identical documents."""
    tools = tmp_path / "fresh-tools"
    module = write_module(tmp_path / "mod", data_module(2))
    sent: list[bytes] = []
    for attempt in range(2):
        workspace_id = tf_backend.add_workspace()
        plan = SandboxRunPlan.model_validate(
            {
                "local_archive": {"local_archive": str(module)},
                "terraform_backend": {"WorkspaceID": workspace_id},
                "vars": {"name": "same", "secret": "s3cr3t-value-42"},
            }
        )
        if attempt == 0:
            # The plan job is what normally fills the cache; leave it out so the apply has to.
            planned = tf_job(
                SandboxTerraformHandler, plan, operation="create-apply-plan", tools_dir=tmp_path / "other"
            )
        else:
            planned = tf_job(SandboxTerraformHandler, plan, operation="create-apply-plan", tools_dir=tools)
        planned.run_sync()
        assert planned.ctx.result is not None
        raw = base64.urlsafe_b64decode(planned.ctx.result.contents_compressed or "")
        apply = plan.model_copy(update={"apply_plan_contents": base64.b64encode(raw).decode()})
        applied = tf_job(SandboxTerraformHandler, apply, operation="apply-plan", tools_dir=tools)
        applied.run_sync()
        messages = [record.message for record in applied.log.records]
        if attempt == 0:
            assert "state JSON from terraform show -json" in messages
            assert "provider schemas cached" in messages
        else:
            assert "state JSON rendered from the applied state" in messages
            assert not any("terraform show -json" in m or m.endswith(" show -json") for m in messages)
        assert "terraform init skipped: what the saved plan needs is in place" in messages
        sent.append(tf_backend.state.state_json[workspace_id])
    # Same module and vars; only the generated ids differ between the two workspaces.
    first, second = (json.loads(document) for document in sent)
    assert first.keys() == second.keys()
    ids = [str(r["values"]["id"]) for r in first["values"]["root_module"]["resources"]]
    ids += [str(r["values"]["id"]) for r in second["values"]["root_module"]["resources"]]
    strip = list(sent)
    for value in ids:
        strip = [document.replace(value.encode(), b"ID") for document in strip]
    assert strip[0] == strip[1]


def test_shortcuts_off_runs_init_and_terraform_show(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub
) -> None:
    module = write_module(tmp_path / "mod", data_module(1))
    workspace_id = tf_backend.add_workspace()
    plan = SandboxRunPlan.model_validate(
        {"local_archive": {"local_archive": str(module)}, "terraform_backend": {"WorkspaceID": workspace_id}}
    )
    planned = tf_job(SandboxTerraformHandler, plan, operation="create-apply-plan", terraform_shortcuts=False)
    planned.run_sync()
    assert not any(m == "provider schemas cached" for m in planned.log.messages())
    assert planned.ctx.result is not None
    raw = base64.urlsafe_b64decode(planned.ctx.result.contents_compressed or "")
    apply = plan.model_copy(update={"apply_plan_contents": base64.b64encode(raw).decode()})
    applied = tf_job(SandboxTerraformHandler, apply, operation="apply-plan", terraform_shortcuts=False)
    applied.run_sync()
    commands = [m for m in applied.log.messages() if m.startswith("$ ")]
    assert [c.split()[2] for c in commands] == ["init", "apply", "show"]
    assert json.loads(tf_backend.state.state_json[workspace_id])["values"]["outputs"]["count"]["value"] == 1


def test_negative_zero_renders_exactly_as_terraform_show(tmp_path: Path) -> None:
    module = write_module(tmp_path / "zeros", NEGATIVE_ZERO_MODULE)
    env = terraform_env(tmp_path)
    cache = SchemaCache(tmp_path / "schemas")
    tf(module, env, "init", "-input=false")
    tf(module, env, "apply", "-auto-approve", "-input=false")
    ours = assert_same_as_terraform(module, env, cache)
    for needle in (
        b'"literal":-0',
        b'"product":-0',
        b'"negated":-0',
        b'"parsed":-0',
        b'"smallest":-0',
        b'"decoded":-0',
        b'"positive":0',
        b'"list":[-0,0,-0]',
        b'"address":"module.child"',
        b'"zero":-0',
    ):
        assert needle in ours, needle


@pytest.mark.parametrize("name", sorted(UNRENDERABLE_MODULES))
def test_unrenderable_states_fall_back_to_terraform_show(tmp_path: Path, name: str) -> None:
    """The renderer says "cannot render" (not ValueError/RecursionError, which skipped state-json
    altogether), and what the handler then sends is terraform's own document."""
    module = write_module(tmp_path / name, UNRENDERABLE_MODULES[name])
    env = terraform_env(tmp_path)
    cache = SchemaCache(tmp_path / "schemas")
    tf(module, env, "init", "-input=false")
    tf(module, env, "apply", "-auto-approve", "-input=false")
    raw = (module / "terraform.tfstate").read_bytes()
    with pytest.raises(CannotRender):
        rendered(module, env, cache)
    attempt = try_render(raw, cache, module)
    assert attempt.rendered is None
    assert attempt.reason
    shown = json.loads(tf(module, env, "show", "-json"), parse_int=str)
    assert shown["format_version"] == "1.0"
