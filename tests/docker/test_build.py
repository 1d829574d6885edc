"""docker-build end to end: the real control plane, a real ``runner run`` process, real dockerd
(scripts/services.sh) or podman, a real registry, and the pushed image read back layer by layer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.docker.conftest import BASE_IMAGE, DockerEnv, PodmanEnv
from tests.docker.support import (
    failure,
    has_tag,
    layers_contain,
    log_text,
    outputs_of,
    read_pushed_image,
    run_job,
)
from tests.support.registry import PASSWORD, USER, RegistryServer, skopeo_raw_digest
from tests.support.terraform import GitServer

pytestmark = [pytest.mark.docker, pytest.mark.integration]

SECRET = "tok-SEKRIT-" + uuid.uuid4().hex[:12]
MULTI_STAGE = f"""\
FROM {BASE_IMAGE} AS base
ARG GREETING=unset
ARG FROM_ENV=unset
RUN echo "greeting=$GREETING from_env=$FROM_ENV" > /greeting.txt

FROM base AS with-secret
RUN --mount=type=secret,id=api_token cat /run/secrets/api_token | wc -c | tr -d ' ' > /secret-length.txt

FROM with-secret AS final
COPY app.txt /app.txt

FROM final AS never-built
RUN echo this stage is after the target && exit 7
"""


@pytest.fixture(params=["docker", "podman"])
def builder_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The runner's RUNNER_DOCKER_* for each builder (a fixture per builder, so each is its tier)."""
    if request.param == "docker":
        docker: DockerEnv = request.getfixturevalue("docker_env")
        return {
            "RUNNER_DOCKER_BUILDER": "docker",
            "RUNNER_DOCKER_CLI": docker.buildkit_cli,
            "DOCKER_HOST": docker.host,
        }
    podman: PodmanEnv = request.getfixturevalue("podman_env")
    return {"RUNNER_DOCKER_BUILDER": "podman", "RUNNER_DOCKER_PODMAN_ROOT": str(podman.root)}


def _start(factory: Callable[..., Any], env: dict[str, str]) -> Any:
    return factory(FROM_ENV="from-runner-env", RUNNER_CHILD_GRACE="3", **env)


def test_multi_stage_target_build_args_secret_and_outside_dockerfile(
    builder_env: dict[str, str],
    runner_process_factory: Callable[..., Any],
    operator: Any,
    git_server: GitServer,
    oci_registry: RegistryServer,
) -> None:
    _start(runner_process_factory, builder_env)
    kind = builder_env["RUNNER_DOCKER_BUILDER"]
    url = git_server.create("multi", {"svc/app/app.txt": "hello app\n", "svc/docker/Dockerfile": MULTI_STAGE})
    repo = f"e2e/{kind}-multi"
    plan = {
        "git_source": {"url": url, "ref": "main", "path": "svc"},
        "dst_registry": {"RegistryType": "private_oci", "Repository": f"{oci_registry.host}/{repo}"},
        "docker_build_plan": {
            "context": "app",
            "dockerfile": "../docker/Dockerfile",  # outside the context: copied in for the build
            "target": "final",
            "build_args": {"GREETING": "hello", "FROM_ENV": None, "NOT_IN_ENV": None},
            "secrets": {"api_token": SECRET},
            "labels": {"team": "payments", "vnd.byoc-runner.job-id": "forged"},
        },
    }
    job = run_job(operator, "docker-build", plan, owner_id="bld-multi-1")
    logs = log_text(operator, job)
    assert job["status"] == "finished", json.dumps(failure(operator, job))[:3000] + logs[-3000:]

    image = outputs_of(operator, job["id"])["image"]
    assert image["tag"] == "bld-multi-1"
    assert image["repository"] == f"{oci_registry.host}/{repo}"
    assert image["digest"] == skopeo_raw_digest(f"{oci_registry.host}/{repo}:bld-multi-1")

    config, layers, files = read_pushed_image(oci_registry.host, repo, "bld-multi-1")
    assert files["greeting.txt"] == b"greeting=hello from_env=from-runner-env\n"
    assert files["secret-length.txt"].strip() == str(len(SECRET)).encode()  # the mount was there
    assert files["app.txt"] == b"hello app\n"
    assert not layers_contain(layers, SECRET.encode()), "the secret is in a layer"
    assert SECRET not in json.dumps(config), "the secret is in the image config or history"
    labels = config["config"]["Labels"]
    assert labels["team"] == "payments"
    assert labels["vnd.byoc-runner.job-id"] == job["id"]
    assert labels["org.opencontainers.image.revision"]

    assert f"builder: {kind}" in logs
    assert "this stage is after the target" not in logs
    assert SECRET not in logs
    assert "build args not set in the environment" in logs
    assert "NOT_IN_ENV" in logs
    assert ("Pushed" in logs) or ("Copying blob" in logs)


