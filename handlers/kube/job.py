"""job-deploy: run the plan's image as a Kubernetes Job (docs/kubernetes.md "job-deploy").

The reference only logs that job components are no longer supported; ours runs them. The Job is
named after the runner job, so a retry finds the Job its earlier attempt created instead of
running the image twice. The wait ends at the Job's Complete or Failed condition or at the job's
deadline; a deadline or a cancel deletes the Job (in a shielded scope with a short bound, so a
cancel stays prompt). The pod's log is reported when the cluster can give it: without a kubelet
(the test tier) there is none, and the outputs say so.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio

from handlers.common.kubeconfig import kubeconfig_file, resolve_kubeconfig
from handlers.kube.cluster import Cluster, KubeError, connect
from handlers.kube.jobspec import image_ref, job_manifest, job_name, job_outcome
from handlers.kube.manifest import ManifestObject, ObjectKey
from runner.sdk import Handler, HandlerError, JobContext
from runner.sdk.plans import DeployPlan, JobDeployPlan
from runner.sdk.settings import KubeSettings

#: How long a cancelled or timed-out job may spend deleting its Job.
DELETE_WITHIN = 10.0
LOG_LIMIT = 64 * 1024


class JobDeployHandler(Handler):
    operations: ClassVar[frozenset[str]] = frozenset({"", "exec", "apply-plan"})
    settings_model = KubeSettings

    def __init__(self) -> None:
        self._section = JobDeployPlan()

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(DeployPlan)
        if plan.job is None:
            raise HandlerError("the plan has no job section")
        self._section = plan.job
        image_ref(self._section)
        # Env values may be credentials: masked in every log line from here on.
        ctx.secrets.register(*(self._section.env_vars or {}).values())

    async def execute(self, ctx: JobContext) -> None:
        settings = ctx.handler_settings(KubeSettings)
        section = self._section
        config = await resolve_kubeconfig(section.cluster_info, secrets=ctx.secrets, log=ctx.log)
        path = ctx.resources.enter_context(kubeconfig_file(config, ctx.workspace))
        name = job_name(ctx.job.id)
        key = ObjectKey("batch/v1", "Job", section.namespace or "default", name)
        async with connect(path, ctx.workspace / "discovery.json") as cluster:
            if await cluster.get(key) is None:
                body = job_manifest(
                    section,
                    name=name,
                    runner_job_id=ctx.job.id,
                    seconds_left=ctx.deadline - anyio.current_time(),
                )
                await cluster.apply(
                    ManifestObject(key, body), field_manager=settings.field_manager, dry_run=False
                )
                ctx.log.info(f"created {key} running {image_ref(section)}")
            else:
                ctx.log.info(f"{key} exists: an earlier attempt created it; waiting for it")
            try:
                live, outcome, why = await self._wait(ctx, cluster, key, settings)
            except BaseException:
                with anyio.move_on_after(DELETE_WITHIN, shield=True):
                    gone = await cluster.delete(key)
                    ctx.log.info(f"deleted {key}" if gone else f"{key} was already gone")
                raise
            logs = await self._logs(ctx, cluster, key)
            status = live.get("status") or {}
            ctx.set_outputs(
                {
                    "job_name": name,
                    "namespace": key.namespace,
                    "status": outcome,
                    "reason": why,
                    "start_time": status.get("startTime"),
                    "completion_time": status.get("completionTime"),
                    "pod_logs": logs,
                    "pod_logs_available": logs is not None,
                }
            )
            if outcome == "failed":
                raise HandlerError(f"{key} failed: {why}")
            ctx.log.info(f"{key} complete")

    async def _wait(
        self, ctx: JobContext, cluster: Cluster, key: ObjectKey, settings: KubeSettings
    ) -> tuple[dict[str, Any], str, str]:
        last = ""
        while True:
            live = await cluster.get(key)
            if live is None:
                raise KubeError(f"{key} disappeared while waiting for it", obj=key)
            outcome, why = job_outcome(live)
            if outcome != "running":
                return live, outcome, why
            if why != last:
                ctx.log.info(f"waiting for {key}: {why}")
                last = why
            left = ctx.deadline - anyio.current_time()
            if left <= 0:
                raise HandlerError(f"{key} did not finish before the job's deadline ({why}); deleted")
            await anyio.sleep(min(settings.poll_interval, left))

    async def _logs(self, ctx: JobContext, cluster: Cluster, key: ObjectKey) -> str | None:
        """The Job's last pod's log, masked; ``None`` when the cluster has none to give."""
        try:
            pods = await cluster.pod_names(key.namespace, f"job-name={key.name}")
            if not pods:
                ctx.log.info(f"{key}: no pod to read a log from")
                return None
            text = await cluster.pod_log(key.namespace, pods[-1], limit_bytes=LOG_LIMIT)
        except KubeError as exc:
            ctx.log.info(f"{key}: pod log not available: {exc}")
            return None
        for line in text.splitlines():
            ctx.log.info(f"pod: {line}")
        return ctx.secrets.mask(text)
