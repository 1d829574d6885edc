"""A local action workflow file: what ``runner exec --workflow`` and ``runner jobs submit
--workflow`` turn into the control plane's action config and run, and the job's plan.

A vendor debugging an action on a laptop has no app sync, no triggers and no planner. The file
holds what they would configure (the contract's field names: the config's ``timeout`` and
``steps[]``, the run's ``run_env_vars``), and this module plays the real control plane's part:
the config and the run are created through the operator routes (docs/runner-api.md §11), and
the plan is built the way the real planner builds an ``ActionWorkflowRunPlan`` (docs/runner-api.md
§9.6), except that nothing is interpolated (there is no install state to render from).

```yaml
name: smoke-test          # optional, the plan's attrs action.name
install_id: local         # optional
timeout: 10m              # the workflow; 0 or absent: the job's deadline
run_env_vars: {GREETING: hello}
builtin_env_vars: {}      # optional plan fields: builtin_env_vars, override_env_vars,
override_env_vars: {}     #   cluster_info, aws_auth, azure_auth, sandbox_mode
steps:
  - name: check
    inline_contents: |    # or command: ./scripts/check.sh --fast
      echo "ok=true" >> "$NUON_ACTIONS_OUTPUT_FILEPATH"
    env_vars: {MODE: fast}
    timeout: 30s          # ours, optional
    git_source: {url: https://github.com/acme/ops.git, ref: main, path: scripts, recurse_submodules: false}
```

Durations are a number of seconds or a Go duration (``90s``, ``1m30s``, ``500ms``).
Data in, data out: the callers make the three calls (config, run, job).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NS = 1_000_000_000
JOB_TYPE = "actions-workflow"
#: The reference's execution timeout of an action job: the workflow's timeout plus a minute.
EXTRA_JOB_NS = 60 * NS
_PLAN_KEYS = (
    "builtin_env_vars",
    "override_env_vars",
    "cluster_info",
    "aws_auth",
    "azure_auth",
    "sandbox_mode",
)
_TOP_KEYS = frozenset({"name", "install_id", "timeout", "run_env_vars", "steps", *_PLAN_KEYS})
_STEP_KEYS = frozenset({"name", "command", "inline_contents", "env_vars", "timeout", "git_source"})
_GIT_KEYS = frozenset({"url", "ref", "path", "recurse_submodules"})
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": NS, "m": 60 * NS, "h": 3600 * NS}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class WorkflowFileError(ValueError):
    """A workflow file that cannot be used; the message names the field."""


def parse_duration(value: Any, what: str) -> int:
    """Nanoseconds of ``value``: a number of seconds or a Go duration string."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise WorkflowFileError(f"{what}: a duration, not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d*)?", text):
            seconds = float(text)
        else:
            pos, total = 0, 0.0
            for match in _DURATION_RE.finditer(text):
                if match.start() != pos:
                    break
                total += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise WorkflowFileError(f"{what}: {value!r} is not a duration (e.g. 90, 90s, 1m30s)")
            return int(total)
    else:
        raise WorkflowFileError(f"{what}: a duration, not {type(value).__name__}")
    if seconds < 0:
        raise WorkflowFileError(f"{what} must not be negative")
    return int(seconds * NS)