def test_a_context_that_escapes_the_workspace_is_refused(
    docker_env: DockerEnv,
    runner_process_factory: Callable[..., Any],
    operator: Any,
    git_server: GitServer,
    oci_registry: RegistryServer,
) -> None:
    _start(
        runner_process_factory, {"RUNNER_DOCKER_CLI": docker_env.buildkit_cli, "DOCKER_HOST": docker_env.host}
    )
    url = git_server.create("escape", {"Dockerfile": f"FROM {BASE_IMAGE}\n"})
    plan = {
        "git_source": {"url": url, "ref": "main"},
        "dst_registry": {"RegistryType": "private_oci", "Repository": f"{oci_registry.host}/e2e/escape"},
        "docker_build_plan": {"context": "../../../../etc"},
    }
    job = run_job(operator, "docker-build", plan, owner_id="bld-escape")
    assert job["status"] == "failed"
    meta = failure(operator, job)
    assert "docker_build_plan.context '../../../../etc' leads outside the source checkout" in meta["message"]
    assert "leads outside the source checkout" in log_text(operator, job)
    assert not has_tag(oci_registry.host, "e2e/escape", "bld-escape")


def test_a_failing_run_fails_the_job_with_the_builders_message_and_exit_code(
    builder_env: dict[str, str],
    runner_process_factory: Callable[..., Any],
    operator: Any,
    git_server: GitServer,
    oci_registry: RegistryServer,
) -> None:
    _start(runner_process_factory, builder_env)
    url = git_server.create("fails", {"Dockerfile": f"FROM {BASE_IMAGE}\nRUN echo boom-marker && exit 3\n"})
    plan = {
        "git_source": {"url": url, "ref": "main"},
        "dst_registry": {"RegistryType": "private_oci", "Repository": f"{oci_registry.host}/e2e/fails"},
        "docker_build_plan": {},
    }
    job = run_job(operator, "docker-build", plan, owner_id="bld-fails")
    assert job["status"] == "failed"
    meta = failure(operator, job)
    assert meta["message"].startswith("docker-build failed: ")
    assert "boom-marker && exit 3" in meta["message"]
    assert meta["exit_code"] in (3, "3")
    assert "boom-marker" in log_text(operator, job)
    assert not has_tag(oci_registry.host, "e2e/fails", "bld-fails")


