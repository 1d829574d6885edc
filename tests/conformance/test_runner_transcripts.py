"""Our runner's HTTP calls, job type by job type, against the reference's sequence (issue 10;
docs/runner-api.md §10).

A real ``runner run`` process talks to the embedded control plane through the recording proxy
(``tests/conformance/recorder.py``). Each job type's expected transcript is the reference
runner's sequence for it (``bins/runner/internal/pkg/jobloop/exec_job_steps.go`` and the
handlers in ``bins/runner/internal/jobs/``), written as ``R`` lines, plus our deliberate
differences as ``Ours`` lines that name the section of docs/runner-api.md saying why. A failure
prints both sequences as a diff.

Adding a handler: add its expected lines to ``EXPECTED`` and a case to the parametrisation (or
its own test when the job needs a registry or ends the runner).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handlers.oci.client import RegistryClient
from tests.conformance.recorder import Transcript, diff
from tests.conformance.rig import ConformanceRig, conformance_rig
from tests.support.registry import RegistryServer, push_random_image
from tests.support.terraform import GitServer, data_module, write_module
from tests.support.tools import require_tool

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class R:
    """A call the reference runner makes, and ours too."""

    line: str


@dataclass(frozen=True)
class Ours:
    """A deliberate difference: ``line`` is what our runner sends (``reference`` what the reference
    sends in its place, "" when it sends nothing there); ``why`` cites docs/runner-api.md."""

    line: str
    why: str
    reference: str = ""


@dataclass(frozen=True)
class RefOnly:
    """A call the reference makes at this point and ours does not (it makes it elsewhere, see the
    matching ``Ours`` entry, or not at all)."""

    line: str


Entry = R | Ours | RefOnly

EXEC = "/v1/runner-jobs/{job_id}/executions/{execution_id}"
CLAIM = R("POST /v1/runner-jobs/{job_id}/executions {} [runner]")
PLAN = R("GET /v1/runner-jobs/{job_id}/plan - [runner]")
APP_CONFIG = R("GET /v1/apps/{app_id}/config/{app_config_id} - [runner]")


def patch(status: str) -> R:
    return R(f"PATCH {EXEC} {{status={status}}} [runner]")


def outputs(shape: str = "{}") -> R:
    return R(f"POST {EXEC}/outputs {shape} [runner]")


#: Ours posts a result for every job (the reference only for plans and failures, and the real
#: server drops a result without contents); docs/runner-api.md §4.3.
RESULT_OK = Ours(f"POST {EXEC}/result {{success}} [runner]", "§4.3 results for every job")
#: The reference POSTs the plan result during execute, before its outputs step; ours writes
#: outputs first and the result just before the final status (§4.3, §10.1).
PLAN_RESULT = f"POST {EXEC}/result {{contents_compressed,contents_display_compressed,success}} [runner]"
#: The reference's terraform sends the token as ?token=; ours goes through a loopback proxy
#: that adds the runner's Authorization header (§6.1).
TF_PLAN_BACKEND = Ours(
    "terraform backend: GET terraform-backend, POST lock, POST unlock [runner]",
    "§6.1 token in a header via the job's loopback proxy",
    reference="terraform backend: GET terraform-backend, POST lock, POST unlock [query-token]",
)
TF_APPLY_BACKEND = Ours(
    "terraform backend: GET terraform-backend, POST lock, POST terraform-backend, POST unlock [runner]",
    "§6.1 token in a header via the job's loopback proxy",
    reference=(
        "terraform backend: GET terraform-backend, POST lock, POST terraform-backend,"
        " POST unlock [query-token]"
    ),
)
STATE_JSON = R("POST /v1/terraform-workspaces/{workspace_id}/state-json?job_id base64-string [runner]")
#: Our operations jobs say what they did in their outputs; the reference's outputs are ``{}``.
OPS_OUTPUTS = Ours(
    f"POST {EXEC}/outputs {{outputs}} [runner]",
    "§10.2 operations outputs",
    reference=f"POST {EXEC}/outputs {{}} [runner]",
)
#: ``PATCH /v1/runner-jobs/{id} {"status": "finished"}`` (§3.4).
FINISH_JOB = R("PATCH /v1/runner-jobs/{job_id} {status=finished} [runner]")

NOOP: list[Entry] = [
    CLAIM,
    patch("initializing"),
    patch("in-progress"),
    outputs(),
    patch("cleaning-up"),
    RESULT_OK,
    patch("finished"),
]

EXPECTED: dict[str, list[Entry]] = {
    "noop": NOOP,
    "noop-build": NOOP,
    "noop-sync": NOOP,
    "noop-deploy": NOOP,
    "health-check": [
        CLAIM,
        patch("initializing"),
        patch("in-progress"),
        outputs("{outputs}"),
        patch("cleaning-up"),
        RESULT_OK,
        patch("finished"),
    ],
    "sandbox-terraform:create-apply-plan": [
        CLAIM,
        patch("initializing"),
        PLAN,
        APP_CONFIG,
        patch("in-progress"),
        TF_PLAN_BACKEND,
        RefOnly(PLAN_RESULT),
        outputs(),
        patch("cleaning-up"),
        Ours(PLAN_RESULT, "§4.3 the result just before the final status"),
        patch("finished"),
    ],
    "sandbox-terraform:apply-plan": [
        CLAIM,
        patch("initializing"),
        PLAN,
        APP_CONFIG,
        patch("in-progress"),
        TF_APPLY_BACKEND,
        STATE_JSON,
        outputs("{outputs}"),
        patch("cleaning-up"),
        RESULT_OK,
        patch("finished"),
    ],
}
EXPECTED["terraform-deploy:create-apply-plan"] = EXPECTED["sandbox-terraform:create-apply-plan"]
EXPECTED["terraform-deploy:apply-plan"] = EXPECTED["sandbox-terraform:apply-plan"]
#: Builds and syncs: the reference POSTs ``{success}`` during execute (the real server drops it),
#: then its outputs; ours writes outputs, then the result before the final status (§4.3).
BUILD: list[Entry] = [
    CLAIM,
    patch("initializing"),
    PLAN,
    patch("in-progress"),
    RefOnly(RESULT_OK.line),
    outputs("{outputs}"),
    patch("cleaning-up"),
    RESULT_OK,
    patch("finished"),
]
EXPECTED["oci-sync"] = BUILD
EXPECTED["container-image-build"] = BUILD
EXPECTED["terraform-module-build"] = BUILD


def ours(entries: list[Entry]) -> list[str]:
    return [e.line for e in entries if not isinstance(e, RefOnly)]


def reference(entries: list[Entry]) -> list[str]:
    out: list[str] = []
    for entry in entries:
        if isinstance(entry, Ours):
            if entry.reference:
                out.append(entry.reference)
        else:
            out.append(entry.line)
    return out


def check(name: str, transcript: Transcript) -> None:
    """Our transcript equals the expected one; the message shows it against the reference's."""
    expected = EXPECTED[name]
    observed = transcript.lines()
    differences = [f"  {e.line}\n    ({e.why})" for e in expected if isinstance(e, Ours)]
    assert observed == ours(expected), (
        f"{name}: our runner's calls differ from the expected sequence\n"
        + diff(ours(expected), observed, name)
        + "\n\nagainst the reference's sequence:\n"
        + diff(reference(expected), observed, name)
        + ("\n\ndeliberate differences:\n" + "\n".join(differences) if differences else "")
    )
    writes = transcript.log_writes()
    assert writes, f"{name}: no job log was written"
    assert {c.shape for c in writes} == {"protobuf"}
    assert {c.token for c in writes} <= {"write-token", "runner"}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[ConformanceRig]:
    with conformance_rig(tmp_path) as made:
        yield made


