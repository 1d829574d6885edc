"""The terraform handlers against real terraform and a loopback backend.

Each test drives a handler the way the executor does (prepare, execute, cleanup) with the
runner's real process runner and redactor; the backend is the stand-in of
``tests.support.terraform`` (the full cycle through the real control plane and a runner process
is in ``test_full_cycle.py``).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from handlers.terraform.binary import platform_suffix
from handlers.terraform.cli import TerraformFailed
from handlers.terraform.install import install_without_init
from handlers.terraform.planfile import BadPlanFile, parse_plan_file
from handlers.terraform.sandbox import SandboxTerraformHandler
from handlers.terraform.workspace import InvalidInput
from runner.api.plans import SandboxRunPlan
from tests.support.terraform import (
    BackendStub,
    GitServer,
    JobFactory,
    TfJob,
    data_module,
    proc_cmdlines,
    proc_environ,
    write_module,
)

pytestmark = [pytest.mark.terraform, pytest.mark.usefixtures("terraform_bin")]


def sandbox_plan(module: Path, workspace_id: str, **extra: Any) -> SandboxRunPlan:
    return SandboxRunPlan.model_validate(
        {"local_archive": {"local_archive": str(module)}, "terraform_backend": {"WorkspaceID": workspace_id}}
        | extra
    )


def apply_plan_from(plan: SandboxRunPlan, job: TfJob) -> SandboxRunPlan:
    """What the control plane does: contents_gzip = b64url-decode(contents_compressed), then
    apply_plan_contents = base64std(contents_gzip) (docs/runner-api.md §4.5)."""
    result = job.ctx.result
    assert result is not None
    assert result.contents_compressed
    stored = base64.urlsafe_b64decode(result.contents_compressed)
    return plan.model_copy(update={"apply_plan_contents": base64.b64encode(stored).decode()})


def display_of(job: TfJob) -> dict[str, Any]:
    result = job.ctx.result
    assert result is not None
    assert result.contents_display_compressed
    return dict(json.loads(gzip.decompress(base64.urlsafe_b64decode(result.contents_display_compressed))))


def run(tf_job: JobFactory, plan: SandboxRunPlan, operation: str, **kwargs: Any) -> TfJob:
    job = tf_job(SandboxTerraformHandler, plan, operation=operation, **kwargs)
    job.run_sync()
    return job


def backend_calls(stub: BackendStub, workspace_id: str) -> list[tuple[str, str]]:
    return [
        (r.method, r.path)
        for r in stub.state.requests
        if workspace_id in r.path or workspace_id in r.query.get("workspace_id", [])
    ]


# --------------------------------------------------------------------------- the cycle


def test_plan_apply_teardown_cycle(tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub) -> None:
    ws = tf_backend.add_workspace()
    module = write_module(tmp_path / "mod", data_module(3))
    plan = sandbox_plan(module, ws, vars={"name": "cycle", "secret": "s3cr3t-value-42", "undeclared": 1})

    planned = run(tf_job, plan, "create-apply-plan")
    result = planned.ctx.result
    assert result is not None
    assert result.success
    raw = base64.urlsafe_b64decode(result.contents_compressed or "")
    assert "tfplan" in zipfile.ZipFile(io.BytesIO(raw)).namelist(), "the raw plan file, not re-gzipped"
    changes = display_of(planned)["resource_changes"]
    assert [c["change"]["actions"] for c in changes] == [["create"]] * 3
    assert tf_backend.resources(ws) == [], "a plan applies nothing"
    assert planned.ctx.outputs == {}
    # -json UI lines become records at terraform's level, with the message type.
    planned_changes = [r for r in planned.log.records if r.attrs.get("tf_type") == "planned_change"]
    assert len(planned_changes) == 3
    assert all(r.level == "info" for r in planned_changes)
    warnings = [r for r in planned.log.records if r.attrs.get("tf_type") == "diagnostic"]
    assert any(r.level == "warning" and "undeclared" in (r.message + str(r.attrs)) for r in warnings)

    applied = run(tf_job, apply_plan_from(plan, planned), "apply-plan")
    assert applied.ctx.outputs == {
        "names": ["cycle-0", "cycle-1", "cycle-2"],
        "count": 3,
        "secret_echo": "echo-s3cr3t-value-42",
    }
    assert "echo-s3cr3t-value-42" not in applied.log.text(), "sensitive outputs are masked in logs"
    (resource,) = tf_backend.resources(ws)
    assert len(resource["instances"]) == 3
    state_json = json.loads(tf_backend.state.state_json[ws])
    assert len(state_json["values"]["root_module"]["resources"]) == 3
    assert ws not in tf_backend.state.locks, "the lock is released"

    teardown = run(tf_job, plan, "create-teardown-plan")
    assert [c["change"]["actions"] for c in display_of(teardown)["resource_changes"]] == [["delete"]] * 3
    teardown_plan = apply_plan_from(plan, teardown)
    assert parse_plan_file(base64.b64decode(teardown_plan.apply_plan_contents)).is_destroy
    destroyed = run(tf_job, teardown_plan, "apply-plan")
    assert tf_backend.resources(ws) == []
    assert "resources" not in json.loads(tf_backend.state.state_json[ws]).get("values", {}).get(
        "root_module", {}
    )
    assert destroyed.ctx.outputs == {}

    calls = [r for r in tf_backend.state.requests if ws in r.path or ws in r.query.get("workspace_id", [])]
    assert calls
    assert all(r.headers.get("authorization") == f"Bearer {tf_backend.token}" for r in calls)
    assert all("token" not in r.query for r in calls)
    job_ids = {r.query.get("job_id", [""])[0] for r in calls}
    assert {planned.ctx.job.id, applied.ctx.job.id, teardown.ctx.job.id, destroyed.ctx.job.id} <= job_ids


def test_a_second_run_on_a_locked_workspace_reports_the_holder(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub
) -> None:
    ws = tf_backend.add_workspace()
    holder = {"ID": "other-holder-4242", "Operation": "OperationTypeApply", "Who": "someone@elsewhere"}
    tf_backend.state.locks[ws] = holder
    module = write_module(tmp_path / "mod", data_module(1))
    with pytest.raises(TerraformFailed) as info:
        run(tf_job, sandbox_plan(module, ws), "create-apply-plan")
    assert "other-holder-4242" in str(info.value)
    assert "lock" in str(info.value).lower()
    assert tf_backend.state.locks[ws] == holder, "someone else's lock is never released"


# --------------------------------------------------------------------------- hooks and policies

HOOKED_MODULE = {
    "main.tf": """