def _marker_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_cancel_mid_build_stops_the_builder_and_pushes_nothing(
    tmp_path: Path,
    builder_env: dict[str, str],
    runner_process_factory: Callable[..., Any],
    operator: Any,
    git_server: GitServer,
    oci_registry: RegistryServer,
) -> None:
    _start(runner_process_factory, builder_env)
    seconds = 900 + int(uuid.uuid4().int % 99)  # a sleep length no other process has: the marker
    url = git_server.create(
        "slow", {"Dockerfile": f"FROM {BASE_IMAGE}\nRUN echo started && sleep {seconds}\n"}
    )
    plan = {
        "git_source": {"url": url, "ref": "main"},
        "dst_registry": {"RegistryType": "private_oci", "Repository": f"{oci_registry.host}/e2e/slow"},
        "docker_build_plan": {},
    }
    job = operator.submit("docker-build", plan=plan, owner_id="bld-slow")
    try:
        deadline = time.monotonic() + 120
        while not _marker_processes(f"sleep {seconds}"):
            assert time.monotonic() < deadline, "the RUN step never started"
            assert operator.get_job(job["id"])["status"] not in ("failed", "finished")
            time.sleep(0.2)
    finally:
        operator.cancel(job["id"])  # also when the wait failed: leave no build running
    done = operator.wait_job(job["id"], ("cancelled", "failed", "finished"), timeout=60)
    assert done["status"] == "cancelled"
    # The control plane marks the job and its execution cancelled at once; the runner then stops
    # the build: SIGINT to the builder's process group, RUNNER_CHILD_GRACE (3 s), SIGKILL.
    deadline = time.monotonic() + 30
    while True:
        left = _marker_processes(f"sleep {seconds}") + [
            p for p in _marker_processes(f"{tmp_path}/runner-") if p.info["cmdline"][:1] != ["git"]
        ]
        if not left:
            break
        assert time.monotonic() < deadline, [" ".join(p.info["cmdline"])[:300] for p in left]
        time.sleep(0.2)
    assert not has_tag(oci_registry.host, "e2e/slow", "bld-slow")


def test_plan_secrets_are_refused_by_a_builder_without_buildkit(
    docker_env: DockerEnv,
    runner_process_factory: Callable[..., Any],
    operator: Any,
    git_server: GitServer,
    oci_registry: RegistryServer,
) -> None:
    """The docker CLI first on PATH here is a 28.x client without buildx: the legacy builder."""
    legacy = docker_env.run("buildx", "version", cli=docker_env.path_cli, check=False).returncode != 0
    if not legacy:
        pytest.skip(f"{docker_env.path_cli} has buildx: no legacy builder on this machine")
    _start(runner_process_factory, {"RUNNER_DOCKER_CLI": docker_env.path_cli, "DOCKER_HOST": docker_env.host})
    url = git_server.create("legacy", {"Dockerfile": f"FROM {BASE_IMAGE}\nRUN echo legacy > /l.txt\n"})
    base = {
        "git_source": {"url": url, "ref": "main"},
        "dst_registry": {"RegistryType": "private_oci", "Repository": f"{oci_registry.host}/e2e/legacy"},
    }
    job = run_job(
        operator, "docker-build", {**base, "docker_build_plan": {"secrets": {"t": SECRET}}}, owner_id="l1"
    )
    assert job["status"] == "failed"
    assert "cannot mount them" in failure(operator, job)["message"]
    ok = run_job(operator, "docker-build", {**base, "docker_build_plan": {}}, owner_id="l2")
    assert ok["status"] == "finished", json.dumps(failure(operator, ok))[:2000]
    assert "(legacy builder)" in log_text(operator, ok)
    assert has_tag(oci_registry.host, "e2e/legacy", "l2")


def test_sandbox_mode_fakes_a_docker_build(runner_process_factory: Callable[..., Any], operator: Any) -> None:
    """Sandbox mode (contract): no source, no builder, no registry; outputs from the plan."""
    operator.patch_settings(sandbox_mode=True)
    runner_process_factory(
        RUNNER_SANDBOX_JOB_DURATION="0.3", RUNNER_DOCKER_BUILDER="podman", RUNNER_DOCKER_PODMAN="/nonexistent"
    )
    fake = {"image": {"tag": "bld-sbx", "digest": "sha256:" + "0" * 64, "repository": "reg/app"}}
    plan = {
        "git_source": {"url": "git://127.0.0.1:9/none", "ref": "main"},
        "dst_registry": {"RegistryType": "private_oci", "Repository": "127.0.0.1:9/app"},
        "docker_build_plan": {},
        "sandbox_mode": {"enabled": True, "outputs": fake},
    }
    done = run_job(operator, "docker-build", plan, owner_id="bld-sbx", timeout=60)
    assert done["status"] == "finished"
    assert done["outputs"] == fake
    logs = log_text(operator, done)
    assert "sandbox mode" in logs
    assert "builder:" not in logs


