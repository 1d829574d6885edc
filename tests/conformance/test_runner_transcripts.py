"""Our runner's HTTP calls, job type by job type, against the reference's sequence (issue 10;
docs/runner-api.md §10).

A real ``runner run`` process talks to the embedded control plane through the recording proxy
(``tests/conformance/recorder.py``). Each job type's expected transcript is the reference
runner's sequence for it (``bins/runner/internal/pkg/jobloop/exec_job_steps.go`` and the
handlers in ``bins/runner/internal/jobs/``), written as ``R`` lines, plus our deliberate
differences as ``Ours`` lines that name the section of docs/runner-api.md saying why. A failure
prints both sequences as a diff.

Adding a handler: add its expected lines to ``EXPECTED`` and a case to the parametrisation (or
its own test when the job needs a registry or ends the runner);
``test_every_installed_job_type_has_a_transcript`` fails for a ``byoc_runner.handlers`` entry
point without one. The docker, kube and mng fixtures are the tiers' own (``conftest.py`` here).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest

from handlers.oci.client import RegistryClient
from tests.common.conftest import RecordingSts
from tests.conformance.recorder import RecordingProxy, Transcript, diff
from tests.conformance.rig import ConformanceRig, conformance_rig
from tests.docker.conftest import BASE_IMAGE, DockerEnv
from tests.kube.conftest import Cluster
from tests.mng.conftest import GOOD, NEXT
from tests.mng.harness import MngHarness
from tests.support.controlplane import ControlPlaneProcess
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
EXPECTED["helm-chart-build"] = BUILD


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


#: The reference's shut-down PATCHes the execution ``finished`` in cleanup and, when forced, the
#: job too (``operations/shutdown/exec.go``); update-version reads settings in Fetch (left out
#: here with the other settings reads) and exits.
ENDING: list[Entry] = [
    CLAIM,
    patch("initializing"),
    patch("in-progress"),
    OPS_OUTPUTS,
    patch("cleaning-up"),
    RESULT_OK,
    patch("finished"),
]
EXPECTED["shut-down:force"] = [*ENDING, FINISH_JOB]
EXPECTED["shut-down:graceful"] = ENDING
EXPECTED["update-version:"] = ENDING


@pytest.mark.parametrize(
    ("job_type", "metadata"),
    [
        ("shut-down", {"shutdown_type": "force"}),
        ("shut-down", {"shutdown_type": "graceful"}),
        ("update-version", {}),
    ],
)
def test_jobs_that_end_the_runner(rig: ConformanceRig, job_type: str, metadata: dict[str, str]) -> None:
    name = f"{job_type}:{metadata.get('shutdown_type', '')}"
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


# ----------------------------------------------------------------- job types added after the suite


def no_reference_handler(entries: list[Entry], why: str) -> list[Entry]:
    """A type the reference runner has no handler for: every line is ours (its jobloop's common
    steps, §10.1, are what ours makes), and the reference's sequence is empty."""
    return [Ours(e.line, why) if isinstance(e, R) else e for e in entries]