variable "kyverno_policy_dir" {
  type = string
}

resource "terraform_data" "x" {
  input = "hooked"
  provisioner "local-exec" {
    command = "cp pre-apply-marker.txt provisioner-saw.txt"
  }
}

output "policies" {
  value = sort(fileset(var.kyverno_policy_dir, "*.yaml"))
}

output "first_policy" {
  value = file("${var.kyverno_policy_dir}/0.yaml")
}
""",
    "pre-apply.sh": """#!/bin/sh
echo "pre-apply stdout $HOOK_GREETING"
echo "pre-apply stderr line" >&2
echo "$HOOK_GREETING" > pre-apply-marker.txt
env > hook-env.txt
""",
    "post-apply.sh": "#!/bin/sh\necho post-apply ran\ntest -f provisioner-saw.txt\n",
    "error-apply.sh": "#!/bin/sh\necho error-apply ran\n",
    "pre-destroy.sh": "#!/bin/sh\necho pre-destroy ran\n",
    "post-destroy.sh": "#!/bin/sh\necho post-destroy ran >&2\n",
}


def test_hooks_and_policies_are_visible_to_the_module(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub
) -> None:
    ws = tf_backend.add_workspace()
    module = write_module(tmp_path / "mod", HOOKED_MODULE)
    plan = sandbox_plan(
        module,
        ws,
        hooks={"Enabled": True, "EnvVars": {"HOOK_GREETING": "hello-from-plan"}},
        policies={
            "0.yaml": "kind: ClusterPolicy\nname: zero\n",
            "1.yaml": "kind: ClusterPolicy\nname: one\n",
        },
    )
    planned = run(tf_job, plan, "create-apply-plan")
    assert not [m for m in planned.log.messages() if "running hook" in m], "no hooks around plans"

    applied = run(tf_job, apply_plan_from(plan, planned), "apply-plan")
    messages = applied.log.messages()
    assert "pre-apply stdout hello-from-plan" in messages
    assert "pre-apply stderr line" in messages, "hook stderr reaches the job log"
    assert "post-apply ran" in messages
    assert "error-apply ran" not in messages
    module_dir = applied.ctx.workspace / "source"
    assert (module_dir / "provisioner-saw.txt").read_text().strip() == "hello-from-plan"
    hook_env = (module_dir / "hook-env.txt").read_text()
    assert "HOOK_GREETING=hello-from-plan" in hook_env
    assert tf_backend.token not in hook_env
    assert "TF_HTTP_ADDRESS" not in hook_env
    assert applied.ctx.outputs is not None
    assert applied.ctx.outputs["policies"] == ["0.yaml", "1.yaml"]
    assert applied.ctx.outputs["first_policy"] == "kind: ClusterPolicy\nname: zero\n"

    teardown = run(tf_job, plan, "create-teardown-plan")
    destroyed = run(tf_job, apply_plan_from(plan, teardown), "apply-plan")
    messages = destroyed.log.messages()
    assert "pre-destroy ran" in messages
    assert "post-destroy ran" in messages
    assert not [m for m in messages if "apply ran" in m or "pre-apply" in m]


def test_failed_apply_runs_the_error_hook_and_reports_terraform_errors(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub
) -> None:
    ws = tf_backend.add_workspace()
    module = write_module(
        tmp_path / "mod",
        {
            "main.tf": """
