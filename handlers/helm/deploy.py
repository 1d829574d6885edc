"""helm-chart-deploy: plan, install or upgrade, and uninstall a chart with the real helm binary.

- ``create-apply-plan``: ``helm upgrade --install --dry-run=server`` renders the chart with the
  plan's values against the cluster; its manifest and hooks are diffed, object by object, with the
  release's current ones (handlers/helm/plan.py). The result is gzip + base64url of
  ``{plan, op: install|upgrade, helm_content_diff}`` in both compressed fields.
- ``create-teardown-plan``: every object of the release is ``removed``; ``op: uninstall``.
- ``apply-plan``: the plan job's ``op`` decides. ``install``/``upgrade``: ``helm upgrade
  --install --wait --atomic`` with the job's remaining time (less a reserve for the rollback),
  so a failure rolls back and the job fails with helm's message; the history is kept.
  ``uninstall``: ``helm uninstall --wait`` (nothing to do when there is no release).

A release left ``pending-install``/``pending-upgrade``/``pending-rollback`` by a killed runner is
recovered before an apply (rolled back to its last deployed revision, or uninstalled when it never
was deployed), with a log line saying so. The chart is the artifact at ``src_registry:src_tag``
holding ``chart.tgz`` (reference-runner.md §4.11), unpacked with handlers.oci.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import anyio

from handlers.common.kubeconfig import kubeconfig_file, resolve_kubeconfig
from handlers.helm import plan as plans
from handlers.helm.binary import VersionRequest, requested_version, resolve_helm
from handlers.helm.chart_source import chart_from_source
from handlers.helm.cli import DRIVERS, Helm, HelmFailed, error_line, helm_env, write_private
from handlers.helm.flags import helm_major, upgrade_flags
from handlers.helm.settings import HelmSettings
from handlers.helm.values import value_args
from handlers.kube import diff as diffs
from handlers.kube.deploy import plan_result
from handlers.oci.artifacts import pull_directory
from handlers.oci.registry import open_registry
from runner.sdk import Handler, HandlerError, JobContext
from runner.sdk.plans import DeployPlan, HelmDeployPlan

OPERATIONS = frozenset({"create-apply-plan", "create-teardown-plan", "apply-plan"})
CHART_FILE = "chart.tgz"
#: What helm says when the release's newest revision is pending (its helm was killed).
PENDING_ERROR = "another operation (install/upgrade/rollback) is in progress"
#: The storage driver whose records live in the control plane (docs/runner-api.md §9).
NUON = "nuon"


def storage_driver(raw: str) -> str:
    """The plan's ``storage_driver``: helm's ``HELM_DRIVER``, or ``nuon`` (the control plane, staged
    through helm's secret driver by handlers/helm/nuon.py); anything unknown fails the job."""
    key = raw.strip().lower()
    if key == NUON:
        return NUON
    if key not in DRIVERS:
        raise HandlerError(
            f"helm storage_driver {raw!r} is not supported (secret, secrets, configmap, configmaps, nuon)"
        )
    return DRIVERS[key]


def release_outputs(release: dict[str, Any]) -> dict[str, Any]:
    """The job's outputs from the release helm printed (``helm upgrade -o json``)."""
    info = release.get("info") or {}
    chart = (release.get("chart") or {}).get("metadata") or {}
    return {
        "release": release.get("name", ""),
        "namespace": release.get("namespace", ""),
        "revision": int(release.get("version") or 0),
        "status": info.get("status", ""),
        "chart": chart.get("name", ""),
        "chart_version": chart.get("version", ""),
        "app_version": chart.get("appVersion", ""),
    }


class HelmDeployHandler(Handler):
    operations: ClassVar[frozenset[str]] = OPERATIONS
    settings_model = HelmSettings

    def __init__(self) -> None:
        self._section = HelmDeployPlan()
        self._namespace = "default"
        self._driver = "secret"
        self._op = ""
        self._request = VersionRequest(None, "")
        self._major = 3  # helm's major version: its flags differ (handlers/helm/flags.py)
        self._kubeconfig = Path()

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(DeployPlan)
        if plan.helm is None:
            raise HandlerError("the plan has no helm section")
        self._section = plan.helm
        if not self._section.name:
            raise HandlerError("the plan's helm section has no release name")
        self._namespace = self._section.namespace or "default"
        self._driver = storage_driver(self._section.storage_driver)
        if self._driver == NUON and not self._section.helm_chart_id:
            raise HandlerError(
                "helm storage_driver 'nuon' keeps the release records under the plan's helm_chart_id, "
                "and the plan has none"
            )
        if ctx.operation == "apply-plan":
            self._op = plans.read_op(plan.apply_plan_contents)
        value_args(self._section.values)  # a bad entry fails before anything runs
        # The app config is read here, as the reference's Fetch reads it (before in-progress).
        self._request = await requested_version(
            ctx,
            app_id=plan.app_id,
            app_config_id=plan.app_config_id,
            component_id=plan.component_id,
            plan_version=self._section.helm_version,
        )

    async def execute(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(DeployPlan)
        helm = await self._helm(ctx, plan)
        if self._driver != NUON:
            await self._operate(ctx, plan, helm)
            return
        # Imported here: only nuon jobs talk to the cluster other than through helm.
        from handlers.helm.nuon import NuonStorage
        from handlers.kube.cluster import connect

        async with connect(self._kubeconfig, ctx.workspace / "discovery.json") as cluster:
            storage = NuonStorage(
                ctx.api,
                cluster,
                helm_chart_id=self._section.helm_chart_id,
                namespace=self._namespace,
                name=self._section.name,
                log=ctx.log,
            )
            await storage.stage(create_namespace=self._section.create_namespace)
            try:
                await self._operate(ctx, plan, helm)
            except BaseException:
                # What helm wrote before it failed (a failed revision, a rollback) is kept too;
                # the job's own error is the one it fails with.
                try:
                    await storage.write_back()
                except HandlerError as exc:  # NuonStorageError, or the cluster refusing a read
                    ctx.log.error(str(exc))
                raise
            await storage.write_back()

    async def _operate(self, ctx: JobContext, plan: DeployPlan, helm: Helm) -> None:
        """The operation itself, with whichever driver holds the records."""
        name, ns = self._section.name, self._namespace
        if ctx.operation == "create-teardown-plan":
            await self._plan_teardown(ctx, helm)
            return
        if ctx.operation == "apply-plan" and self._op == "uninstall":
            await self._uninstall(ctx, helm)
            return
        if self._section.chart_source:  # ours, for runner exec (handlers/helm/chart_source.py)
            chart = await chart_from_source(ctx, helm, self._section.chart_source)
        else:
            chart = await self._fetch_chart(ctx, plan)
        args = self._values(ctx)
        if ctx.operation == "create-apply-plan":
            await self._plan_apply(ctx, helm, chart, args)
            return
        timeout = self._wait_budget(ctx)
        flags = upgrade_flags(self._major, timeout)
        if self._section.create_namespace:
            flags.append("--create-namespace")
        if self._section.take_ownership:
            flags.append("--take-ownership")
        ctx.log.info(f"helm upgrade --install {name} (namespace {ns}, plan op {self._op}, wait {timeout}s)")
        upgrade = ["upgrade", "--install", name, str(chart), "--namespace", ns, *flags, *args, "-o", "json"]
        # No history read first (one helm start less per apply): a release left pending by a
        # killed run makes helm refuse at once, and only then is it recovered and retried.
        result = await helm.run(upgrade, capture=True, check=False)
        if result.returncode != 0 and PENDING_ERROR in " ".join(result.stderr_tail):
            await self._recover_pending(ctx, helm)
            result = await helm.run(upgrade, capture=True, check=False)
        if result.returncode != 0:
            raise HelmFailed(f"helm upgrade: {error_line(result)}", exit_code=result.returncode)
        release = json.loads(result.stdout or b"null")
        if not isinstance(release, dict):
            raise HandlerError(f"release {ns}/{name}: helm upgrade printed no release")
        outputs = release_outputs(release)
        ctx.log.info(
            f"release {ns}/{name}: revision {outputs['revision']} {outputs['status']} "
            f"(chart {outputs['chart']} {outputs['chart_version']})"
        )
        ctx.set_outputs(outputs)
        ctx.set_result(plan_result(plans.plan_contents(self._op, [])))

    # ------------------------------------------------------------------ set-up

    async def _helm(self, ctx: JobContext, plan: DeployPlan) -> Helm:
        settings = ctx.handler_settings(HelmSettings)
        binary = await resolve_helm(
            self._request,
            tools_dir=ctx.tools.tools_dir,
            mirror_url=settings.mirror_url,
            processes=ctx.processes,
            log=ctx.log,
        )
        self._major = await helm_major(binary, ctx.processes)
        config = await resolve_kubeconfig(self._section.cluster_info, secrets=ctx.secrets, log=ctx.log)
        kubeconfig = ctx.resources.enter_context(kubeconfig_file(config, ctx.workspace))
        self._kubeconfig = kubeconfig
        env = helm_env(
            ctx.workspace / "helm",
            kubeconfig=kubeconfig,
            driver="secret" if self._driver == NUON else self._driver,
            kube_cache=ctx.tools.tools_dir / "helm" / "kube-cache",
        )
        return Helm(binary.path, env, ctx.processes, ctx.log)

    async def _fetch_chart(self, ctx: JobContext, plan: DeployPlan) -> Path:
        if plan.src_registry is None or not plan.src_tag:
            raise HandlerError("the plan has no chart: src_registry and src_tag name the chart artifact")
        dest = ctx.workspace / "chart"
        target = await open_registry(plan.src_registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
        async with target:
            files = await pull_directory(target, plan.src_tag, dest, log=ctx.log)
        if CHART_FILE not in files:
            raise HandlerError(
                f"artifact {target.display(plan.src_tag)} holds no {CHART_FILE} "
                f"(files: {', '.join(files) or 'none'})"
            )
        return dest / CHART_FILE

    def _values(self, ctx: JobContext) -> list[str]:
        """``-f`` per values file, then ``--set``/``--set-file`` per value (handlers/helm/values.py)."""
        folder = ctx.workspace / "values"
        args: list[str] = []
        for i, content in enumerate(self._section.values_files or []):
            path = write_private(folder / f"values-{i:03d}.yaml", content.encode())
            args += ["--values", str(path)]
        for i, value in enumerate(value_args(self._section.values)):
            if value.how == "set":
                args += ["--set", f"{value.name}={value.value}"]
            else:
                path = write_private(folder / f"value-{i:03d}", value.value.encode())
                args += ["--set-file", f"{value.name}={path}"]
        return args

    def _wait_budget(self, ctx: JobContext) -> int:
        """Seconds for ``--wait``: the job's remaining time less the rollback reserve."""
        reserve = ctx.handler_settings(HelmSettings).rollback_reserve
        remaining = ctx.deadline - anyio.current_time()
        if remaining == float("inf"):
            return 900
        return max(5, int(remaining - reserve))

    # ------------------------------------------------------------------ plans

    async def _plan_apply(self, ctx: JobContext, helm: Helm, chart: Path, args: list[str]) -> None:
        name, ns = self._section.name, self._namespace
        history = await helm.history(name, ns)
        newest = plans.latest(history)
        deployed = plans.last_deployed_revision(history)
        op = "upgrade" if deployed is not None else "install"
        current = await helm.status(name, ns) if history else None
        if newest is not None and newest.get("status") in plans.PENDING:
            ctx.log.warning(
                f"release {ns}/{name} is {newest.get('status')} at revision {newest.get('revision')} "
                "(a helm run was interrupted); the apply will recover it first"
            )
            rendered = await self._template(helm, chart, args, upgrade=deployed is not None)
        else:
            dry = await helm.json(
                ["upgrade", "--install", name, str(chart), "--namespace", ns, "--dry-run=server", *args]
            )
            rendered = plans.release_text(dry if isinstance(dry, dict) else None)
        old = plans.release_text(current) if deployed is not None else ""
        found = plans.diff_manifests(old, rendered, ns, op)
        self._report(ctx, op, found)

    async def _template(self, helm: Helm, chart: Path, args: list[str], *, upgrade: bool) -> str:
        extra = ["--is-upgrade"] if upgrade else []
        result = await helm.run(
            ["template", self._section.name, str(chart), "--namespace", self._namespace, *extra, *args],
            capture=True,
        )
        return (result.stdout or b"").decode()

    async def _plan_teardown(self, ctx: JobContext, helm: Helm) -> None:
        name, ns = self._section.name, self._namespace
        current = await helm.status(name, ns)
        if current is None:
            ctx.log.info(f"release {ns}/{name} does not exist: nothing to uninstall")
        found = plans.diff_manifests(plans.release_text(current), None, ns, "uninstall")
        self._report(ctx, "uninstall", found)

    def _report(self, ctx: JobContext, op: str, found: list[dict[str, Any]]) -> None:
        counts = diffs.summary(found)
        ctx.log.info(f"plan ({op}): {plans.summary_text(found)}", **counts)
        for d in found:
            if d["type"] != diffs.DiffType.UNCHANGED:
                ctx.log.info(f"  {diffs.DiffType(d['type']).name.lower()}: {d.get('kind')} {d.get('name')}")
        ctx.set_result(plan_result(plans.plan_contents(op, found)))
        ctx.set_outputs({"op": op, "diff": found})

    # ------------------------------------------------------------------ apply

    async def _recover_pending(self, ctx: JobContext, helm: Helm) -> None:
        """A release stuck pending (its helm was killed) blocks every upgrade: undo that run."""
        name, ns = self._section.name, self._namespace
        history = await helm.history(name, ns)
        newest = plans.latest(history)
        if newest is None or newest.get("status") not in plans.PENDING:
            return
        state, revision = newest.get("status"), newest.get("revision")
        target = plans.last_deployed_revision(history)
        if target is None:
            ctx.log.warning(
                f"recovering release {ns}/{name}: revision {revision} is {state} and it was never "
                "deployed (a runner was killed during the install); uninstalling it before installing again"
            )
            await helm.run(
                ["uninstall", name, "--namespace", ns, "--wait", f"--timeout={self._wait_budget(ctx)}s"]
            )
            return
        ctx.log.warning(
            f"recovering release {ns}/{name}: revision {revision} is {state} (a runner was killed "
            f"during the upgrade); rolling back to revision {target} before upgrading"
        )
        await helm.run(
            [
                "rollback",
                name,
                str(target),
                "--namespace",
                ns,
                "--wait",
                f"--timeout={self._wait_budget(ctx)}s",
            ]
        )

    async def _uninstall(self, ctx: JobContext, helm: Helm) -> None:
        name, ns = self._section.name, self._namespace
        if not await helm.history(name, ns):
            ctx.log.info(f"release {ns}/{name} does not exist: nothing to uninstall")
        else:
            await helm.run(
                ["uninstall", name, "--namespace", ns, "--wait", f"--timeout={self._wait_budget(ctx)}s"]
            )
            ctx.log.info(f"release {ns}/{name} uninstalled")
        ctx.set_outputs({"release": name, "namespace": ns, "status": "uninstalled"})
        ctx.set_result(plan_result(plans.plan_contents("uninstall", [])))