@pytest.mark.parametrize("auth", ["basic", "bearer", "ecr"])
def test_push_authenticates_with_basic_bearer_and_ecr_credentials(
    auth: str,
    builder_env: dict[str, str],
    runner_process_factory: Callable[..., Any],
    operator: Any,
    git_server: GitServer,
    request: pytest.FixtureRequest,
) -> None:
    """The registry config's credentials, resolved by handlers.oci (ECR through moto), reach the
    builder's push only through the job's private auth file, and are masked in the job log."""
    env = dict(builder_env)
    if auth == "basic":
        server: RegistryServer = request.getfixturevalue("oci_basic_registry")
        user, password = USER, PASSWORD
        registry = {"RegistryType": "private_oci", "OCIAuth": {"Username": user, "Password": password}}
    elif auth == "bearer":
        server = request.getfixturevalue("oci_token_registry")
        user, password = USER, PASSWORD
        registry = {"RegistryType": "private_oci", "OCIAuth": {"Username": user, "Password": password}}
    else:
        moto = request.getfixturevalue("moto_ecr")
        server = request.getfixturevalue("oci_ecr_registry")
        user, password = "AWS", server.users["AWS"]
        env["RUNNER_AWS_ENDPOINT_URL"] = moto.url
        static = {"access_key_id": "AKIAEXAMPLEKEY000001", "secret_access_key": "secret-key-for-the-test"}
        registry = {"RegistryType": "ecr", "Region": "us-east-1", "ECRAuth": {"static": static}}
    _start(runner_process_factory, env)
    kind = builder_env["RUNNER_DOCKER_BUILDER"]
    url = git_server.create("auth", {"Dockerfile": f"FROM {BASE_IMAGE}\nRUN echo {auth} > /auth.txt\n"})
    repo = f"e2e/{kind}-{auth}"
    plan = {
        "git_source": {"url": url, "ref": "main"},
        "dst_registry": {**registry, "Repository": f"{server.host}/{repo}"},
        "docker_build_plan": {},
    }
    job = run_job(operator, "docker-build", plan, owner_id=f"bld-{auth}")
    logs = log_text(operator, job)
    assert job["status"] == "finished", json.dumps(failure(operator, job))[:3000] + logs[-3000:]
    image = outputs_of(operator, job["id"])["image"]
    assert image["digest"] == skopeo_raw_digest(
        f"{server.host}/{repo}:bld-{auth}", creds=f"{user}:{password}"
    )
    assert password not in logs
    assert "secret-key-for-the-test" not in logs


def test_auto_takes_podman_when_no_dockerd_answers_and_says_so(
    podman_env: PodmanEnv,
    runner_process_factory: Callable[..., Any],
    operator: Any,
    git_server: GitServer,
    oci_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    """The in-pod case: no DinD sidecar, so ``auto`` builds with podman."""
    _start(
        runner_process_factory,
        {
            "RUNNER_DOCKER_BUILDER": "auto",
            "RUNNER_DOCKER_HOST": f"unix://{tmp_path}/no-dockerd.sock",
            "RUNNER_DOCKER_PODMAN_ROOT": str(podman_env.root),
        },
    )
    url = git_server.create("auto", {"Dockerfile": f"FROM {BASE_IMAGE}\nRUN echo auto > /auto.txt\n"})
    plan = {
        "git_source": {"url": url, "ref": "main"},
        "dst_registry": {"RegistryType": "private_oci", "Repository": f"{oci_registry.host}/e2e/auto"},
        "docker_build_plan": {},
    }
    job = run_job(operator, "docker-build", plan, owner_id="bld-auto")
    logs = log_text(operator, job)
    assert job["status"] == "finished", json.dumps(failure(operator, job))[:3000] + logs[-3000:]
    assert "builder: podman" in logs
    assert f"auto: no dockerd (dockerd at unix://{tmp_path}/no-dockerd.sock did not answer" in logs
    _, _, files = read_pushed_image(oci_registry.host, "e2e/auto", "bld-auto")
    assert files["auto.txt"] == b"auto\n"
