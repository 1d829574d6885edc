"""job-deploy against the real apiserver, driven by ``runner.testing``.

No kubelet or scheduler runs in this tier: the Job's pod never starts, so the test writes the
Job's Complete or Failed condition through the status subresource, as the job controller would,
and the handler finds no pod log to read (it says so in its outputs).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from handlers.kube.job import JobDeployHandler
from handlers.kube.jobspec import job_name
from runner.sdk import HandlerError
from runner.sdk.plans import SandboxMode
from runner.testing import HandlerRun, RecordingSecrets, make_context, run_handler
from tests.kube.conftest import Cluster
from tests.kube.test_tier import api_client

pytestmark = [pytest.mark.kube, pytest.mark.timeout(60)]

JOB = "job-deploy"
SECRET = "s3cr3t-value-" + uuid.uuid4().hex[:6]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def namespace(kube_cluster: Cluster) -> str:
    ns = f"jobdeploy-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", ns)
    return ns


def plan(cluster: Cluster, ns: str) -> dict[str, Any]:
    return {
        "job": {
            "image_url": "127.0.0.1:5000/tools/migrate",
            "tag": "1.2",
            "cmd": ["/bin/migrate"],
            "args": ["--up", "--verbose"],
            "env_vars": {"DB_PASSWORD": SECRET, "MODE": "up"},
            "namespace": ns,
            "cluster_info": {"kube_config": cluster.kubeconfig.read_text()},
        }
    }


async def run(
    cluster: Cluster, ns: str, tmp_path: Path, job_id: str, **kw: Any
) -> tuple[HandlerRun, RecordingSecrets]:
    secrets = RecordingSecrets()
    done = await run_handler(
        JobDeployHandler(),
        plan(cluster, ns),
        job_type=JOB,
        operation="apply-plan",
        workspace=tmp_path,
        job_id=job_id,
        secrets=secrets,
        env={"RUNNER_KUBE_POLL_INTERVAL": "0.2"},
        **kw,
    )
    return done, secrets


async def read_job(cluster: Cluster, ns: str, name: str) -> Any:
    api = await api_client(str(cluster.kubeconfig))
    async with api:
        try:
            return await k8s.BatchV1Api(api).read_namespaced_job(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


async def finish_when_created(cluster: Cluster, ns: str, name: str, condition: dict[str, Any]) -> None:
    """Play the job controller: once the Job exists, write its final condition to its status."""
    api = await api_client(str(cluster.kubeconfig))
    async with api:
        batch = k8s.BatchV1Api(api)
        while True:
            try:
                await batch.read_namespaced_job(name, ns)
                break
            except ApiException as exc:
                if exc.status != 404:
                    raise
                await anyio.sleep(0.1)
        now = "2026-01-01T00:00:00Z"
        status = {
            "startTime": now,
            "conditions": [{"lastTransitionTime": now, "status": "True", **condition}],
        }
        if condition["type"] == "Complete":
            status["completionTime"] = now
        for _ in range(20):  # the real job controller may write the status at the same time
            try:
                await batch.patch_namespaced_job_status(name, ns, {"status": status})
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
                await anyio.sleep(0.1)


@pytest.mark.anyio
async def test_job_runs_to_completion(kube_cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    job_id = f"ok{uuid.uuid4().hex[:8]}"
    name = job_name(job_id)
    async with anyio.create_task_group() as tg:
        tg.start_soon(finish_when_created, kube_cluster, namespace, name, {"type": "Complete"})
        done, secrets = await run(kube_cluster, namespace, tmp_path, job_id)
    assert done.outputs is not None
    assert done.outputs["job_name"] == name
    assert done.outputs["namespace"] == namespace
    assert done.outputs["status"] == "complete"
    assert done.outputs["completion_time"] == "2026-01-01T00:00:00Z"
    assert done.outputs["pod_logs"] is None, "no kubelet: the cluster has no log to give"
    assert done.outputs["pod_logs_available"] is False
    job = await read_job(kube_cluster, namespace, name)
    container = job.spec.template.spec.containers[0]
    assert container.image == "127.0.0.1:5000/tools/migrate:1.2"
    assert container.command == ["/bin/migrate"]
    assert container.args == ["--up", "--verbose"]
    assert {e.name: e.value for e in container.env} == {"DB_PASSWORD": SECRET, "MODE": "up"}
    assert job.spec.template.spec.restart_policy == "Never"
    assert job.spec.backoff_limit == 0
    # The env value is registered before anything runs, so no log line can carry it.
    assert SECRET in secrets.values
    assert all(SECRET not in m for m in done.log.messages())
    assert secrets.mask(f"x {SECRET} y") != f"x {SECRET} y"


@pytest.mark.anyio
async def test_failed_condition_fails_the_job(kube_cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    job_id = f"bad{uuid.uuid4().hex[:8]}"
    name = job_name(job_id)
    failed = {
        "type": "Failed",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the backoff limit",
    }
    async with anyio.create_task_group() as tg:
        tg.start_soon(finish_when_created, kube_cluster, namespace, name, failed)
        done, _ = await run(kube_cluster, namespace, tmp_path, job_id, raise_errors=False)
    assert isinstance(done.error, HandlerError)
    assert "BackoffLimitExceeded Job has reached the backoff limit" in str(done.error)
    assert name in str(done.error)


@pytest.mark.anyio
async def test_deadline_fails_and_deletes_the_job(
    kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    job_id = f"slow{uuid.uuid4().hex[:8]}"
    name = job_name(job_id)
    with pytest.raises(HandlerError, match=f"{name}.*deadline"):
        await run(kube_cluster, namespace, tmp_path, job_id, deadline=anyio.current_time() + 2.0)
    job = await read_job(kube_cluster, namespace, name)
    assert job is None or job.metadata.deletion_timestamp is not None


@pytest.mark.anyio
async def test_cancel_during_the_wait_deletes_the_job(
    kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    job_id = f"cancel{uuid.uuid4().hex[:8]}"
    name = job_name(job_id)
    started = anyio.current_time()
    with anyio.fail_after(20):
        done, _ = await run(kube_cluster, namespace, tmp_path, job_id, cancel_after=1.5)
    assert done.cancelled
    assert anyio.current_time() - started < 15, "the cancel was prompt"
    job = await read_job(kube_cluster, namespace, name)
    assert job is None or job.metadata.deletion_timestamp is not None
    assert any(m.startswith("deleted ") and name in m for m in done.log.messages())


@pytest.mark.anyio
async def test_sandbox_mode_touches_nothing(kube_cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    handler = JobDeployHandler()
    body = plan(kube_cluster, namespace)
    body["sandbox_mode"] = {"enabled": True, "outputs": {"status": "complete"}}
    ctx = make_context(JOB, json.dumps(body), workspace=tmp_path, operation="apply-plan", job_id="sandbox1")
    await handler.sandbox(ctx, SandboxMode(enabled=True, outputs={"status": "complete"}))
    assert ctx.outputs == {"status": "complete"}
    assert await read_job(kube_cluster, namespace, job_name("sandbox1")) is None
