"""The narrow ports a handler reaches the runner through, in place of the API client and Config.

A handler never holds the runner's API client (and so its token) nor the agent's configuration:
it gets ``HandlerAPI``, exactly the control-plane calls handlers make, and ``ToolSettings``, the
few agent settings a tool needs. The agent implements both (``runner/adapters.py``); tests use
``runner.testing``. A call the control plane answered with an error raises ``APIRequestFailed``
(status and body, so a proxy can pass them on); one that never got an answer raises
``APIUnreachable``.

New handler families add their calls here as another small protocol that ``HandlerAPI``
combines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class APIRequestFailed(Exception):
    """The control plane answered a handler's call with an error status."""

    def __init__(self, message: str, *, status: int, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class APIUnreachable(Exception):
    """The control plane did not answer a handler's call (after the adapter's retries)."""


@dataclass(frozen=True)
class APIReply:
    """A successful answer, as is: terraform's backend protocol reads status and body."""

    status: int
    body: bytes = b""
    content_type: str = "application/octet-stream"


class AppConfigAPI(Protocol):
    async def app_config(self, app_id: str, app_config_id: str) -> dict[str, Any]:
        """``GET /v1/apps/{app}/config/{cfg}``: the app config a job's tool version may come from."""
        ...


class TerraformBackendAPI(Protocol):
    """Terraform's HTTP state backend and workspaces (docs/runner-api.md §3.11), for one job.

    ``headers`` carries what terraform sent that the server reads (``Content-Type``,
    ``Content-MD5``). The lock and unlock calls are never retried (a retried lock would meet its
    own lock); state reads and writes are.
    """

    async def terraform_state(
        self, workspace_id: str, job_id: str, *, headers: Mapping[str, str] | None = None
    ) -> APIReply: ...

    async def put_terraform_state(
        self,
        workspace_id: str,
        job_id: str,
        state: bytes,
        *,
        lock_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> APIReply: ...

    async def lock_terraform_workspace(
        self, workspace_id: str, job_id: str, lock_info: bytes, *, headers: Mapping[str, str] | None = None
    ) -> APIReply: ...

    async def unlock_terraform_workspace(
        self, workspace_id: str, job_id: str, lock_info: bytes, *, headers: Mapping[str, str] | None = None
    ) -> APIReply: ...

    async def post_terraform_state_json(self, workspace_id: str, job_id: str, state_json: bytes) -> None:
        """The ``terraform show -json`` document of the workspace's state after an apply."""
        ...


class ActionWorkflowAPI(Protocol):
    """Action workflow runs (docs/runner-api.md §3.13), for an ``actions-workflow`` job: the run
    and its config as the control plane returns them, and each step's status."""

    async def action_workflow_run(self, install_id: str, run_id: str) -> dict[str, Any]:
        """``GET /v1/installs/{install_id}/action-workflows/runs/{run_id}``."""
        ...

    async def action_workflow_config(self, config_id: str) -> dict[str, Any]:
        """``GET /v1/action-workflows/configs/{config_id}``."""
        ...

    async def update_action_workflow_step(
        self, install_id: str, workflow_run_id: str, step_id: str, *, status: str, execution_duration_ns: int
    ) -> dict[str, Any]:
        """``PUT /v1/installs/{install_id}/action-workflow-runs/{workflow_run_id}/steps/{step_id}``
        ``{status, execution_duration}`` (nanoseconds); ``step_id`` is the run step's id."""
        ...


class HelmReleaseAPI(Protocol):
    """Helm release storage (docs/runner-api.md §9), the records of a ``storage_driver: nuon``
    release. A release is Helm's ``release/v1.Release`` JSON plus ``labels``; ``key`` is Helm's
    storage key (``sh.helm.release.v1.<name>.v<version>``). A create of an existing key raises
    ``APIRequestFailed`` with status 409, an update or delete of a missing one 404."""

    async def helm_releases(self, helm_chart_id: str, namespace: str) -> list[dict[str, Any]]:
        """``GET /v1/helm-releases/{helm_chart_id}/releases/{namespace}``: every record."""
        ...

    async def create_helm_release(
        self, helm_chart_id: str, namespace: str, key: str, release: Mapping[str, Any]
    ) -> None: ...

    async def update_helm_release(
        self, helm_chart_id: str, namespace: str, key: str, release: Mapping[str, Any]
    ) -> None: ...

    async def delete_helm_release(self, helm_chart_id: str, namespace: str, key: str) -> None: ...


class HandlerAPI(AppConfigAPI, TerraformBackendAPI, ActionWorkflowAPI, HelmReleaseAPI, Protocol):
    """Every control-plane call a handler may make; nothing else of the runner API."""


@dataclass(frozen=True)
class ToolSettings:
    """The agent settings that tools need (not the agent's whole configuration)."""

    #: Cached tool binaries and shared caches (terraform binaries, the provider plugin cache).
    tools_dir: Path
    #: SIGINT -> SIGKILL grace for a tool's child process.
    child_grace: float = 10.0
    #: Registries reached over plain HTTP (loopback always is).
    insecure_registries: tuple[str, ...] = ()
    #: The runner's version (operations jobs report it).
    runner_version: str = ""
    #: The deadline of one call to a remote service (registry clients use at least 60 s).
    request_timeout: float = 10.0


# --------------------------------------------------------------------------- runner mng


@dataclass(frozen=True)
class WorkloadStatus:
    """The runner workload as ``runner mng`` sees it, for a management job's log and outputs."""

    #: ``process`` (``runner run`` from a versioned virtualenv) or ``container``.
    mode: str
    version: str
    running: bool
    #: Held: stopped on purpose (a shut-down, an exit 0, a crash loop); not restarted until asked.
    held: bool = False
    detail: str = ""


class WorkloadError(Exception):
    """A supervisor operation failed; the message says what was done about it (e.g. rolled back)."""

    def __init__(self, message: str, **details: str) -> None:
        super().__init__(message)
        self.details = details


@runtime_checkable
class WorkloadSupervisor(Protocol):
    """What a management (``mng-*``) handler may ask of ``runner mng``: the runner workload, and
    nothing else of the supervisor (a handler never imports the agent).

    Under ``runner mng`` the job's ``ctx.control`` implements this as well as ``RunnerControl``;
    under ``runner run`` it does not, and a management handler fails the job with a clear
    message. The operations are not cancelled halfway by the job's own cancel: a half-switched
    version would be worse than a late report.
    """

    def workload_status(self) -> WorkloadStatus: ...

    async def desired_version(self) -> str | None:
        """Settings ``container_image_tag`` as the control plane has it now (read afresh, as the
        reference's update job does), or None when settings name none or cannot be read."""
        ...

    async def restart_workload(self, *, reason: str) -> WorkloadStatus:
        """Stop the workload gracefully (its SIGTERM drain), start it again, wait for ``/readyz``."""
        ...

    async def stop_workload(self, *, reason: str) -> WorkloadStatus:
        """Stop it gracefully and hold it stopped (also across a restart of the supervisor)."""
        ...

    async def update_workload(self, version: str, *, reason: str) -> WorkloadStatus:
        """Install ``version``, switch to it, wait for ``/readyz``; roll back and raise
        ``WorkloadError`` when it does not pass within the deadline."""
        ...

    def exit_after_job(self, *, reason: str, power_off: bool = False) -> None:
        """End the supervisor once this job's final status is reported; then, with ``power_off``,
        run the host's power-off command."""
        ...