#: docker-build: the reference (``build/docker``) fetches the plan, builds with kaniko, copies to
#: the destination and POSTs the copy's result during execute, then its outputs (the image);
#: ours posts the result just before the final status (§4.3).
EXPECTED["docker-build"] = BUILD
#: fetch-image-metadata is ours (the reference has no such type): the plan, then the outputs.
EXPECTED["fetch-image-metadata"] = no_reference_handler(
    [
        CLAIM,
        patch("initializing"),
        PLAN,
        patch("in-progress"),
        outputs("{outputs}"),
        patch("cleaning-up"),
        RESULT_OK,
        patch("finished"),
    ],
    "§10.2 fetch-image-metadata has no handler in the reference",
)
#: kubernetes-manifest-build is ours (the newer API names it, the reference has no handler): the
#: plan, then the outputs, as fetch-image-metadata.
EXPECTED["kubernetes-manifest-build"] = no_reference_handler(
    [
        CLAIM,
        patch("initializing"),
        PLAN,
        patch("in-progress"),
        outputs("{outputs}"),
        patch("cleaning-up"),
        RESULT_OK,
        patch("finished"),
    ],
    "§10.2 kubernetes-manifest-build has no handler in the reference",
)
#: kubernetes-manifest-deploy (``deploy/kubernetes_manifest``): the plan and the app config in
#: Fetch; a plan op POSTs the compressed plan as the result during execute, an apply-plan its
#: result likewise; outputs (the diff) after. Ours posts the result just before the final status.
#: Ours reads the app config in prepare too (before in-progress), as the reference's Fetch does.
KUBE_APP_CONFIG = APP_CONFIG
KUBE_RESULT = f"POST {EXEC}/result {{contents_compressed,contents_display_compressed,success}} [runner]"
EXPECTED["kubernetes-manifest-deploy:create-apply-plan"] = [
    CLAIM,
    patch("initializing"),
    PLAN,
    KUBE_APP_CONFIG,
    patch("in-progress"),
    RefOnly(KUBE_RESULT),
    outputs("{outputs}"),
    patch("cleaning-up"),
    Ours(KUBE_RESULT, "§4.3 the result just before the final status"),
    patch("finished"),
]
EXPECTED["kubernetes-manifest-deploy:apply-plan"] = [
    CLAIM,
    patch("initializing"),
    PLAN,
    KUBE_APP_CONFIG,
    patch("in-progress"),
    RefOnly(KUBE_RESULT),
    outputs("{outputs}"),
    patch("cleaning-up"),
    Ours(KUBE_RESULT, "§4.3 the result just before the final status"),
    patch("finished"),
]
#: helm-chart-deploy (``deploy/helm``): like kubernetes-manifest-deploy, the plan and the app
#: config in Fetch (ours: prepare), the compressed plan as the result, outputs after.
EXPECTED["helm-chart-deploy:create-apply-plan"] = EXPECTED["kubernetes-manifest-deploy:create-apply-plan"]
EXPECTED["helm-chart-deploy:apply-plan"] = EXPECTED["kubernetes-manifest-deploy:apply-plan"]
#: helm-chart-deploy with ``storage_driver: nuon`` (docs/helm.md): the reference's embedded helm
#: calls its HTTP driver as it goes (a query of the release's history, 404 at first; a create at
#: pending-install, an update when deployed); ours lists the records once before helm runs and
#: writes back what helm changed after it.
HELM_RELEASES = "/v1/helm-releases/{helm_chart_id}/releases/{namespace}"
NUON_STAGE = Ours(
    f"GET {HELM_RELEASES} - [runner]",
    "docs/helm.md nuon: the records staged before helm runs",
    reference=f"GET {HELM_RELEASES}/query?name&owner - [runner]",
)
NUON_RECORD = "{chart,hooks,info,manifest,name,namespace,version}"
EXPECTED["helm-chart-deploy:nuon:create-apply-plan"] = [
    CLAIM,
    patch("initializing"),
    PLAN,
    KUBE_APP_CONFIG,
    patch("in-progress"),
    NUON_STAGE,
    RefOnly(KUBE_RESULT),
    outputs("{outputs}"),
    patch("cleaning-up"),
    Ours(KUBE_RESULT, "§4.3 the result just before the final status"),
    patch("finished"),
]
EXPECTED["helm-chart-deploy:nuon:apply-plan"] = [
    CLAIM,
    patch("initializing"),
    PLAN,
    KUBE_APP_CONFIG,
    patch("in-progress"),
    NUON_STAGE,
    Ours(
        f"POST {HELM_RELEASES}/{{key}} {NUON_RECORD} [runner]",
        "docs/helm.md nuon: the revision helm wrote, once it is final",
        reference=f"POST {HELM_RELEASES}/{{key}} {NUON_RECORD} [runner]",
    ),
    RefOnly(f"PUT {HELM_RELEASES}/{{key}} {NUON_RECORD} [runner]"),
    RefOnly(KUBE_RESULT),
    outputs("{outputs}"),
    patch("cleaning-up"),
    Ours(KUBE_RESULT, "§4.3 the result just before the final status"),
    patch("finished"),
]
#: job-deploy (``deploy/job``): the reference's Fetch does nothing and its Exec only logs that job
#: components are no longer supported (§12); ours reads the plan and runs its image as a Job.
EXPECTED["job-deploy:apply-plan"] = [
    CLAIM,
    patch("initializing"),
    Ours(PLAN.line, "docs/kubernetes.md job-deploy: ours runs the Job the plan describes"),
    patch("in-progress"),
    Ours(
        f"POST {EXEC}/outputs {{outputs}} [runner]",
        "docs/kubernetes.md job-deploy outputs",
        reference=f"POST {EXEC}/outputs {{}} [runner]",
    ),
    patch("cleaning-up"),
    RESULT_OK,
    patch("finished"),
]
#: Management jobs (``management/``) run under ``runner mng``: no plan. The reference's
#: mng-shut-down PATCHes the execution and the job ``finished`` in cleanup and exits; its
#: mng-runner-update-version reads settings in Fetch (left out with the other settings reads) and
#: PATCHes the execution ``finished`` in cleanup before it exits; its mng-vm-shut-down PATCHes the
#: execution ``finished`` in cleanup and, with ``shutdown_type: vm``, the job too before the
#: power-off. It has no handler for mng-runner-restart (a type of ctl-api only).
#: Ours say what they did (mode, version, running, held) in their outputs; the reference's are
#: ``{}``.
MNG_OUTPUTS = Ours(
    OPS_OUTPUTS.line,
    "§10.2 operations outputs (the mng-* jobs' too, which §10.2 does not list yet)",
    reference=OPS_OUTPUTS.reference,
)
MNG: list[Entry] = [
    CLAIM,
    patch("initializing"),
    patch("in-progress"),
    MNG_OUTPUTS,
    patch("cleaning-up"),
    RESULT_OK,
    patch("finished"),
]
EXPECTED["mng-runner-restart"] = no_reference_handler(
    MNG, "§10.2 mng-runner-restart has no handler in the reference"
)
EXPECTED["mng-runner-update-version"] = MNG
EXPECTED["mng-vm-shut-down:"] = MNG
EXPECTED["mng-vm-shut-down:vm"] = [*MNG, FINISH_JOB]
EXPECTED["mng-shut-down"] = [*MNG, FINISH_JOB]