resource "terraform_data" "broken" {
  provisioner "local-exec" {
    command = "echo provisioner-going-down >&2; exit 3"
  }
}
""",
            "error-apply.sh": "#!/bin/sh\necho error-apply ran\n",
            "post-apply.sh": "#!/bin/sh\necho post-apply ran\n",
        },
    )
    plan = sandbox_plan(module, ws, hooks={"Enabled": True})
    planned = run(tf_job, plan, "create-apply-plan")
    job = tf_job(SandboxTerraformHandler, apply_plan_from(plan, planned), operation="apply-plan")
    with pytest.raises(TerraformFailed) as info:
        job.run_sync()
    message = str(info.value)
    assert message.startswith("terraform apply failed (exit code 1): ")
    assert "local-exec provisioner error" in message
    assert "exit status 3" in message
    assert info.value.details["terraform_command"] == "apply"
    assert "error-apply ran" in job.log.messages()
    assert "post-apply ran" not in job.log.messages()
    assert ws not in tf_backend.state.locks


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("case", "operation", "extra", "error", "match"),
    [
        ("no-workspace", "create-apply-plan", {"terraform_backend": None}, InvalidInput, "WorkspaceID"),
        ("bad-json-vars", "create-apply-plan", {"vars_files": ['{"a": ']}, InvalidInput, r"vars_files\[0\]"),
        (
            "bad-hcl-vars",
            "create-apply-plan",
            {"vars_files": ["name = = ="]},
            TerraformFailed,
            "vars_files-0",
        ),
        (
            "not-a-plan",
            "apply-plan",
            {"apply_plan_contents": "bm90IGEgcGxhbg=="},
            BadPlanFile,
            "not a terraform",
        ),
        ("empty-plan", "apply-plan", {"apply_plan_contents": ""}, BadPlanFile, "empty"),
        ("unknown-op", "destroy-everything", {}, InvalidInput, "unsupported operation"),
    ],
)
def test_bad_input_fails_clearly_and_applies_nothing(
    tmp_path: Path,
    tf_job: JobFactory,
    tf_backend: BackendStub,
    case: str,
    operation: str,
    extra: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    ws = tf_backend.add_workspace()
    module = write_module(tmp_path / case, data_module(1))
    plan = sandbox_plan(module, ws)
    plan = SandboxRunPlan.model_validate(plan.to_wire() | extra)
    with pytest.raises(error, match=match):
        run(tf_job, plan, operation)
    calls = backend_calls(tf_backend, ws)
    assert ("POST", "/v1/terraform-backend") not in calls, "nothing was applied"
    assert not [c for c in calls if c[1].endswith("/lock")] or case == "bad-hcl-vars"


# --------------------------------------------------------------------------- providers, backends


def test_null_provider_from_a_filesystem_mirror_through_the_shared_cache(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub, tf_provider_mirror: Path
) -> None:
    ws = tf_backend.add_workspace()
    module = write_module(
        tmp_path / "mod",
        {
            "main.tf": """
terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}

resource "null_resource" "n" {
  triggers = {
    at = "mirror"
  }
}

