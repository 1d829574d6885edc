"""A step's environment, layered from a minimal base; later layers win.

1. the minimal base the SDK's process runner gives every child: PATH, LANG (and a few TLS and
   proxy variables) from the runner's environment, HOME and TMPDIR inside the job's workspace;
2. the plan's ``builtin_env_vars``;
3. the built-ins: ``NUON_ACTIONS_OUTPUT_FILEPATH`` (the step's outputs file),
   ``NUON_ACTIONS_ROOT``, ``NUON_KUBECONFIG_ENABLED``, ``KUBECONFIG`` (written from
   ``cluster_info``), and the cloud credentials of ``aws_auth`` / ``azure_auth``;
4. the step's ``interpolated_env_vars``;
5. the run's ``run_env_vars``;
6. the plan's ``override_env_vars``.

Nothing else of the runner's environment reaches a step, its API token least of all (the process
runner drops ``RUNNER_API_TOKEN`` whichever layer names it). Values are never logged: names only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

OUTPUTS_VAR = "NUON_ACTIONS_OUTPUT_FILEPATH"
ROOT_VAR = "NUON_ACTIONS_ROOT"
KUBECONFIG_ENABLED_VAR = "NUON_KUBECONFIG_ENABLED"


def builtins(
    *, outputs_file: Path, root: Path, kubeconfig: Path | None, cloud_env: Mapping[str, str]
) -> dict[str, str]:
    """Layer 3: what the runner itself gives a step."""
    env = {
        OUTPUTS_VAR: str(outputs_file),
        ROOT_VAR: str(root),
        KUBECONFIG_ENABLED_VAR: "true" if kubeconfig is not None else "false",
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    env.update(cloud_env)
    return env


def layer_env(
    *,
    builtin_env_vars: Mapping[str, str] | None,
    builtins: Mapping[str, str],
    step_env_vars: Mapping[str, str] | None,
    run_env_vars: Mapping[str, str] | None,
    override_env_vars: Mapping[str, str] | None,
) -> dict[str, str]:
    """Layers 2 to 6 in order (the process runner puts them on top of layer 1)."""
    env: dict[str, str] = {}
    for layer in (builtin_env_vars, builtins, step_env_vars, run_env_vars, override_env_vars):
        for key, value in (layer or {}).items():
            env[str(key)] = "" if value is None else str(value)
    return env