def test_docker_build_and_fetch_image_metadata(
    tmp_path: Path, docker_env: DockerEnv, oci_registry: RegistryServer, git_server: GitServer
) -> None:
    """docker-build with dockerd (BuildKit CLI), then fetch-image-metadata of the image it pushed."""
    env = {
        "RUNNER_DOCKER_BUILDER": "docker",
        "RUNNER_DOCKER_CLI": docker_env.buildkit_cli,
        "DOCKER_HOST": docker_env.host,
    }
    url = git_server.create(
        "conformance-docker", {"Dockerfile": f"FROM {BASE_IMAGE}\nRUN echo hi > /hi.txt\n"}
    )
    repo = {"RegistryType": "private_oci", "Repository": f"{oci_registry.host}/conf/docker"}
    with conformance_rig(tmp_path, **env) as rig:
        job, transcript = rig.run_job(
            "docker-build",
            {"git_source": {"url": url, "ref": "main"}, "dst_registry": repo, "docker_build_plan": {}},
            owner_id="bldconfdocker",
            timeout=180,
        )
        assert job["status"] == "finished", job
        check("docker-build", transcript)

        job, transcript = rig.run_job("fetch-image-metadata", {"Registry": repo, "Tag": "bldconfdocker"})
        assert job["status"] == "finished", job
        check("fetch-image-metadata", transcript)