output "id_set" {
  value = null_resource.n.id != ""
}
"""
        },
    )
    tools = tmp_path / "tools"
    plan = sandbox_plan(module, ws)
    planned = run(
        tf_job, plan, "create-apply-plan", terraform_provider_mirror=tf_provider_mirror, tools_dir=tools
    )
    assert any("hashicorp/null" in m and "2.1.2" in m for m in planned.log.messages())
    applied = run(
        tf_job,
        apply_plan_from(plan, planned),
        "apply-plan",
        terraform_provider_mirror=tf_provider_mirror,
        tools_dir=tools,
    )
    assert applied.ctx.outputs == {"id_set": True}
    assert [r["type"] for r in tf_backend.resources(ws)] == ["null_resource"]
    cached = tools / "terraform" / "plugin-cache" / "registry.terraform.io" / "hashicorp" / "null" / "2.1.2"
    assert cached.is_dir(), "providers land in the one shared plugin cache"
    # The apply job links the plan's providers from that cache instead of running init.
    skipped = [r for r in applied.log.records if r.message.startswith("terraform init skipped")]
    assert skipped, applied.log.messages()
    assert skipped[0].attrs["providers"] == "registry.terraform.io/hashicorp/null 2.1.2"
    assert not any(" init " in m for m in applied.log.messages() if m.startswith("$ "))
    assert "state JSON rendered from the applied state" in applied.log.messages()


def test_providers_refused_after_linking_are_installed_by_init_and_applied(
    tmp_path: Path,
    tf_job: JobFactory,
    tf_backend: BackendStub,
    tf_provider_mirror: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A linked package terraform refuses (its checksum does not match the lock file) fails
    before the state is touched; the job then runs init and applies."""
    from handlers.terraform import operations

    ws = tf_backend.add_workspace()
    module = write_module(
        tmp_path / "mod",
        {
            "main.tf": "terraform {\n  required_providers {\n"
            '    null = { source = "hashicorp/null", version = "2.1.2" }\n'
            '  }\n}\nresource "null_resource" "n" {}\n'
        },
    )
    tools = tmp_path / "tools"
    plan = sandbox_plan(module, ws)
    planned = run(
        tf_job, plan, "create-apply-plan", terraform_provider_mirror=tf_provider_mirror, tools_dir=tools
    )
    bogus = tmp_path / "bogus-cache"
    package = bogus / "registry.terraform.io/hashicorp/null/2.1.2" / platform_suffix()
    package.mkdir(parents=True)
    (package / "terraform-provider-null_v2.1.2_x4").write_bytes(b"#!/bin/sh\nexit 1\n")
    real = install_without_init
    monkeypatch.setattr(
        operations,
        "install_without_init",
        lambda module_dir, needs, _cache, platform: real(module_dir, needs, bogus, platform),
    )
    applied = run(
        tf_job,
        apply_plan_from(plan, planned),
        "apply-plan",
        terraform_provider_mirror=tf_provider_mirror,
        tools_dir=tools,
    )
    messages = applied.log.messages()
    assert any(m.startswith("terraform init skipped") for m in messages)
    assert "the linked providers were refused; running init and applying again" in messages
    assert [r["type"] for r in tf_backend.resources(ws)] == ["null_resource"]


def test_local_child_modules_apply_without_init(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub
) -> None:
    """The plan file carries the configuration; a local module's other files (a script its
    provisioner runs) come with the fetched module."""
    ws = tf_backend.add_workspace()
    module = write_module(
        tmp_path / "mod",
        {
            "main.tf": 'module "child" {\n  source = "./child"\n}\n'
            'output "said" { value = module.child.said }\n',
            "child/main.tf": 'resource "terraform_data" "run" {\n'
            '  input = "hello"\n'
            '  provisioner "local-exec" {\n    command = "sh ${path.module}/say.sh"\n  }\n}\n'
            'output "said" { value = terraform_data.run.output }\n',
            "child/say.sh": "echo said-by-the-child-script\n",
        },
    )
    plan = sandbox_plan(module, ws)
    planned = run(tf_job, plan, "create-apply-plan")
    applied = run(tf_job, apply_plan_from(plan, planned), "apply-plan")
    assert any(m.startswith("terraform init skipped") for m in applied.log.messages())
    assert applied.ctx.outputs == {"said": "hello"}
    assert "said-by-the-child-script" in applied.log.text()


def test_a_module_backend_is_overridden_with_a_warning(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub
) -> None:
    ws = tf_backend.add_workspace()
    files = data_module(1)
    files["backend.tf"] = 'terraform {\n  backend "s3" {\n    bucket = "somewhere-else"\n  }\n}\n'
    files["terraform.tfstate"] = '{"version": 4}'
    module = write_module(tmp_path / "mod", files)
    plan = sandbox_plan(module, ws)
    planned = run(tf_job, plan, "create-apply-plan")
    assert any("declares its own backend" in m for m in planned.log.messages("warning"))
    assert any("local state" in m for m in planned.log.messages("warning"))
    run(tf_job, apply_plan_from(plan, planned), "apply-plan")
    assert len(tf_backend.resources(ws)) == 1


