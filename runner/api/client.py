"""The runner API client: one httpx.AsyncClient, typed calls, deadlines, retries.

Every call has a deadline (``timeout``). Calls that are safe to repeat (reads, status PATCHes,
heartbeats, results and outputs) retry on transport errors, 429 and 5xx with exponential
backoff and full jitter; a 401 is raised at once as ``Unauthorized`` and never retried, so a
revoked token shows up as one clear error instead of a retry storm. The claim
(``create_execution``) is retried only when the request provably never reached the server.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import anyio
import httpx

from runner import __version__
from runner.api.models import (
    ExecutionStatus,
    HeartBeatRequest,
    JobStatus,
    ResultRequest,
    Runner,
    RunnerGroupSettings,
    RunnerHeartBeat,
    RunnerJob,
    RunnerJobExecution,
)
from runner.api.statejson import encode_state_json
from runner.backoff import backoff_delay

if TYPE_CHECKING:
    import ssl

T = TypeVar("T")

CLIENT_VERSION_HEADER = "X-Nuon-Client-Version"


class APIError(Exception):
    """The server answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body[:2000]
        self.error = ""
        self.description = ""
        try:
            import json

            data = json.loads(body)
            if isinstance(data, dict):
                self.error = str(data.get("error") or "")
                self.description = str(data.get("description") or "")
        except ValueError:
            pass
        detail = self.error or self.body[:200]
        super().__init__(f"{method} {path}: HTTP {status}" + (f": {detail}" if detail else ""))

    @property
    def is_client_error(self) -> bool:
        return 400 <= self.status < 500


class Unauthorized(APIError):
    """401: the runner token is unknown, expired or revoked. Not retried."""


class NotFound(APIError):
    pass


class Conflict(APIError):
    pass