@pytest.mark.parametrize("job_type", ["noop", "noop-build", "noop-sync", "noop-deploy", "health-check"])
def test_operations_and_noop_jobs(rig: ConformanceRig, job_type: str) -> None:
    job, transcript = rig.run_job(job_type)
    assert job["status"] == "finished"
    check(job_type, transcript)


@pytest.mark.parametrize("job_type", ["sandbox-terraform"])
def test_terraform_plan_then_apply(rig: ConformanceRig, tmp_path: Path, job_type: str) -> None:
    require_tool("terraform")
    module = write_module(tmp_path / "mod", data_module(1))
    with rig.cp.operator() as operator:
        workspace = operator.create_workspace(f"tfw{job_type.replace('-', '')}")["id"]
    plan: dict[str, Any] = {
        "local_archive": {"local_archive": str(module)},
        "terraform_backend": {"WorkspaceID": workspace},
        "app_id": "app1",
        "app_config_id": "apc1",
    }
    if job_type == "terraform-deploy":
        backend = plan.pop("terraform_backend")
        plan = {**plan, "component_id": "cmp1", "terraform": {"terraform_backend": backend}}
    job, transcript = rig.run_job(job_type, plan, operation="create-apply-plan")
    assert job["status"] == "finished", job
    check(f"{job_type}:create-apply-plan", transcript)

    with rig.cp.operator() as operator:
        contents = operator.result(job["id"])["contents_gzip"]
    apply = {**plan, "apply_plan_contents": contents}
    job, transcript = rig.run_job(job_type, apply, operation="apply-plan")
    assert job["status"] == "finished", job
    check(f"{job_type}:apply-plan", transcript)


