"""The docker family's pure decisions: paths, build args, labels, builder choice, output, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handlers.docker.buildargs import build_arg_flags, image_labels, label_flags, write_secret_files
from handlers.docker.builder import (
    Builder,
    BuildSpec,
    Probe,
    choose_builder,
    docker_has_buildkit,
    parse_docker_version,
)
from handlers.docker.metadata import image_summary, is_attestation, metadata_outputs
from handlers.docker.output import build_failure, classify
from handlers.docker.paths import (
    BuildPathError,
    place_dockerfile,
    remove_dockerfile_copy,
    resolve_build_paths,
)
from handlers.docker.settings import docker_settings
from handlers.oci.descriptors import Descriptor, Manifest
from runner.api.plans import BuildPlan, FetchImageMetadataPlan, decode_plan
from runner.sdk import HandlerError

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------- paths


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "svc" / "app").mkdir(parents=True)
    (root / "svc" / "app" / "Dockerfile").write_text("FROM scratch\n")
    (root / "docker").mkdir()
    (root / "docker" / "Dockerfile").write_text("FROM scratch\n")
    (root / "docker" / "Dockerfile.dockerignore").write_text("*.log\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "Dockerfile").write_text("FROM scratch\n")
    return root


def test_context_is_the_source_path_joined_with_context(checkout: Path) -> None:
    paths = resolve_build_paths(checkout, checkout / "svc", "app", "")
    assert paths.context == (checkout / "svc" / "app").resolve()
    assert paths.dockerfile == paths.context / "Dockerfile"
    assert paths.copy_from is None


def test_empty_context_is_the_source_path(checkout: Path) -> None:
    paths = resolve_build_paths(checkout, checkout / "svc" / "app", "", "Dockerfile")
    assert paths.context == (checkout / "svc" / "app").resolve()


def test_dockerfile_outside_the_context_is_copied_in_and_removed(checkout: Path) -> None:
    paths = resolve_build_paths(checkout, checkout / "svc", "app", "../../docker/Dockerfile")
    assert paths.copy_from == (checkout / "docker" / "Dockerfile").resolve()
    assert paths.dockerfile.parent == paths.context
    assert paths.dockerfile.name.startswith("Dockerfile.byoc-")
    assert not paths.dockerfile.exists()
    place_dockerfile(paths)
    assert paths.dockerfile.read_text() == "FROM scratch\n"
    ignore = paths.dockerfile.with_name(paths.dockerfile.name + ".dockerignore")
    assert ignore.read_text() == "*.log\n"
    remove_dockerfile_copy(paths)
    remove_dockerfile_copy(paths)  # idempotent
    assert not paths.dockerfile.exists()
    assert not ignore.exists()
    assert (checkout / "docker" / "Dockerfile").exists()


@pytest.mark.parametrize(
    ("context", "dockerfile", "message"),
    [
        ("../..", "", "context '../..' leads outside"),
        ("/etc", "", "must be a relative path"),
        ("app", "../../../outside/Dockerfile", "leads outside the source checkout"),
        ("app", "/etc/passwd", "must be a relative path"),
        ("nope", "", "is not a directory"),
        ("app", "Missing.Dockerfile", "not found"),
    ],
)
def test_escapes_and_missing_paths_are_refused(
    checkout: Path, context: str, dockerfile: str, message: str
) -> None:
    with pytest.raises(BuildPathError, match=message):
        resolve_build_paths(checkout, checkout / "svc", context, dockerfile)


def test_a_symlink_leading_out_is_refused(checkout: Path) -> None:
    (checkout / "svc" / "link").symlink_to(checkout.parent / "outside")
    with pytest.raises(BuildPathError, match="leads outside"):
        resolve_build_paths(checkout, checkout / "svc", "link", "")


# --------------------------------------------------------------------------- build args, labels, secrets


def test_build_args_values_and_values_from_the_environment() -> None:
    args = build_arg_flags(
        {"B": "2", "A": "x=y", "FROM_ENV": None, "ABSENT": None}, {"FROM_ENV": "env-value", "OTHER": "z"}
    )
    assert args.flags == ["--build-arg", "A=x=y", "--build-arg", "B=2", "--build-arg", "FROM_ENV"]
    assert args.env == {"FROM_ENV": "env-value"}  # the value reaches the builder's env, not argv
    assert args.missing == ["ABSENT"]


def test_build_args_refuse_bad_names_and_the_runners_own_settings() -> None:
    with pytest.raises(HandlerError, match="not a valid variable name"):
        build_arg_flags({"BAD-NAME": "1"}, {})
    with pytest.raises(HandlerError, match="runner's own setting"):
        build_arg_flags({"RUNNER_API_TOKEN": None}, {"RUNNER_API_TOKEN": "t"})
    assert build_arg_flags(None, {}).flags == []


def test_labels_are_the_plans_plus_ours_and_ours_win() -> None:
    labels = image_labels(
        {"team": "a", "vnd.byoc-runner.job-id": "forged", "org.opencontainers.image.revision": "plan"},
        {"vnd.byoc-runner.job-id": "job1", "org.opencontainers.image.revision": "abc", "empty": ""},
    )
    assert labels == {
        "team": "a",
        "vnd.byoc-runner.job-id": "job1",
        "org.opencontainers.image.revision": "abc",
    }
    assert label_flags({"b": "2", "a": "1"}) == ["--label", "a=1", "--label", "b=2"]


def test_secrets_are_private_files_named_by_id(tmp_path: Path) -> None:
    flags = write_secret_files({"npm_token": "s3cret"}, tmp_path / "secrets")
    path = tmp_path / "secrets" / "npm_token"
    assert flags == ["--secret", f"id=npm_token,src={path}"]
    assert path.read_text() == "s3cret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert "s3cret" not in " ".join(flags)
    with pytest.raises(HandlerError, match="not valid"):
        write_secret_files({"../x": "v"}, tmp_path / "s2")


# --------------------------------------------------------------------------- builder choice


DOCKER = Probe(docker_cli=True, docker_daemon=True, docker_client_version="20.10.24")
PODMAN = Probe(
    podman=True, podman_version="4.3.1", docker_detail="dockerd at unix:///x did not answer: refused"
)
BOTH = Probe(docker_cli=True, docker_daemon=True, podman=True)
NONE = Probe(docker_detail="no docker CLI", podman_detail="not found")


@pytest.mark.parametrize(
    ("setting", "probe", "kind", "why"),
    [
        ("auto", DOCKER, "docker", "auto: dockerd answered"),
        ("auto", BOTH, "docker", "auto: dockerd answered"),
        ("auto", PODMAN, "podman", "auto: no dockerd (dockerd at unix:///x did not answer: refused)"),
        ("docker", BOTH, "docker", "RUNNER_DOCKER_BUILDER=docker"),
        ("podman", BOTH, "podman", "RUNNER_DOCKER_BUILDER=podman"),
    ],
)
def test_builder_choice(setting: str, probe: Probe, kind: str, why: str) -> None:
    assert choose_builder(setting, probe) == (kind, why)


@pytest.mark.parametrize(
    ("setting", "probe", "message"),
    [
        ("docker", PODMAN, "RUNNER_DOCKER_BUILDER=docker but dockerd is not usable: dockerd at unix:///x"),
        ("podman", DOCKER, "RUNNER_DOCKER_BUILDER=podman but podman is not usable: not found"),
        ("auto", NONE, "no container builder: dockerd is not usable \\(no docker CLI\\)"),
    ],
)
def test_builder_choice_failures_say_why(setting: str, probe: Probe, message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        choose_builder(setting, probe)


@pytest.mark.parametrize(
    ("version", "buildx", "expected"),
    [("20.10.24+dfsg1", False, True), ("28.2.2", False, False), ("28.2.2", True, True), ("", False, False)],
)
def test_buildkit_comes_from_buildx_or_a_20_to_22_cli(version: str, buildx: bool, expected: bool) -> None:
    assert docker_has_buildkit(version, buildx) is expected


def test_docker_version_parsing() -> None:
    doc = {"Client": {"Version": "28.2.2"}, "Server": {"Version": "20.10.24"}}
    assert parse_docker_version(json.dumps(doc).encode()) == ("28.2.2", "20.10.24")
    assert parse_docker_version(b'{"Client": {"Version": "28.2.2"}, "Server": null}') == ("28.2.2", "")
    assert parse_docker_version(b"garbage") == ("", "")


def test_build_command_lines(tmp_path: Path) -> None:
    spec = BuildSpec(
        context=tmp_path,
        dockerfile=tmp_path / "Dockerfile",
        tags=["reg/app:b1"],
        iidfile=tmp_path / "iid",
        target="final",
        network="host",
        flags=["--build-arg", "A=1"],
    )
    podman = Builder("podman", ("podman", "--storage-driver=vfs"), "4.3.1", False)
    argv = podman.build_argv(spec)
    assert argv[:3] == ["podman", "--storage-driver=vfs", "build"]
    assert argv[argv.index("--isolation") + 1] == "chroot"
    assert argv[argv.index("--target") + 1] == "final"
    assert argv[-1] == str(tmp_path)
    assert podman.env == {"BUILDAH_ISOLATION": "chroot"}
    push = podman.push_argv(
        "reg/app:b1", auth_file=tmp_path / "a.json", tls_verify=False, digest_file=tmp_path / "d"
    )
    assert "--tls-verify=false" in push
    assert push[push.index("--authfile") + 1] == str(tmp_path / "a.json")
    docker = Builder("docker", ("docker", "--config", "/c"), "20.10.24", True)
    assert "--progress" in docker.build_argv(spec)
    assert docker.env == {"DOCKER_BUILDKIT": "1"}
    assert docker.push_argv("reg/app:b1", auth_file=None, tls_verify=True, digest_file=tmp_path / "d") == [
        "docker",
        "--config",
        "/c",
        "push",
        "reg/app:b1",
    ]
    legacy = Builder("docker", ("docker",), "28.2.2", False)
    assert legacy.env == {"DOCKER_BUILDKIT": "0"}
    assert not legacy.supports_secrets
    assert "--progress" not in legacy.build_argv(spec)
    assert "--force-rm" in legacy.build_argv(spec)


# --------------------------------------------------------------------------- output


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("#5 [2/3] RUN echo hi", "step"),
        ("Step 2/3 : RUN echo hi", "step"),
        ("STEP 2/3: RUN echo hi", "step"),
        ("[2/3] STEP 1/2: FROM 5ec260622e0a AS with-secret", "step"),
        ("[1/2] --> Using cache 3147ddb1a29", "cache-hit"),
        ("#4 CACHED", "cache-hit"),
        (" ---> Using cache", "cache-hit"),
        ("--> Using cache 7d1cda9b250", "cache-hit"),
        ("5f70bf18a086: Pushed", "push"),
        ("5f70bf18a086: Layer already exists", "push"),
        ("Copying blob sha256:abc", "push"),
        ("b1: digest: sha256:" + "a" * 64 + " size: 528", "push"),
        ("#5 0.061 hello", "output"),
    ],
)
def test_output_lines_are_classified(line: str, kind: str) -> None:
    assert classify(line) == kind


@pytest.mark.parametrize(
    ("lines", "message", "code"),
    [
        (
            [
                "#5 [2/2] RUN exit 3",
                "#5 ERROR: executor failed running [/bin/sh -c exit 3]: exit code: 3",
                "error: failed to solve: executor failed running [/bin/sh -c exit 3]: exit code: 3",
            ],
            "error: failed to solve: executor failed running [/bin/sh -c exit 3]: exit code: 3",
            3,
        ),
        (["Step 2/2 : RUN exit 4", "The command '/bin/sh -c exit 4' returned a non-zero code: 4"], None, 4),
        (['Error: error building at STEP "RUN exit 5": error while running runtime: exit status 5'], None, 5),
        (["all good"], "", None),
    ],
)
def test_build_failure_message_and_step_exit_code(
    lines: list[str], message: str | None, code: int | None
) -> None:
    found, exit_code = build_failure(lines)
    assert exit_code == code
    assert found == (message if message is not None else lines[-1])


# --------------------------------------------------------------------------- settings


def test_settings_from_the_environment() -> None:
    s = docker_settings(
        {"RUNNER_DOCKER_BUILDER": "Podman", "RUNNER_DOCKER_PRUNE": "false", "DOCKER_HOST": "unix:///d"}
    )
    assert (s.builder, s.prune, s.host, s.network) == ("podman", "none", "unix:///d", "host")
    assert docker_settings({}).prune == "image"
    assert docker_settings({"RUNNER_DOCKER_PRUNE": "dangling"}).prune == "dangling"
    assert docker_settings({"RUNNER_DOCKER_HOST": "tcp://1", "DOCKER_HOST": "unix:///d"}).host == "tcp://1"
    with pytest.raises(
        HandlerError, match="RUNNER_DOCKER_BUILDER='kaniko' is not one of auto, docker, podman"
    ):
        docker_settings({"RUNNER_DOCKER_BUILDER": "kaniko"})
    with pytest.raises(HandlerError, match="RUNNER_DOCKER_PRUNE"):
        docker_settings({"RUNNER_DOCKER_PRUNE": "sometimes"})


# --------------------------------------------------------------------------- plans and metadata


def test_plans_decode_our_fields_case_insensitively() -> None:
    plan = decode_plan(
        "docker-build",
        json.dumps(
            {"docker_build_plan": {"Labels": {"a": "1"}, "secrets": {"t": "v"}, "build_args": {"X": None}}}
        ),
        BuildPlan,
    )
    assert isinstance(plan, BuildPlan)
    assert plan.docker_build_plan is not None
    assert plan.docker_build_plan.labels == {"a": "1"}
    assert plan.docker_build_plan.build_args == {"X": None}
    fetch = FetchImageMetadataPlan.model_validate(
        {
            "Registry": {"RegistryType": "public_oci", "Repository": "r/app"},
            "Tag": "v1",
            "IncludeIndex": False,
        }
    )
    assert fetch.tag == "v1"
    assert fetch.include_index is False
    assert fetch.registry is not None


def _image(arch: str, labels: dict[str, str]) -> tuple[Manifest, dict[str, object]]:
    config: dict[str, object] = {
        "architecture": arch,
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Labels": labels, "Env": ["TOKEN=secret"], "Cmd": ["sh"], "WorkingDir": ""},
    }
    manifest = Manifest.build(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + "1" * 64,
                "size": 1,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + "2" * 64,
                    "size": 5,
                }
            ],
        }
    )
    return manifest, config


def test_image_summary_leaves_the_environment_out() -> None:
    manifest, config = _image("arm64", {"team": "a"})
    summary = image_summary(manifest, config)
    assert summary["platform"]["architecture"] == "arm64"
    assert summary["labels"] == {"team": "a"}
    assert summary["config"] == {"Cmd": ["sh"]}
    assert "secret" not in json.dumps(summary)
    assert summary["layers"] == [
        {
            "digest": "sha256:" + "2" * 64,
            "size": 5,
            "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    ]


def test_metadata_outputs_of_an_index() -> None:
    amd, amd_cfg = _image("amd64", {"v": "1"})
    arm, arm_cfg = _image("arm64", {"v": "1"})
    images = [image_summary(amd, amd_cfg), image_summary(arm, arm_cfg)]
    index = Manifest.build(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    )
    out = metadata_outputs(tag="v1", repository="reg/app", root=index, images=images, include_index=True)[
        "image"
    ]
    assert out["digest"] == index.digest
    assert [p["architecture"] for p in out["platforms"]] == ["amd64", "arm64"]
    assert out["platform"]["architecture"] == "amd64"
    assert out["labels"] == {"v": "1"}
    assert len(out["manifests"]) == 2
    single = metadata_outputs(tag="v1", repository="reg/app", root=amd, images=images[:1], include_index=True)
    assert "manifests" not in single["image"]
    attestation = Descriptor(
        media_type="x",
        digest="sha256:" + "3" * 64,
        size=1,
        annotations={"vnd.docker.reference.type": "attestation-manifest"},
    )
    assert is_attestation(attestation)