class TransportError(Exception):
    """The server could not be reached (or did not answer in time) after all retries."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return backoff_delay(attempt, base=self.base_delay, cap=self.max_delay)


NO_RETRY = RetryPolicy(attempts=1)


def _raise_for_status(method: str, path: str, response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    body = response.text
    cls: type[APIError] = APIError
    if response.status_code == 401:
        cls = Unauthorized
    elif response.status_code == 404:
        cls = NotFound
    elif response.status_code == 409:
        cls = Conflict
    raise cls(method, path, response.status_code, body)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, APIError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, httpx.TransportError)


class RunnerClient:
    """Typed access to the runner API for one runner.

    ``transport`` lets tests plug in ``httpx.MockTransport``; production uses the default pool.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        runner_id: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        version: str = __version__,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.runner_id = runner_id
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._token = token
        self._client_options: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": {
                "Authorization": f"Bearer {token}",
                CLIENT_VERSION_HEADER: f"runner:{version}",
                "User-Agent": f"byoc-runner/{version}",
            },
            "timeout": httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            "transport": transport,
            "limits": httpx.Limits(max_connections=1, max_keepalive_connections=1),
        }
        #: One TLS context for every client, made with the first one: the certifi bundle is read
        #: once, and not at all for an http:// API reached without a proxy (no TLS is ever spoken).
        self._verify: ssl.SSLContext | None = None
        self._idle: list[httpx.AsyncClient] = []
        self._clients: set[httpx.AsyncClient] = set()
        self._closed = False
        #: Called with (method, path, exception) after a failed attempt; the daemon counts these.
        self.on_failure: Callable[[str, str, BaseException], None] | None = None
        #: Called with the method before each attempt; the daemon counts API requests with it.
        self.on_request: Callable[[str], None] | None = None

    @property
    def token(self) -> str:
        return self._token

    async def aclose(self) -> None:
        self._closed = True
        self._idle.clear()
        clients, self._clients = self._clients, set()
        for client in clients:
            await client.aclose()

    # ------------------------------------------------------------------ connections
    # httpcore's pool scans every pooled connection for every request, and the scan is quadratic
    # (``AsyncConnectionPool._assign_requests_to_connections`` counts the idle connections once
    # per connection, and asks each idle one whether its socket is readable): with the daemon's
    # pollers, jobs and log streams sharing one pool of 64, that scan was the top of a noop
    # throughput profile (419,727 ``is_idle`` calls for 300 jobs). Here each request checks out
    # a client whose pool holds one connection, so the scan sees one; there are as many
    # connections as requests in flight, and at most ``MAX_IDLE_CLIENTS`` are kept alive between
    # requests (bench/http_client_bench.py measures this against one shared client).
    MAX_IDLE_CLIENTS = 16

    def _checkout(self) -> httpx.AsyncClient:
        if self._idle:
            return self._idle.pop()
        if self._closed:
            raise TransportError("the API client is closed")
        if self._verify is None:
            plain = self.base_url.startswith("http://") and not urllib.request.getproxies()
            self._verify = httpx.create_ssl_context(verify=not plain)
        client = httpx.AsyncClient(verify=self._verify, **self._client_options)
        self._clients.add(client)
        return client

    async def _discard(self, client: httpx.AsyncClient) -> None:
        self._clients.discard(client)
        with anyio.CancelScope(shield=True):
            await client.aclose()

    async def __aenter__(self) -> RunnerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ core
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        retry_on_connect_only: bool = False,
    ) -> httpx.Response:
        """One API call with its deadline and retry policy; raises APIError/TransportError."""
        if path.startswith(("http://", "https://")):
            raise ValueError(f"{method} {path}: the API client takes paths under its base URL")
        policy = retry or self.retry
        last: BaseException | None = None
        extra: dict[str, Any] = {}
        if params:
            extra["params"] = {k: v for k, v in params.items() if v is not None}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        for attempt in range(policy.attempts):
            if self.on_request is not None:
                self.on_request(method)
            client = self._checkout()
            try:
                response = await client.request(
                    method, path, json=json, content=content, headers=headers, **extra
                )
                _raise_for_status(method, path, response)
                return response
            except (APIError, httpx.TransportError) as exc:
                last = exc
            finally:
                if not self._closed and len(self._idle) < self.MAX_IDLE_CLIENTS:
                    self._idle.append(client)
                else:
                    await self._discard(client)
            if self.on_failure is not None:
                self.on_failure(method, path, last)
            if isinstance(last, Unauthorized):
                raise last
            retryable = _retryable(last)
            if retry_on_connect_only:
                retryable = isinstance(last, httpx.ConnectError | httpx.ConnectTimeout)
            if not retryable or attempt + 1 >= policy.attempts:
                break
            await anyio.sleep(policy.delay(attempt))
        assert last is not None
        if isinstance(last, APIError):
            raise last
        raise TransportError(f"{method} {path}: {type(last).__name__}: {last}") from last

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        if not response.content:
            return None
        return response.json()

    # ------------------------------------------------------------------ runner
    async def get_runner(self) -> Runner:
        return Runner.model_validate(await self._json("GET", f"/v1/runners/{self.runner_id}"))

    async def get_settings(self, *, timeout: float | None = None) -> RunnerGroupSettings:
        data = await self._json("GET", f"/v1/runners/{self.runner_id}/settings", timeout=timeout)
        return RunnerGroupSettings.model_validate(data or {})

    async def heartbeat(self, request: HeartBeatRequest, *, timeout: float | None = None) -> RunnerHeartBeat:
        data = await self._json(
            "POST",
            f"/v1/runners/{self.runner_id}/heart-beats",
            json=request.to_wire(),
            timeout=timeout,
            retry=RetryPolicy(attempts=2, base_delay=0.2, max_delay=1.0),
        )
        return RunnerHeartBeat.model_validate(data or {})

    # ------------------------------------------------------------------ jobs
    async def list_jobs(
        self,
        group: str,
        *,
        status: str = JobStatus.AVAILABLE.value,
        limit: int = 10,
        offset: int = 0,
        wait: float | None = None,
    ) -> list[RunnerJob]:
        """Jobs of ``group``; with ``wait`` the server may hold the request (long-poll)."""
        params: dict[str, Any] = {"group": group, "status": status, "limit": limit, "offset": offset}
        timeout = self.timeout
        if wait:
            params["wait"] = f"{wait:g}s"
            timeout = wait + self.timeout
        data = await self._json(
            "GET",
            f"/v1/runners/{self.runner_id}/jobs",
            params=params,
            timeout=timeout,
            retry=RetryPolicy(attempts=2, base_delay=0.2, max_delay=1.0),
        )
        return [RunnerJob.model_validate(item) for item in (data or [])]

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> RunnerJob:
        data = await self._json("GET", f"/v1/runner-jobs/{job_id}", timeout=timeout)
        return RunnerJob.model_validate(data or {})

    async def get_plan(self, job_id: str) -> str:
        response = await self.request("GET", f"/v1/runner-jobs/{job_id}/plan")
        return response.text

    async def update_job(self, job_id: str, status: JobStatus) -> None:
        await self.request("PATCH", f"/v1/runner-jobs/{job_id}", json={"status": status.value})

    # ------------------------------------------------------------------ executions
    async def create_execution(self, job_id: str) -> RunnerJobExecution:
        """Claim a job. A 4xx (409 from our control plane) means someone else has it."""
        data = await self._json(
            "POST",
            f"/v1/runner-jobs/{job_id}/executions",
            json={},
            retry_on_connect_only=True,
        )
        return RunnerJobExecution.model_validate(data or {})

    async def update_execution(
        self,
        job_id: str,
        execution_id: str,
        status: ExecutionStatus,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        await self.request(
            "PATCH",
            f"/v1/runner-jobs/{job_id}/executions/{execution_id}",
            json={"status": status.value},
            retry=retry,
            timeout=timeout,
        )

    async def get_execution(self, job_id: str, execution_id: str) -> RunnerJobExecution:
        data = await self._json("GET", f"/v1/runner-jobs/{job_id}/executions/{execution_id}")
        return RunnerJobExecution.model_validate(data or {})

    async def post_result(
        self, job_id: str, execution_id: str, result: ResultRequest, *, retry: RetryPolicy | None = None
    ) -> None:
        await self.request(
            "POST",
            f"/v1/runner-jobs/{job_id}/executions/{execution_id}/result",
            json=result.to_wire() | {"success": result.success},
            retry=retry,
        )

    async def post_outputs(
        self,
        job_id: str,
        execution_id: str,
        outputs: Mapping[str, Any] | None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        path = f"/v1/runner-jobs/{job_id}/executions/{execution_id}/outputs"
        try:
            await self.request("POST", path, json={"outputs": dict(outputs or {})}, retry=retry)
        except APIError as exc:
            # A retried POST whose first answer was lost meets the unique index: it is stored.
            if exc.status in (400, 409) and "duplicate" in (exc.error + exc.description).lower():
                return
            raise

    # ------------------------------------------------------------------ logs
    async def post_logs(
        self, log_stream_id: str, body: bytes, *, token: str | None = None, timeout: float | None = None
    ) -> None:
        """One OTLP/HTTP protobuf ExportLogsServiceRequest; the caller handles retries/spooling."""
        headers = {"Content-Type": "application/x-protobuf"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        await self.request(
            "POST",
            f"/v1/log-streams/{log_stream_id}/logs",
            content=body,
            headers=headers,
            timeout=timeout,
            retry=NO_RETRY,
        )

    # ------------------------------------------------------------------ terraform and app config
    async def post_state_json(self, workspace_id: str, job_id: str, body: bytes) -> None:
        """``body`` is the ``terraform show -json`` document; it goes out as the reference's Go
        client sends a ``[]byte`` body, a quoted base64 string (docs/runner-api.md §6.3)."""
        await self.request(
            "POST",
            f"/v1/terraform-workspaces/{workspace_id}/state-json",
            params={"job_id": job_id},
            content=encode_state_json(body),
            headers={"Content-Type": "application/json"},
        )

    async def get_app_config(self, app_id: str, app_config_id: str) -> dict[str, Any]:
        data = await self._json("GET", f"/v1/apps/{app_id}/config/{app_config_id}")
        return data if isinstance(data, dict) else {}

    # ------------------------------------------------------------------ action workflows
    async def get_action_workflow_run(self, install_id: str, run_id: str) -> dict[str, Any]:
        path = f"/v1/installs/{_seg(install_id)}/action-workflows/runs/{_seg(run_id)}"
        data = await self._json("GET", path)
        return data if isinstance(data, dict) else {}

    async def get_action_workflow_config(self, config_id: str) -> dict[str, Any]:
        data = await self._json("GET", f"/v1/action-workflows/configs/{_seg(config_id)}")
        return data if isinstance(data, dict) else {}

    async def update_action_workflow_step(
        self, install_id: str, workflow_run_id: str, step_id: str, status: str, execution_duration_ns: int
    ) -> dict[str, Any]:
        """Idempotent (the same status and duration again), so retried like the other reports."""
        path = (
            f"/v1/installs/{_seg(install_id)}/action-workflow-runs/{_seg(workflow_run_id)}"
            f"/steps/{_seg(step_id)}"
        )
        body = {"status": status, "execution_duration": int(execution_duration_ns)}
        data = await self._json("PUT", path, json=body)
        return data if isinstance(data, dict) else {}


def _seg(value: str) -> str:
    """One path segment: an id from a plan never adds a segment or a query."""
    return quote(value, safe="")


async def with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    policy: RetryPolicy = RetryPolicy(attempts=1_000_000, base_delay=0.2, max_delay=5.0),
    give_up_on: tuple[type[BaseException], ...] = (Unauthorized,),
) -> T:
    """Keep calling ``fn`` until it succeeds or ``deadline`` (anyio clock) passes.

    Used for reports that must land (the final status of an execution): they retry across
    outages of the control plane, but never past their own deadline.
    """
    attempt = 0
    while True:
        try:
            return await fn()
        except give_up_on:
            raise
        except APIError as exc:
            if exc.is_client_error and exc.status != 429:
                raise
            last: BaseException = exc
        except TransportError as exc:
            last = exc
        delay = policy.delay(attempt)
        attempt += 1
        if anyio.current_time() + delay >= deadline:
            raise last
        await anyio.sleep(delay)