def test_kubernetes_manifest_deploy(tmp_path: Path, kube_cluster: Cluster) -> None:
    ns = f"conf-{uuid.uuid4().hex[:8]}"
    text = "\n---\n".join(
        json.dumps(d)
        for d in (
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}},
        )
    )
    plan: dict[str, Any] = {
        "app_id": "app1",
        "app_config_id": "apc1",
        "install_id": "inst1",
        "component_id": "cmp1",
        "kubernetes_manifest": {
            "namespace": ns,
            "manifest": text,
            "cluster_info": {"kube_config": kube_cluster.kubeconfig.read_text()},
        },
    }
    try:
        with conformance_rig(tmp_path, RUNNER_KUBE_POLL_INTERVAL="0.2") as rig:
            with rig.cp.operator() as operator:
                operator.request("PUT", "/v1/apps/app1/config/apc1", json={"component_ids": ["cmp1"]})
            job, transcript = rig.run_job("kubernetes-manifest-deploy", plan, operation="create-apply-plan")
            assert job["status"] == "finished", job
            check("kubernetes-manifest-deploy:create-apply-plan", transcript)
            with rig.cp.operator() as operator:
                contents = operator.result(job["id"])["contents_gzip"]
            job, transcript = rig.run_job(
                "kubernetes-manifest-deploy",
                {**plan, "apply_plan_contents": contents},
                operation="apply-plan",
            )
            assert job["status"] == "finished", job
            check("kubernetes-manifest-deploy:apply-plan", transcript)
    finally:
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


def test_job_deploy(tmp_path: Path, kube_cluster: Cluster) -> None:
    ns = f"conf-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", ns)
    plan: dict[str, Any] = {
        "job": {
            "image_url": "127.0.0.1:5000/conf/job",
            "tag": "1",
            "namespace": ns,
            "cluster_info": {"kube_config": kube_cluster.kubeconfig.read_text()},
        }
    }
    stop = threading.Event()

    def complete_jobs() -> None:
        """Play the job controller (no kubelet here): mark the runner's Job Complete."""
        status = json.dumps(
            {
                "status": {
                    "conditions": [{"type": "Complete", "status": "True"}],
                    "startTime": "2026-01-01T00:00:00Z",
                }
            }
        )
        while not stop.is_set():
            names = kube_cluster.kubectl("get", "jobs", "-n", ns, "-o", "name").split()
            for name in names:
                kube_cluster.kubectl(
                    "patch", name, "-n", ns, "--subresource=status", "--type=merge", "-p", status
                )
            if names:
                return
            stop.wait(0.2)

    helper = threading.Thread(target=complete_jobs, daemon=True)
    try:
        with conformance_rig(tmp_path, RUNNER_KUBE_POLL_INTERVAL="0.2") as rig:
            helper.start()
            job, transcript = rig.run_job("job-deploy", plan, operation="apply-plan")
            assert job["status"] == "finished", job
            check("job-deploy:apply-plan", transcript)
    finally:
        stop.set()
        helper.join(timeout=10)
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


def test_helm_chart_build(
    rig: ConformanceRig, tmp_path: Path, oci_registry: RegistryServer, git_server: GitServer
) -> None:
    from tests.helm.conftest import registry_config, write_chart

    require_tool("helm")
    chart = write_chart(tmp_path / "chart-src")
    files = {str(p.relative_to(chart.parent)): p.read_text() for p in chart.rglob("*") if p.is_file()}
    url = git_server.create("conformance-helm", files)
    job, transcript = rig.run_job(
        "helm-chart-build",
        {
            "git_source": {"url": url, "ref": "main", "path": "demo"},
            "dst_registry": registry_config(oci_registry, "conf/helm-build"),
            "helm_build_plan": {},
        },
        owner_id="bldconfhelm",
    )
    assert job["status"] == "finished", job
    check("helm-chart-build", transcript)