def _env(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise WorkflowFileError(f"{what} must be a mapping of names to values")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise WorkflowFileError(f"{what}: names must be non-empty strings")
        if isinstance(item, Mapping | list):
            raise WorkflowFileError(f"{what}.{key} must be a string, number or boolean")
        out[key] = "" if item is None else (str(item).lower() if isinstance(item, bool) else str(item))
    return out


@dataclass(frozen=True)
class WorkflowStepSpec:
    name: str
    command: str = ""
    inline_contents: str = ""
    env_vars: dict[str, str] = field(default_factory=dict)
    timeout_ns: int = 0
    git_source: dict[str, Any] | None = None


@dataclass(frozen=True)
class WorkflowFile:
    name: str
    install_id: str
    timeout_ns: int
    steps: tuple[WorkflowStepSpec, ...]
    run_env_vars: dict[str, str] = field(default_factory=dict)
    plan_fields: dict[str, Any] = field(default_factory=dict)

    def config_body(self) -> dict[str, Any]:
        """``POST /v1/action-workflows/configs``."""
        steps = []
        for step in self.steps:
            body: dict[str, Any] = {"name": step.name, "env_vars": step.env_vars}
            if step.command:
                body["command"] = step.command
            if step.inline_contents:
                body["inline_contents"] = step.inline_contents
            if step.timeout_ns:
                body["timeout"] = step.timeout_ns
            if step.git_source is not None:
                body["public_git_vcs_config"] = {
                    "repo": step.git_source["url"],
                    "branch": step.git_source.get("ref", ""),
                    "directory": step.git_source.get("path", ""),
                }
            steps.append(body)
        return {"timeout": self.timeout_ns, "steps": steps}

    def run_body(self, config_id: str) -> dict[str, Any]:
        """``POST /v1/installs/{install_id}/action-workflows/runs``."""
        return {"action_workflow_config_id": config_id, "run_env_vars": self.run_env_vars}

    def plan(self, config: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        """The ``ActionWorkflowRunPlan`` the real planner would build for ``run`` (uninterpolated)."""
        by_config_id = {str(s.get("id")): i for i, s in enumerate(config.get("steps") or [])}
        plan_steps = []
        for run_step in run.get("steps") or []:
            idx = by_config_id.get(str(run_step.get("step_id")))
            if idx is None or idx >= len(self.steps):
                raise WorkflowFileError(
                    f"the control plane's run step {run_step.get('id')} has no step in the file"
                )
            spec = self.steps[idx]
            plan_step: dict[str, Any] = {
                "run_id": run_step["id"],
                "attrs": {"step.name": spec.name, "step.id": str(run_step.get("step_id"))},
                "interpolated_env_vars": spec.env_vars,
                "interpolated_inline_contents": spec.inline_contents,
                "interpolated_command": spec.command,
            }
            if spec.git_source is not None:
                plan_step["git_source"] = spec.git_source
            plan_steps.append(plan_step)
        return {
            "id": run["id"],
            "install_id": self.install_id,
            "attrs": {"action.name": self.name, "action.id": str(config.get("action_workflow_id") or "")},
            "steps": plan_steps,
            **self.plan_fields,
        }

    def job_fields(self) -> dict[str, Any]:
        """The job's ``execution_timeout``: the workflow's plus a minute (the job-type default for 0)."""
        return {"execution_timeout": self.timeout_ns + EXTRA_JOB_NS} if self.timeout_ns else {}


def _git_source(value: Any, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise WorkflowFileError(f"{what} must be a mapping with url, ref, path, recurse_submodules")
    unknown = sorted(set(value) - _GIT_KEYS)
    if unknown:
        raise WorkflowFileError(f"{what}: unknown keys {', '.join(map(str, unknown))}")
    url = value.get("url")
    if not isinstance(url, str) or not url.strip():
        raise WorkflowFileError(f"{what}.url is required")
    return {
        "url": url.strip(),
        "ref": str(value.get("ref") or ""),
        "path": str(value.get("path") or ""),
        "recurse_submodules": bool(value.get("recurse_submodules", False)),
    }


def _step(index: int, raw: Any) -> WorkflowStepSpec:
    what = f"steps[{index}]"
    if not isinstance(raw, Mapping):
        raise WorkflowFileError(f"{what} must be a mapping")
    unknown = sorted(set(raw) - _STEP_KEYS)
    if unknown:
        raise WorkflowFileError(
            f"{what}: unknown keys {', '.join(map(str, unknown))} (known: {', '.join(sorted(_STEP_KEYS))})"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise WorkflowFileError(f"{what}.name is required")
    command, inline = raw.get("command") or "", raw.get("inline_contents") or ""
    if not isinstance(command, str) or not isinstance(inline, str):
        raise WorkflowFileError(f"{what}: command and inline_contents are strings")
    if not command.strip() and not inline.strip():
        raise WorkflowFileError(f"{what} ({name}): needs command or inline_contents")
    return WorkflowStepSpec(
        name=name.strip(),
        command=command.strip(),
        inline_contents=inline,
        env_vars=_env(raw.get("env_vars"), f"{what}.env_vars"),
        timeout_ns=parse_duration(raw.get("timeout"), f"{what}.timeout"),
        git_source=_git_source(raw.get("git_source"), f"{what}.git_source"),
    )


def parse_workflow(data: Any, *, default_name: str = "local-action") -> WorkflowFile:
    if not isinstance(data, Mapping):
        raise WorkflowFileError("a workflow file is a mapping with steps (and timeout, run_env_vars...)")
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise WorkflowFileError(f"unknown keys {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise WorkflowFileError("steps must be a non-empty list")
    steps = tuple(_step(i, raw) for i, raw in enumerate(raw_steps))
    plan_fields: dict[str, Any] = {}
    for key in _PLAN_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if key.endswith("env_vars"):
            value = _env(value, key)
        elif not isinstance(value, Mapping):
            raise WorkflowFileError(f"{key} must be a mapping")
        plan_fields[key] = value
    name = data.get("name") or default_name
    install_id = data.get("install_id") or "local"
    if not isinstance(name, str) or not isinstance(install_id, str):
        raise WorkflowFileError("name and install_id are strings")
    return WorkflowFile(
        name=name,
        install_id=install_id,
        timeout_ns=parse_duration(data.get("timeout"), "timeout"),
        steps=steps,
        run_env_vars=_env(data.get("run_env_vars"), "run_env_vars"),
        plan_fields=plan_fields,
    )


def load_workflow_file(path: Path) -> WorkflowFile:
    """Read ``path`` (YAML, or JSON, which is YAML too); ``WorkflowFileError`` names the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowFileError(f"{path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) if path.suffix not in (".json",) else json.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise WorkflowFileError(f"{path}: not valid YAML/JSON: {exc}") from None
    try:
        return parse_workflow(data, default_name=path.stem)
    except WorkflowFileError as exc:
        raise WorkflowFileError(f"{path}: {exc}") from None
