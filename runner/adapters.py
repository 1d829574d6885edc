"""The agent's side of the handler SDK's ports: ``HandlerAPI`` over the runner's API client,
``ToolSettings`` from its configuration.

Handlers get these and nothing else of the agent: the client (with the runner's token) stays
here, and a call's failure reaches the handler as the SDK's ``APIRequestFailed`` (status and
body) or ``APIUnreachable``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from runner.api.client import APIError, RetryPolicy, RunnerClient, TransportError
from runner.config import Config
from runner.journal import Journal
from runner.sdk.ports import APIReply, APIRequestFailed, APIUnreachable, ToolSettings

#: A lock or unlock is never retried: a retried lock would meet its own lock (409/423).
_LOCK_RETRY = RetryPolicy(attempts=1)
#: A state read or write is idempotent (a write carries the job's lock ID), and terraform waits on
#: the proxy with no deadline of its own, so a state call rides out a control-plane outage of
#: about a minute (expected backoff sum ~70 s, at most ~140 s) instead of failing the apply at
#: its final write. The job's deadline and cancel still bound it.
_STATE_RETRY = RetryPolicy(attempts=12, base_delay=0.5, max_delay=20.0)
#: Helm release records are written back after helm ran, and a lost write is a lost revision, so
#: they ride out a short outage too; a retried create meets 409 and a retried delete 404, which
#: the caller (handlers/helm/nuon.py) takes as done.
_RELEASE_RETRY = RetryPolicy(attempts=6, base_delay=0.5, max_delay=8.0)


def tool_settings(config: Config) -> ToolSettings:
    return ToolSettings(
        tools_dir=config.resolved_tools_dir.absolute(),
        child_grace=config.child_grace,
        insecure_registries=config.insecure_registries,
        runner_version=config.version,
        request_timeout=config.request_timeout,
    )


def lock_id_of(body: bytes) -> str:
    """The ``ID`` of a terraform LockInfo body (any key case), or "" when there is none."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    for key, value in data.items():
        if str(key).lower() == "id" and isinstance(value, str):
            return value
    return ""


async def _call(response: Awaitable[httpx.Response]) -> APIReply:
    try:
        answer = await response
    except APIError as exc:
        raise APIRequestFailed(str(exc), status=exc.status, body=exc.body.encode()) from exc
    except TransportError as exc:
        raise APIUnreachable(str(exc)) from exc
    content_type = answer.headers.get("content-type", "application/octet-stream")
    return APIReply(answer.status_code, answer.content, content_type)


