"""terraform apply-plan benchmark: the runner's apply-plan job vs bare terraform, same plan.

A 50-resource ``terraform_data`` module. For each round, two fresh workspaces on one loopback
backend (the terraform tier's stand-in, which accepts the bearer header or ``?token=``):

* **runner**: a ``create-apply-plan`` job makes the plan (not timed), then the
  ``sandbox-terraform`` ``apply-plan`` job runs as the executor drives it (prepare, execute,
  cleanup): source copy, binary resolution, CLI config, the backend proxy, ``init``, ``apply``,
  ``show -json``, the ``state-json`` POST and outputs;
* **bare**: the same kind of plan for the other workspace, then, in a fresh directory with the
  module, ``terraform init`` + ``terraform apply tfplan`` talking to the backend directly.

Rounds alternate the two so drift hits both. Prints each round, the medians, and the ratios
runner/bare (target <= 1.10) against bare ``init + apply`` (what applying a saved plan in a
fresh checkout takes) and against the ``apply`` command alone.

The runner's fixed cost over bare terraform is the ``terraform show -json`` the contract needs
for ``state-json`` (and the outputs), about 0.2 s here whatever the module; ``--work-ms`` gives
each resource a ``local-exec`` sleep to see that cost against an apply that does some work.

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

from handlers.terraform.sandbox import SandboxTerraformHandler  # noqa: E402
from handlers.terraform.workspace import BACKEND_OVERRIDE, BACKEND_OVERRIDE_NAME  # noqa: E402
from runner.api.client import RunnerClient  # noqa: E402
from runner.api.models import RunnerGroupSettings, RunnerJob, RunnerJobExecution  # noqa: E402
from runner.api.plans import SandboxRunPlan  # noqa: E402
from runner.config import Config  # noqa: E402
from runner.handler import JobContext  # noqa: E402
from runner.process import JobProcessRunner  # noqa: E402
from runner.redact import Redactor  # noqa: E402
from tests.support.terraform import BackendStub, ListJobLog, start_backend_stub  # noqa: E402


def module_files(resources: int, work_ms: int = 0) -> str:
    provisioner = (
        f"""
  provisioner "local-exec" {{
    command = "sleep {work_ms / 1000:.3f}"
  }}"""
        if work_ms
        else ""
    )
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
    def __init__(self, work: Path, stub: BackendStub, resources: int, work_ms: int = 0) -> None:
        self.work = work
        self.stub = stub
        self.module = work / "module"
        self.module.mkdir()
        (self.module / "main.tf").write_text(module_files(resources, work_ms))
        self.tools = work / "tools"
        self.counter = 0
        self.api = RunnerClient(stub.url, stub.token, "bench")

    def _ctx(self, plan: SandboxRunPlan, operation: str, api: RunnerClient) -> JobContext:
        self.counter += 1
        workspace = self.work / f"exec-{self.counter}"
        workspace.mkdir()
        secrets = Redactor(self.stub.token)
        log = ListJobLog(secrets)
        config = Config(
            runner_id="bench",
            api_url=self.stub.url,
            api_token=self.stub.token,
            state_dir=self.work / "state",
            tools_dir=self.tools,
        )
        return JobContext(
            job=RunnerJob(id=f"jobbench{self.counter}", type="sandbox-terraform", operation=operation),
            execution=RunnerJobExecution(id=f"exe{self.counter}"),
            plan=plan,
            plan_text="",
            workspace=workspace,
            log=log,
            secrets=secrets,
            processes=JobProcessRunner(log, workspace=workspace, secrets=secrets),
            api=api,
            config=config,
            settings=RunnerGroupSettings(),
            control=None,  # type: ignore[arg-type]
            deadline=float("inf"),
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

    async def runner_apply(self) -> tuple[float, float, float, float]:
        """(whole apply-plan job, terraform apply, init, show -json) in seconds."""
        workspace_id = self.stub.add_workspace()
        plan, raw = await self.plan_for(workspace_id)
        apply = plan.model_copy(update={"apply_plan_contents": base64.b64encode(raw).decode()})
        started = time.perf_counter()
        ctx = await self.job(apply, "apply-plan")
        wall = time.perf_counter() - started
        assert len(self.stub.resources(workspace_id)) == 1, "the runner applied the plan"
        assert ctx.outputs == {"first": "bench-0"}
        log: ListJobLog = ctx.log  # type: ignore[assignment]
        return wall, _child_seconds(log, "apply"), _child_seconds(log, "init"), _child_seconds(log, "show")

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
        cli_config.write_text("")
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


async def measure(bench: Bench, rounds: int, resources: int) -> None:
    # Warm-up: page cache, the binary, the plugin cache dir.
    await bench.runner_apply()
    await bench.bare_apply()
    runner: list[tuple[float, float, float, float]] = []
    bare: list[tuple[float, float]] = []
    print(f"apply-plan of {resources} terraform_data resources, {rounds} rounds")
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
    print(f"ratio   runner / bare (apply alone)  {job / bare_apply:.3f}")
    print(f"ratio   apply command, runner / bare {job_apply / bare_apply:.3f}")
    init = statistics.median(r[2] for r in runner)
    show = statistics.median(r[3] for r in runner)
    other = job - job_apply - init - show
    print(
        f"runner job breakdown (medians): init {init:.3f}s, apply {job_apply:.3f}s, "
        f"show -json for state-json and outputs {show:.3f}s, everything else {other:.3f}s"
    )
    await bench.api.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
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
    stub = start_backend_stub()
    work = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    try:
        anyio.run(measure, Bench(work, stub, args.resources, args.work_ms), args.rounds, args.resources)
    finally:
        stub.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