def test_kubernetes_manifest_build(
    rig: ConformanceRig, oci_registry: RegistryServer, git_server: GitServer
) -> None:
    ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: conf\n"
    url = git_server.create("conformance-kube-build", {"deploy/ns.yaml": ns})
    job, transcript = rig.run_job(
        "kubernetes-manifest-build",
        {
            "git_source": {"url": url, "ref": "main", "path": "deploy"},
            "dst_registry": {
                "RegistryType": "private_oci",
                "Repository": f"{oci_registry.host}/conf/kube-build",
            },
        },
        owner_id="bldconfkube",
    )
    assert job["status"] == "finished", job
    check("kubernetes-manifest-build", transcript)


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ({}, "helm-chart-deploy"),
        ({"storage_driver": "nuon", "helm_chart_id": "hc-conf"}, "helm-chart-deploy:nuon"),
    ],
    ids=["secret", "nuon"],
)
def test_helm_chart_deploy(
    tmp_path: Path,
    kube_cluster: Cluster,
    oci_registry: RegistryServer,
    storage: dict[str, str],
    expected: str,
) -> None:
    from tests.helm.conftest import package_chart, push_chart_artifact, registry_config, write_chart

    ns = f"conf-{uuid.uuid4().hex[:8]}"
    helm = require_tool("helm")
    art = package_chart(helm, write_chart(tmp_path / "src"), tmp_path / "chart")
    anyio.run(push_chart_artifact, art, oci_registry, "conf/helm", "bldconfhelm")
    plan: dict[str, Any] = {
        "app_id": "app1",
        "app_config_id": "apc1",
        "install_id": "inst1",
        "component_id": "cmp1",
        "src_registry": registry_config(oci_registry, "conf/helm"),
        "src_tag": "bldconfhelm",
        "helm": {
            "name": "conf",
            "namespace": ns,
            "create_namespace": True,
            "cluster_info": {"kube_config": kube_cluster.kubeconfig.read_text()},
            **storage,
        },
    }
    try:
        with conformance_rig(tmp_path) as rig:
            with rig.cp.operator() as operator:
                operator.request("PUT", "/v1/apps/app1/config/apc1", json={"component_ids": ["cmp1"]})
            job, transcript = rig.run_job("helm-chart-deploy", plan, operation="create-apply-plan")
            assert job["status"] == "finished", job
            check(f"{expected}:create-apply-plan", transcript)
            with rig.cp.operator() as operator:
                contents = operator.result(job["id"])["contents_gzip"]
            job, transcript = rig.run_job(
                "helm-chart-deploy", {**plan, "apply_plan_contents": contents}, operation="apply-plan"
            )
            assert job["status"] == "finished", job
            check(f"{expected}:apply-plan", transcript)
    finally:
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


#: sandbox-sync-secrets (``sandbox/sync_secrets``): the plan in Fetch, the values read and written
#: during Exec (AWS and the cluster, not the control plane), then its outputs (one entry per
#: secret). Ours posts ``{success}`` just before the final status (§4.3).
EXPECTED["sandbox-sync-secrets"] = [
    CLAIM,
    patch("initializing"),
    PLAN,
    patch("in-progress"),
    outputs("{outputs}"),
    patch("cleaning-up"),
    RESULT_OK,
    patch("finished"),
]


