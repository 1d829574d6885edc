"""The job's terraform backend proxy over real loopback HTTP (no terraform needed)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest

from handlers.terraform.backend_proxy import BackendProxy
from runner.adapters import RunnerHandlerAPI
from runner.api.client import RunnerClient
from runner.redact import Redactor
from tests.support.terraform import RUNNER_ID, BackendStub, ListJobLog

pytestmark = pytest.mark.terraform

LOCK = {"ID": "lock-mine-1", "Operation": "OperationTypeApply", "Who": "me@runner", "Version": "1.11.4"}


def with_proxy(
    stub: BackendStub, body: Callable[[BackendProxy, httpx.AsyncClient, str], Awaitable[Any]]
) -> tuple[BackendProxy, ListJobLog]:
    ws = stub.add_workspace()
    log = ListJobLog(Redactor())

    async def main() -> BackendProxy:
        async with RunnerClient(stub.url, stub.token, RUNNER_ID) as api:
            proxy = BackendProxy(RunnerHandlerAPI(api), workspace_id=ws, job_id="job-proxy-1", log=log)
            async with proxy.serving(), httpx.AsyncClient(timeout=5) as http:
                await body(proxy, http, ws)
            await proxy.release_held_lock()
            return proxy

    return anyio.run(main), log


def test_state_lock_and_unlock_are_forwarded_with_the_bearer_token(tf_backend: BackendStub) -> None:
    seen: dict[str, Any] = {}

    async def body(proxy: BackendProxy, http: httpx.AsyncClient, ws: str) -> None:
        assert (await http.get(proxy.state_url)).status_code == 204
        assert (await http.post(proxy.lock_url, json=LOCK)).status_code == 200
        seen["held"] = proxy.held_lock_id
        state = {"version": 4, "serial": 1, "lineage": "l", "resources": []}
        answer = await http.post(
            proxy.state_url + "&ID=lock-mine-1", json=state, headers={"Content-MD5": "abc=="}
        )
        assert answer.status_code == 200
        got = await http.get(proxy.state_url)
        assert got.status_code == 200
        assert got.json()["serial"] == 1
        assert (await http.post(proxy.unlock_url, json=LOCK)).status_code == 200
        seen["after"] = proxy.held_lock_id
        seen["ws"] = ws

    proxy, _log = with_proxy(tf_backend, body)
    assert seen["held"] == "lock-mine-1"
    assert seen["after"] == ""
    ws = seen["ws"]
    mine = [r for r in tf_backend.state.requests if ws in r.path or ws in r.query.get("workspace_id", [])]
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in mine] == [
        ("GET", "terraform-backend"),
        ("POST", "lock"),
        ("POST", "terraform-backend"),
        ("GET", "terraform-backend"),
        ("POST", "unlock"),
    ]
    assert all(r.headers["authorization"] == f"Bearer {tf_backend.token}" for r in mine)
    assert all(r.query["job_id"] == ["job-proxy-1"] for r in mine)
    post = next(r for r in mine if r.method == "POST" and r.path == "/v1/terraform-backend")
    assert post.query["ID"] == ["lock-mine-1"]
    assert post.headers["content-md5"] == "abc=="
    assert [c[2] for c in proxy.calls] == [204, 200, 200, 200, 200]


def test_only_this_jobs_workspace_endpoints_pass(tf_backend: BackendStub) -> None:
    other = tf_backend.add_workspace()
    statuses: dict[str, int] = {}

    async def body(proxy: BackendProxy, http: httpx.AsyncClient, ws: str) -> None:
        base = proxy.base_url
        port_root = base[: base.index(proxy.prefix)]
        statuses["no prefix"] = (
            await http.get(f"{port_root}/v1/terraform-backend?workspace_id={ws}")
        ).status_code
        statuses["other workspace state"] = (
            await http.get(f"{base}/v1/terraform-backend?workspace_id={other}")
        ).status_code
        statuses["other workspace lock"] = (
            await http.post(f"{base}/v1/terraform-workspaces/{other}/lock", json=LOCK)
        ).status_code
        statuses["runner api"] = (await http.get(f"{base}/v1/runners/{RUNNER_ID}")).status_code
        statuses["delete state"] = (await http.delete(proxy.state_url)).status_code
        statuses["state-json"] = (
            await http.post(f"{base}/v1/terraform-workspaces/{ws}/state-json", content=b"{}")
        ).status_code
        spoofed = await http.get(f"{base}/v1/terraform-backend?workspace_id={ws}&job_id=someone-else")
        statuses["spoofed job id"] = spoofed.status_code

    with_proxy(tf_backend, body)
    assert statuses == {
        "no prefix": 403,
        "other workspace state": 403,
        "other workspace lock": 403,
        "runner api": 403,
        "delete state": 405,
        "state-json": 403,
        "spoofed job id": 204,
    }
    assert not [
        r for r in tf_backend.state.requests if other in r.path or other in r.query.get("workspace_id", [])
    ]
    assert tf_backend.state.requests[-1].query["job_id"] == ["job-proxy-1"], "job_id is always this job's"


def test_cleanup_releases_only_its_own_lock(tf_backend: BackendStub) -> None:
    recorded: dict[str, str] = {}

    async def body(proxy: BackendProxy, http: httpx.AsyncClient, ws: str) -> None:
        assert (await http.post(proxy.lock_url, json=LOCK)).status_code == 200
        recorded["ws"] = ws
        # terraform dies here without unlocking

    proxy, log = with_proxy(tf_backend, body)
    assert recorded["ws"] not in tf_backend.state.locks
    assert proxy.held_lock_id == ""
    assert any("released the state lock" in m for m in log.messages("warning"))

    async def stolen(proxy: BackendProxy, http: httpx.AsyncClient, ws: str) -> None:
        assert (await http.post(proxy.lock_url, json=LOCK)).status_code == 200
        # an operator force-unlocks, and another run takes the lock
        tf_backend.state.locks[ws] = {"ID": "someone-elses", "Who": "other"}
        recorded["ws2"] = ws

    proxy, log = with_proxy(tf_backend, stolen)
    assert tf_backend.state.locks[recorded["ws2"]]["ID"] == "someone-elses", (
        "a foreign lock is never released"
    )
    assert any("could not release" in m for m in log.messages("error"))


def test_a_conflict_is_recorded_with_the_holder(tf_backend: BackendStub) -> None:
    async def body(proxy: BackendProxy, http: httpx.AsyncClient, ws: str) -> None:
        tf_backend.state.locks[ws] = {
            "ID": "holder-9",
            "Who": "ci@elsewhere",
            "Operation": "OperationTypePlan",
        }
        answer = await http.post(proxy.lock_url, json=LOCK)
        assert answer.status_code == 423
        assert answer.json()["ID"] == "holder-9"
        assert proxy.held_lock_id == ""
        del tf_backend.state.locks[ws]

    proxy, log = with_proxy(tf_backend, body)
    assert proxy.conflict == {"id": "holder-9", "who": "ci@elsewhere", "operation": "OperationTypePlan"}
    assert any("locked by someone else" in m for m in log.messages("error"))


def test_keep_alive_and_upstream_outage(tf_backend: BackendStub) -> None:
    async def body(proxy: BackendProxy, http: httpx.AsyncClient, ws: str) -> None:
        for _ in range(5):
            assert (await http.get(proxy.state_url)).status_code == 204

    with_proxy(tf_backend, body)

    log = ListJobLog(Redactor())

    async def outage() -> int:
        async with RunnerClient("http://127.0.0.1:9", "t", RUNNER_ID, timeout=1.0) as api:
            proxy = BackendProxy(RunnerHandlerAPI(api), workspace_id="tfw1", job_id="j", log=log)
            async with proxy.serving(), httpx.AsyncClient(timeout=30) as http:
                return (await http.post(proxy.lock_url, content=json.dumps(LOCK))).status_code

    assert anyio.run(outage) == 502