class RunnerHandlerAPI:
    """``runner.sdk.HandlerAPI`` over the runner's ``RunnerClient`` (docs/runner-api.md §3)."""

    def __init__(self, client: RunnerClient, *, journal: Journal | None = None) -> None:
        self._client = client
        #: Where a terraform lock a job acquires is recorded until it is released, so that a
        #: runner killed mid-apply releases it at the next start (``runner.orphans``).
        self._journal = journal

    async def app_config(self, app_id: str, app_config_id: str) -> dict[str, Any]:
        try:
            return await self._client.get_app_config(app_id, app_config_id)
        except APIError as exc:
            raise APIRequestFailed(str(exc), status=exc.status, body=exc.body.encode()) from exc
        except TransportError as exc:
            raise APIUnreachable(str(exc)) from exc

    async def terraform_state(
        self, workspace_id: str, job_id: str, *, headers: Mapping[str, str] | None = None
    ) -> APIReply:
        return await _call(
            self._client.request(
                "GET",
                "/v1/terraform-backend",
                params={"workspace_id": workspace_id, "job_id": job_id},
                headers=headers,
                retry=_STATE_RETRY,
            )
        )

    async def put_terraform_state(
        self,
        workspace_id: str,
        job_id: str,
        state: bytes,
        *,
        lock_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> APIReply:
        params = {"workspace_id": workspace_id, "job_id": job_id}
        if lock_id:
            params["ID"] = lock_id
        return await _call(
            self._client.request(
                "POST",
                "/v1/terraform-backend",
                params=params,
                content=state,
                headers=headers if headers is not None else {"Content-Type": "application/json"},
                retry=_STATE_RETRY,
            )
        )

    async def lock_terraform_workspace(
        self, workspace_id: str, job_id: str, lock_info: bytes, *, headers: Mapping[str, str] | None = None
    ) -> APIReply:
        return await self._lock_call("lock", workspace_id, job_id, lock_info, headers)

    async def unlock_terraform_workspace(
        self, workspace_id: str, job_id: str, lock_info: bytes, *, headers: Mapping[str, str] | None = None
    ) -> APIReply:
        return await self._lock_call("unlock", workspace_id, job_id, lock_info, headers)

    async def _lock_call(
        self, action: str, workspace_id: str, job_id: str, body: bytes, headers: Mapping[str, str] | None
    ) -> APIReply:
        reply = await _call(
            self._client.request(
                "POST",
                f"/v1/terraform-workspaces/{workspace_id}/{action}",
                params={"job_id": job_id},
                content=body,
                headers=headers if headers is not None else {"Content-Type": "application/json"},
                retry=_LOCK_RETRY,
            )
        )
        if self._journal is not None and 200 <= reply.status < 300:
            lock_id = lock_id_of(body)
            if action == "lock":
                info = body.decode(errors="replace")
                await self._journal.note_lock_async(job_id, workspace_id, lock_id, info)
            else:
                await self._journal.forget_lock_async(job_id, workspace_id, lock_id)
        return reply

    async def post_terraform_state_json(self, workspace_id: str, job_id: str, state_json: bytes) -> None:
        try:
            await self._client.post_state_json(workspace_id, job_id, state_json)
        except APIError as exc:
            raise APIRequestFailed(str(exc), status=exc.status, body=exc.body.encode()) from exc
        except TransportError as exc:
            raise APIUnreachable(str(exc)) from exc

    async def action_workflow_run(self, install_id: str, run_id: str) -> dict[str, Any]:
        return await _json_call(self._client.get_action_workflow_run(install_id, run_id))

    async def action_workflow_config(self, config_id: str) -> dict[str, Any]:
        return await _json_call(self._client.get_action_workflow_config(config_id))

    async def update_action_workflow_step(
        self, install_id: str, workflow_run_id: str, step_id: str, *, status: str, execution_duration_ns: int
    ) -> dict[str, Any]:
        return await _json_call(
            self._client.update_action_workflow_step(
                install_id, workflow_run_id, step_id, status, execution_duration_ns
            )
        )

    # ------------------------------------------------------------------ helm release storage

    def _release_path(self, helm_chart_id: str, namespace: str, key: str = "") -> str:
        path = f"/v1/helm-releases/{quote(helm_chart_id, safe='')}/releases/{quote(namespace, safe='')}"
        return f"{path}/{quote(key, safe='')}" if key else path

    async def helm_releases(self, helm_chart_id: str, namespace: str) -> list[dict[str, Any]]:
        reply = await _call(
            self._client.request("GET", self._release_path(helm_chart_id, namespace), retry=_RELEASE_RETRY)
        )
        try:
            data = json.loads(reply.body or b"[]")
        except ValueError:
            raise APIRequestFailed(
                "helm releases: the answer is not JSON", status=reply.status, body=reply.body
            ) from None
        if not isinstance(data, list):
            raise APIRequestFailed(
                "helm releases: the answer is not a list", status=reply.status, body=reply.body
            )
        return [r for r in data if isinstance(r, dict)]

    async def create_helm_release(
        self, helm_chart_id: str, namespace: str, key: str, release: Mapping[str, Any]
    ) -> None:
        path = self._release_path(helm_chart_id, namespace, key)
        await _call(self._client.request("POST", path, json=dict(release), retry=_RELEASE_RETRY))

    async def update_helm_release(
        self, helm_chart_id: str, namespace: str, key: str, release: Mapping[str, Any]
    ) -> None:
        path = self._release_path(helm_chart_id, namespace, key)
        await _call(self._client.request("PUT", path, json=dict(release), retry=_RELEASE_RETRY))

    async def delete_helm_release(self, helm_chart_id: str, namespace: str, key: str) -> None:
        path = self._release_path(helm_chart_id, namespace, key)
        await _call(self._client.request("DELETE", path, retry=_RELEASE_RETRY))


async def _json_call(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A typed client call, its failures as the SDK's errors."""
    try:
        return await call
    except APIError as exc:
        raise APIRequestFailed(str(exc), status=exc.status, body=exc.body.encode()) from exc
    except TransportError as exc:
        raise APIUnreachable(str(exc)) from exc