def test_sandbox_sync_secrets(tmp_path: Path, kube_cluster: Cluster, sts: RecordingSts) -> None:
    ns = f"conf-{uuid.uuid4().hex[:8]}"
    arn = boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=sts.url,
        aws_access_key_id="AKIASETUP00000000001",
        aws_secret_access_key="setup",
    ).create_secret(Name=f"conf/{ns}", SecretString="conformance-value")["ARN"]
    plan = {
        "kubernetes_secrets": [
            {"secret_arn": arn, "secret_name": "s", "namespace": ns, "name": "s", "key_name": "v"}
        ],
        "cluster_info": {"kube_config": kube_cluster.kubeconfig.read_text()},
        "aws_auth": {"static": {"access_key_id": "AKIACONFORMANCE00001", "secret_access_key": "conf-secret"}},
    }
    try:
        with conformance_rig(tmp_path, RUNNER_AWS_ENDPOINT_URL=sts.url) as rig:
            job, transcript = rig.run_job("sandbox-sync-secrets", plan)
            assert job["status"] == "finished", job
            check("sandbox-sync-secrets", transcript)
    finally:
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


@dataclass
class MngRig:
    """``runner mng`` (tests/mng's harness) with its API calls through the recording proxy; the
    workload it supervises talks to the control plane directly and is not in the record."""

    harness: MngHarness
    proxy: RecordingProxy

    def run_job(
        self, job_type: str, *, timeout: float = 120.0, **fields: Any
    ) -> tuple[dict[str, Any], Transcript]:
        start = len(self.proxy.snapshot())
        done = self.harness.wait_job(self.harness.submit(job_type, **fields), timeout=timeout)
        time.sleep(0.3)
        return done, Transcript(self.proxy.snapshot()[start:])


@contextmanager
def mng_rig(factory: Callable[..., MngHarness], cp: ControlPlaneProcess, **env: Any) -> Iterator[MngRig]:
    harness = factory(**env)
    token = harness.mng_token_file.read_text().strip()
    with RecordingProxy(cp.url, runner_token=token, admin_token=cp.admin_token) as proxy:
        harness.start(RUNNER_API_URL=proxy.url)
        harness.wait_mng_ready()
        harness.wait_workload_ready()
        yield MngRig(harness, proxy)


def test_management_jobs(mng_factory: Callable[..., MngHarness], mng_cp: ControlPlaneProcess) -> None:
    """Restart, update to another version, a vm-shut-down that is not ``vm`` (the workload
    stops, mng stays), mng-shut-down (mng exits); then on a second mng a ``vm`` vm-shut-down
    (mng exits and runs its power-off command, ``true`` here)."""
    jobs: list[tuple[str, dict[str, Any], str]] = [
        ("mng-runner-restart", {}, "mng-runner-restart"),
        ("mng-runner-update-version", {"metadata": {"version": NEXT}}, "mng-runner-update-version"),
        ("mng-vm-shut-down", {}, "mng-vm-shut-down:"),
        ("mng-shut-down", {}, "mng-shut-down"),
    ]
    with mng_rig(mng_factory, mng_cp, installed=(GOOD, NEXT)) as rig:
        for job_type, fields, name in jobs:
            job, transcript = rig.run_job(job_type, **fields)
            assert job["status"] == "finished", (job, rig.harness.tail())
            check(name, transcript)
        assert rig.harness.wait_exit(30) == 0

    with mng_rig(mng_factory, mng_cp) as rig:
        job, transcript = rig.run_job("mng-vm-shut-down", metadata={"shutdown_type": "vm"})
        assert job["status"] == "finished", (job, rig.harness.tail())
        check("mng-vm-shut-down:vm", transcript)
        assert rig.harness.wait_exit(30) == 0


def test_every_installed_job_type_has_a_transcript() -> None:
    """Each ``byoc_runner.handlers`` entry point has an expected transcript here (by type, or
    ``type:operation``/``type:variant``), so a new handler cannot go unrecorded."""
    from importlib.metadata import entry_points

    installed = {e.name for e in entry_points(group="byoc_runner.handlers")}
    assert installed, "no byoc_runner.handlers entry points: is the package installed (pip install -e .)?"
    covered = {name.split(":", 1)[0] for name in EXPECTED}
    missing = sorted(installed - covered)
    assert not missing, f"job types with a handler but no conformance transcript: {missing}"