@pytest.mark.parametrize(
    ("job_type", "metadata", "expected"),
    [
        (
            "shut-down",
            {"shutdown_type": "force"},
            [
                CLAIM,
                patch("initializing"),
                patch("in-progress"),
                OPS_OUTPUTS,
                patch("cleaning-up"),
                RESULT_OK,
                patch("finished"),
                FINISH_JOB,
            ],
        ),
        (
            "shut-down",
            {"shutdown_type": "graceful"},
            [
                CLAIM,
                patch("initializing"),
                patch("in-progress"),
                OPS_OUTPUTS,
                patch("cleaning-up"),
                RESULT_OK,
                patch("finished"),
            ],
        ),
        (
            "update-version",
            {},
            [
                CLAIM,
                patch("initializing"),
                patch("in-progress"),
                OPS_OUTPUTS,
                patch("cleaning-up"),
                RESULT_OK,
                patch("finished"),
            ],
        ),
    ],
)
def test_jobs_that_end_the_runner(
    rig: ConformanceRig, job_type: str, metadata: dict[str, str], expected: list[Entry]
) -> None:
    """The reference's shut-down PATCHes the execution ``finished`` in cleanup and, when forced,
    the job too (``operations/shutdown/exec.go``); update-version reads settings in Fetch (left
    out here with the other settings reads) and exits."""
    name = f"{job_type}:{metadata.get('shutdown_type', '')}"
    EXPECTED[name] = expected
    job, transcript = rig.run_job(job_type, metadata=metadata)
    assert job["status"] == "finished", job
    check(name, transcript)
    rig.runner.wait_exit(timeout=60)


