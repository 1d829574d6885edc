"""A small synchronous client of the operator API, for ``runner jobs …`` and for tests.

Synchronous on purpose: the CLI runs one request at a time and tests call it from plain
functions. Errors raise ``OperatorError`` with the server's ``{"error","description"}``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

TERMINAL_JOB_STATUSES = frozenset({"finished", "failed", "timed-out", "not-attempted", "cancelled"})


class OperatorError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        detail = body
        if isinstance(body, dict):
            detail = body.get("description") or body.get("error") or body
        super().__init__(f"{method} {path}: HTTP {status}: {detail}")


class OperatorClient:
    def __init__(
        self, api_url: str, token: str, *, runner_id: str | None = None, timeout: float = 30.0
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.runner_id = runner_id
        self.http = httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "byoc-runner-operator"},
            timeout=timeout,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- plumbing

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise OperatorError(method, path, response.status_code, body)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def _runner(self, runner_id: str | None) -> str:
        rid = runner_id or self.runner_id
        if not rid:
            raise ValueError("no runner id: pass runner_id or construct the client with one")
        return rid

    # ---------------------------------------------------------------- jobs

    def submit(
        self,
        type: str,  # noqa: A002 - the contract's name
        plan: dict[str, Any] | None = None,
        *,
        runner_id: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Submit a job; ``fields`` are the other body keys (group, operation, timeouts in ns,
        ``max_executions``, ``metadata``, ``owner_id``, ``owner_type``). Timeouts may also be
        given in seconds as ``execution_timeout_s`` etc."""
        body: dict[str, Any] = {"type": type}
        if plan is not None:
            body["plan"] = plan
        for key, value in fields.items():
            if value is None:
                continue
            if key.endswith("_s") and key[:-2] in (
                "execution_timeout",
                "available_timeout",
                "queue_timeout",
                "overall_timeout",
            ):
                body[key[:-2]] = int(value * 1_000_000_000)
            else:
                body[key] = value
        result: dict[str, Any] = self.json("POST", f"/v1/runners/{self._runner(runner_id)}/jobs", json=body)
        return result

    def get_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/v1/runner-jobs/{job_id}")
        return result

    def list_jobs(
        self, *, runner_id: str | None = None, status: str = "any", group: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """All jobs (every page) of the runner, oldest first."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            params: dict[str, Any] = {"status": status, "limit": limit, "offset": offset}
            if group:
                params["group"] = group
            response = self.request("GET", f"/v1/runners/{self._runner(runner_id)}/jobs", params=params)
            page = response.json()
            out.extend(page)
            if response.headers.get("x-nuon-page-next") != "true" or not page:
                return out
            offset += len(page)

    def wait_job(
        self, job_id: str, statuses: Iterable[str] = TERMINAL_JOB_STATUSES, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Poll the job until its status is one of ``statuses``; TimeoutError otherwise."""
        wanted = frozenset([statuses] if isinstance(statuses, str) else statuses)
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            job = self.get_job(job_id)
            if job.get("status") in wanted:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {job_id} is {job.get('status')!r} ({job.get('status_description', '')}) "
                    f"after {timeout}s; wanted one of {sorted(wanted)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", f"/v1/runner-jobs/{job_id}/cancel", json={})
        return result

    def executions(self, job_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.json("GET", f"/v1/runner-jobs/{job_id}/executions")
        return result

    def execution(self, job_id: str, execution_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/v1/runner-jobs/{job_id}/executions/{execution_id}")
        return result

    def result(self, job_id: str, execution_id: str | None = None) -> dict[str, Any]:
        """The stored result of an execution (default: the job's latest execution)."""
        if execution_id is None:
            executions = self.executions(job_id)
            if not executions:
                raise OperatorError(
                    "GET", f"/v1/runner-jobs/{job_id}/executions", 404, "job has no execution"
                )
            execution_id = executions[0]["id"]
        result: dict[str, Any] = self.json(
            "GET", f"/v1/runner-jobs/{job_id}/executions/{execution_id}/result"
        )
        return result

    def plan(self, job_id: str) -> str:
        return self.request("GET", f"/v1/runner-jobs/{job_id}/plan").text

    # ---------------------------------------------------------------- logs

    def logs_page(
        self, log_stream_id: str, offset: int = 0, limit: int = 1000
    ) -> tuple[list[dict[str, Any]], int]:
        response = self.request(
            "GET", f"/v1/log-streams/{log_stream_id}/logs", params={"offset": offset, "limit": limit}
        )
        records: list[dict[str, Any]] = response.json()
        return records, int(response.headers.get("x-nuon-api-offset", offset + len(records)))

    def iter_logs(self, log_stream_id: str, offset: int = 0) -> Iterator[dict[str, Any]]:
        while True:
            records, offset = self.logs_page(log_stream_id, offset)
            yield from records
            if not records:
                return

    def logs(self, log_stream_id: str) -> list[dict[str, Any]]:
        """Every stored record of the stream, in order."""
        return list(self.iter_logs(log_stream_id))

    # ---------------------------------------------------------------- runners

    def runner(self, runner_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/v1/runners/{self._runner(runner_id)}")
        return result

    def settings(self, runner_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/v1/runners/{self._runner(runner_id)}/settings")
        return result

    def patch_settings(self, runner_id: str | None = None, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.json(
            "PATCH", f"/v1/runners/{self._runner(runner_id)}/settings", json=fields
        )
        return result

    def create_runner(self, name: str = "runner") -> dict[str, Any]:
        """A further runner; the answer carries its ``token``."""
        result: dict[str, Any] = self.json("POST", "/v1/runners", json={"name": name})
        return result

    def create_workspace(self, workspace_id: str | None = None, **fields: Any) -> dict[str, Any]:
        body = dict(fields)
        if workspace_id:
            body["id"] = workspace_id
        result: dict[str, Any] = self.json("POST", "/v1/terraform-workspaces", json=body)
        return result