# --------------------------------------------------------------------------- token and cancel

SLOW_MODULE = {
    "main.tf": """
variable "seconds" {
  type = number
}

resource "terraform_data" "slow" {
  input = "slow"
  provisioner "local-exec" {
    command = "touch started && sleep ${var.seconds}"
  }
}
"""
}


def _processes_under(workspace: Path) -> list[int]:
    """Live processes running from inside ``workspace`` (cwd) or naming it in argv."""
    found = []
    for pid, cmdline in proc_cmdlines().items():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd.startswith(str(workspace)) or str(workspace) in cmdline):
            found.append(pid)
    return found


def test_the_token_never_reaches_argv_env_files_or_logs(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub
) -> None:
    ws = tf_backend.add_workspace()
    module = write_module(tmp_path / "mod", SLOW_MODULE)
    plan = sandbox_plan(module, ws, vars={"seconds": 2})
    planned = run(tf_job, plan, "create-apply-plan", register_token=False)
    job = tf_job(
        SandboxTerraformHandler, apply_plan_from(plan, planned), operation="apply-plan", register_token=False
    )
    token = tf_backend.token
    seen: dict[str, int] = {"processes": 0}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.run)
            started = job.ctx.workspace / "source" / "started"
            with anyio.fail_after(30):
                while not started.exists():
                    await anyio.sleep(0.05)
            for pid in _processes_under(job.ctx.workspace):
                seen["processes"] += 1
                assert token not in proc_cmdlines().get(pid, ""), "token in argv"
                assert token not in proc_environ(pid), "token in a child's environment"

    anyio.run(main)
    assert seen["processes"] >= 2, "terraform and its provisioner were inspected while running"
    assert token not in job.log.text()
    assert token not in planned.log.text()
    for path in [*job.ctx.workspace.rglob("*"), *planned.ctx.workspace.rglob("*")]:
        if path.is_file() and not path.is_symlink():
            assert token.encode() not in path.read_bytes(), f"token written to {path}"
    raw_plan = base64.b64decode(apply_plan_from(plan, planned).apply_plan_contents)
    assert token.encode() not in raw_plan, "the stored plan file holds no token"


@pytest.mark.parametrize("grace", [5.0, 0.0], ids=["graceful", "killed"])
def test_cancel_during_local_exec_leaves_no_process_and_no_lock(
    tmp_path: Path, tf_job: JobFactory, tf_backend: BackendStub, grace: float
) -> None:
    ws = tf_backend.add_workspace()
    module = write_module(tmp_path / "mod", SLOW_MODULE)
    plan = sandbox_plan(module, ws, vars={"seconds": 120})
    planned = run(tf_job, plan, "create-apply-plan")
    job = tf_job(
        SandboxTerraformHandler, apply_plan_from(plan, planned), operation="apply-plan", child_grace=grace
    )

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.run)
            started = job.ctx.workspace / "source" / "started"
            with anyio.fail_after(30):
                while not started.exists():
                    await anyio.sleep(0.05)
            assert ws in tf_backend.state.locks, "terraform holds the lock while applying"
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert _processes_under(job.ctx.workspace) == [], "no terraform (or provisioner) process left"
    assert job.processes.live_pids == frozenset()
    assert ws not in tf_backend.state.locks, "the workspace is unlocked"
    released = [m for m in job.log.messages("warning") if "released the state lock" in m]
    if grace == 0.0:
        assert released, "terraform was killed holding the lock: the runner released its own lock ID"
    else:
        assert not released, "terraform released its lock itself during the grace period"


def test_sandbox_from_a_git_source(
    tf_job: JobFactory, tf_backend: BackendStub, git_server: GitServer
) -> None:
    files = {f"sandbox/{name}": text for name, text in data_module(1).items()}
    url = git_server.create("sandbox-repo", files)
    ws = tf_backend.add_workspace()
    plan = SandboxRunPlan.model_validate(
        {
            "git_source": {"url": url, "ref": "main", "path": "sandbox"},
            "terraform_backend": {"WorkspaceID": ws},
        }
    )
    planned = run(tf_job, plan, "create-apply-plan")
    applied = run(tf_job, apply_plan_from(plan, planned), "apply-plan")
    assert applied.ctx.outputs is not None
    assert applied.ctx.outputs["names"] == ["demo-0"]
    assert any("sandbox module ready" in m for m in applied.log.messages())