def test_registry_jobs(
    rig: ConformanceRig, tmp_path: Path, oci_registry: RegistryServer, git_server: GitServer
) -> None:
    """oci-sync, container-image-build, terraform-module-build, then terraform-deploy of the module
    it built (the registries are reached directly; only the API calls are in the record)."""
    import anyio

    host = oci_registry.host
    anyio.run(_push, host, "conf/app", "bld1")
    oci = {"RegistryType": "private_oci", "Repository": f"{host}/conf/app"}
    job, transcript = rig.run_job(
        "oci-sync",
        {
            "src_registry": oci,
            "src_tag": "bld1",
            "dst_registry": {**oci, "Repository": f"{host}/conf/install"},
            "dst_tag": "dpl1",
        },
    )
    assert job["status"] == "finished", job
    check("oci-sync", transcript)

    job, transcript = rig.run_job(
        "container-image-build",
        {
            "dst_registry": {**oci, "Repository": f"{host}/conf/build"},
            "dst_tag": "unused",
            "container_image_pull_plan": {
                "image": f"{host}/conf/app",
                "tag": "bld1",
                "repo_config": {"RegistryType": "public_oci", "Repository": f"{host}/conf/app"},
            },
        },
        owner_id="bldconf1",
    )
    assert job["status"] == "finished", job
    check("container-image-build", transcript)

    require_tool("terraform")
    url = git_server.create("conformance", data_module(1))
    modules = {**oci, "Repository": f"{host}/conf/module"}
    job, transcript = rig.run_job(
        "terraform-module-build",
        {"git_source": {"url": url, "ref": "main"}, "dst_registry": modules, "dst_tag": "bldmod1"},
        owner_id="bldmod1",
    )
    assert job["status"] == "finished", job
    check("terraform-module-build", transcript)

    with rig.cp.operator() as operator:
        workspace = operator.create_workspace("tfwconfdeploy")["id"]
    deploy = {
        "app_id": "app1",
        "app_config_id": "apc1",
        "component_id": "cmp1",
        "src_registry": modules,
        "src_tag": "bldmod1",
        "terraform": {"terraform_backend": {"WorkspaceID": workspace}},
    }
    job, transcript = rig.run_job("terraform-deploy", deploy, operation="create-apply-plan")
    assert job["status"] == "finished", job
    check("terraform-deploy:create-apply-plan", transcript)
    with rig.cp.operator() as operator:
        contents = operator.result(job["id"])["contents_gzip"]
    job, transcript = rig.run_job(
        "terraform-deploy", {**deploy, "apply_plan_contents": contents}, operation="apply-plan"
    )
    assert job["status"] == "finished", job
    check("terraform-deploy:apply-plan", transcript)


async def _push(host: str, repo: str, tag: str) -> None:
    async with RegistryClient(host) as client:
        await push_random_image(client, repo, tag, [20_000, 1234], seed="conformance")


RUN_PATH = "/v1/installs/{install_id}/action-workflows/runs/{run_id}"
CONFIG_PATH = "/v1/action-workflows/configs/{config_id}"
STEP_PATH = "/v1/installs/{install_id}/action-workflow-runs/{workflow_run_id}/steps/{step_id}"


def step_put(status: str) -> R:
    shape = "{status=in-progress}" if status == "in-progress" else f"{{execution_duration,status={status}}}"
    return R(f"PUT {STEP_PATH} {shape} [runner]")


#: The reference fetches the run and its config in Fetch, PUTs each step in-progress then
#: finished in Exec (``bins/runner/internal/jobs/actions/workflow/``) and writes no result.
EXPECTED["actions-workflow"] = [
    CLAIM,
    patch("initializing"),
    PLAN,
    R(f"GET {RUN_PATH} - [runner]"),
    R(f"GET {CONFIG_PATH} - [runner]"),
    patch("in-progress"),
    step_put("in-progress"),
    step_put("finished"),
    step_put("in-progress"),
    step_put("finished"),
    outputs("{outputs}"),
    patch("cleaning-up"),
    RESULT_OK,
    patch("finished"),
]


def test_actions_workflow(rig: ConformanceRig) -> None:
    from controlplane.workflow_file import parse_workflow

    spec = parse_workflow(
        {
            "steps": [
                {"name": "one", "inline_contents": 'echo a=1 >> "$NUON_ACTIONS_OUTPUT_FILEPATH"\n'},
                {"name": "two", "command": "true"},
            ]
        }
    )
    with rig.cp.operator() as operator:
        config = operator.json("POST", "/v1/action-workflows/configs", json=spec.config_body())
        run = operator.json(
            "POST", f"/v1/installs/{spec.install_id}/action-workflows/runs", json=spec.run_body(config["id"])
        )
    job, transcript = rig.run_job("actions-workflow", spec.plan(config, run))
    assert job["status"] == "finished", job
    check("actions-workflow", transcript)
