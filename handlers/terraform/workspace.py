"""Laying out a terraform run inside the job's workspace.

``<workspace>/module`` (deploy) or ``<workspace>/source/<path>`` (sandbox) holds the module;
``<workspace>/.runner`` (0700) holds what the runner adds: variable files, the CLI config, the
kubeconfig and the plan file (all 0600). The module gets two things of ours:
``runner_backend_override.tf``, which forces ``backend "http" {}`` (an override file replaces a
``backend`` or ``cloud`` block the module declares, with a warning, and adds one if it has none),
and, when the plan carries policies, ``.runner-policies/`` passed as ``kyverno_policy_dir``. That
path is relative to the module directory on purpose: a saved plan records variable values, so
the apply job must find the policies at the same path the plan job used.

Variables: plan ``vars`` become ``plan-vars.tfvars.json``; each ``vars_files`` entry is JSON
when it looks like JSON (and then it must parse) and HCL otherwise, and is named after its index
so terraform's own error points back at the plan (``vars_files-1.tfvars``). They are passed with
``-var-file`` to ``plan`` only: an apply of a saved plan takes its variables from the plan.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handlers.common import kubeconfig as kube
from runner.sdk import ErrorCode, HandlerError, JobLog
from runner.sdk.plans import (
    AWSAuth,
    AzureAuth,
    ClusterInfo,
    DeployPlan,
    SandboxRunPlan,
    TerraformHooks,
)

BACKEND_OVERRIDE_NAME = "runner_backend_override.tf"
BACKEND_OVERRIDE = (
    "# Written by byoc-runner: the state lives in the runner API (HTTP backend).\n"
    'terraform {\n  backend "http" {}\n}\n'
)
POLICY_DIR_VAR = "kyverno_policy_dir"
#: Where policies go, relative to the module directory (the value of ``kyverno_policy_dir``).
POLICY_DIR_NAME = ".runner-policies"
_BACKEND_RE = re.compile(r"^\s*(backend\s+\"[^\"]+\"|cloud)\s*\{", re.MULTILINE)
_LEFTOVERS = ("terraform.tfstate", "terraform.tfstate.backup", ".terraform.tfstate.lock.info")


class InvalidInput(HandlerError):
    """The plan asks for something that cannot run (bad var file, missing workspace id...)."""

    code = ErrorCode.INVALID_PLAN


@dataclass
class TerraformInputs:
    """The parts of a DeployPlan or SandboxRunPlan that shape a terraform run."""

    workspace_id: str
    vars: dict[str, Any] = field(default_factory=dict)
    vars_files: list[str] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)
    aws_auth: AWSAuth | None = None
    azure_auth: AzureAuth | None = None
    cluster_info: ClusterInfo | None = None
    hooks: TerraformHooks | None = None
    policies: dict[str, str] = field(default_factory=dict)
    apply_plan_contents: str = ""
    terraform_version: str = ""

    @classmethod
    def from_deploy(cls, plan: DeployPlan) -> TerraformInputs:
        tf = plan.terraform
        if tf is None:
            raise InvalidInput("the deploy plan has no 'terraform' section")
        return cls(
            workspace_id=tf.terraform_backend.workspace_id if tf.terraform_backend else "",
            vars=dict(tf.vars or {}),
            vars_files=list(tf.vars_files or []),
            env_vars=dict(tf.env_vars or {}),
            aws_auth=tf.aws_auth,
            azure_auth=tf.azure_auth,
            cluster_info=tf.cluster_info,
            hooks=tf.hooks,
            policies=dict(tf.policies or {}),
            apply_plan_contents=plan.apply_plan_contents,
            terraform_version=tf.terraform_version,
        )

    @classmethod
    def from_sandbox(cls, plan: SandboxRunPlan) -> TerraformInputs:
        return cls(
            workspace_id=plan.terraform_backend.workspace_id if plan.terraform_backend else "",
            vars=dict(plan.vars or {}),
            vars_files=list(plan.vars_files or []),
            env_vars=dict(plan.env_vars or {}),
            aws_auth=plan.aws_auth,
            azure_auth=plan.azure_auth,
            cluster_info=None,
            hooks=plan.hooks,
            policies=dict(plan.policies or {}),
            apply_plan_contents=plan.apply_plan_contents,
            terraform_version=plan.terraform_version,
        )


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` readable by the runner's user only (0600 from creation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


# --------------------------------------------------------------------------- the module


def declared_backends(module_dir: Path) -> list[str]:
    """Files of the root module that declare a ``backend`` or ``cloud`` block."""
    found: list[str] = []
    for path in sorted(module_dir.glob("*.tf")):
        if path.name == BACKEND_OVERRIDE_NAME:
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if _BACKEND_RE.search(text):
            found.append(path.name)
    for path in sorted(module_dir.glob("*.tf.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        blocks = data.get("terraform") if isinstance(data, dict) else None
        items = blocks if isinstance(blocks, list) else [blocks]
        if any(isinstance(b, dict) and ("backend" in b or "cloud" in b) for b in items):
            found.append(path.name)
    return found


def prepare_module(module_dir: Path, log: JobLog) -> None:
    """Drop local state and ``.terraform`` left in the module; force the HTTP backend."""
    if not any(module_dir.glob("*.tf")) and not any(module_dir.glob("*.tf.json")):
        raise InvalidInput(f"no terraform files (*.tf) in the module directory {module_dir.name}")
    stale = module_dir / ".terraform"
    if stale.exists():
        log.warning("removing a .terraform directory shipped with the module")
        shutil.rmtree(stale, ignore_errors=True)
    for name in _LEFTOVERS:
        leftover = module_dir / name
        if leftover.exists():
            log.warning("removing local state shipped with the module", file=name)
            leftover.unlink()
    declared = declared_backends(module_dir)
    if declared:
        log.warning(
            "the module declares its own backend; the runner overrides it with the HTTP backend",
            files=", ".join(declared),
        )
    (module_dir / BACKEND_OVERRIDE_NAME).write_text(BACKEND_OVERRIDE)


# --------------------------------------------------------------------------- variables


def write_var_files(directory: Path, variables: dict[str, Any], vars_files: list[str]) -> list[Path]:
    """Write plan vars and vars_files; return them in precedence order (later wins)."""
    written: list[Path] = []
    if variables:
        written.append(write_private(directory / "plan-vars.tfvars.json", json.dumps(variables, indent=2)))
    for index, content in enumerate(vars_files):
        text = content or ""
        if text.lstrip().startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(
                    f"vars_files[{index}] looks like JSON but does not parse: {exc}", vars_file=index
                ) from exc
            if not isinstance(parsed, dict):  # pragma: no cover - "{..." parses to an object or fails
                raise InvalidInput(f"vars_files[{index}] must be a JSON object", vars_file=index)
            written.append(write_private(directory / f"vars_files-{index}.tfvars.json", text))
        else:
            written.append(write_private(directory / f"vars_files-{index}.tfvars", text))
    return written


def write_policies(directory: Path, policies: dict[str, str]) -> Path:
    """One file per policy, named as in the plan (names must be plain file names)."""
    if directory.exists():
        shutil.rmtree(directory)
    private_dir(directory)
    for name, content in sorted(policies.items()):
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise InvalidInput(f"policy name {name!r} is not a plain file name")
        write_private(directory / name, content)
    return directory


# --------------------------------------------------------------------------- kubeconfig


def kubeconfig_for(cluster: ClusterInfo, aws_env_vars: dict[str, str] | None = None) -> str:
    """A kubeconfig for ``cluster_info``, built by ``handlers.common.kubeconfig``: the plan's own,
    or endpoint + CA and, for EKS, an exec entry that runs ``python -m handlers.common.eks``
    with the runner's own interpreter, so that terraform's kubernetes and helm providers get a
    fresh token whenever they need one (a run outlives a token's 15 minutes). It is not
    ``aws eks get-token``: the runner image has no AWS CLI, and the token is the same. The entry
    carries ``aws_env_vars``, the ``AWS_*`` of the cluster's own identity, so its tokens are made
    as that identity and not as the module's."""
    if cluster.kube_config.strip():
        return cluster.kube_config
    user: dict[str, Any] = {}
    if cluster.aws_auth is not None:
        region = kube.eks_region(cluster) or (aws_env_vars or {}).get("AWS_REGION", "")
        user = kube.eks_exec_user(cluster.id or "cluster", region, aws_env_vars, mode="exec-runner")
    return kube.render_kubeconfig(kube.cluster_kubeconfig(cluster, user))


def write_kubeconfig(path: Path, cluster: ClusterInfo, aws_env_vars: dict[str, str] | None = None) -> Path:
    return kube.write_kubeconfig(kubeconfig_for(cluster, aws_env_vars), path.parent, path.name)
