"""The ``docker-build`` handler: build the plan's Dockerfile and push the image.

prepare: check the plan, fetch the git source into the workspace, resolve the context and
Dockerfile inside it, choose the builder. execute: build (output streamed into the job log),
push with the builder itself to ``dst_registry`` under ``job.owner_id`` (the reference's tag;
``dst_tag`` when the job has no owner), read the pushed digest back from the registry through
``handlers.oci``. cleanup: remove the Dockerfile copy, the secret files and, as
``RUNNER_DOCKER_PRUNE`` says, the job's image from the builder's store; the executor removes the
workspace.

The builder pushes the image itself rather than exporting it for ``handlers.oci`` to copy: the
builder already holds the compressed layers and the push writes the tag last, while an export
costs a second pass over every layer (bench/docker_bench.py measures both; docs/docker-build.md).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import anyio

from handlers.docker.auth import write_auth_file
from handlers.docker.buildargs import (
    LABEL_PREFIX,
    build_arg_flags,
    image_labels,
    label_flags,
    validate_secret_ids,
    write_secret_files,
)
from handlers.docker.builder import (
    Builder,
    BuildSpec,
    Probe,
    base_command,
    choose_builder,
    docker_has_buildkit,
    parse_docker_version,
)
from handlers.docker.output import BuildOutput, build_failure
from handlers.docker.paths import BuildPaths, place_dockerfile, remove_dockerfile_copy, resolve_build_paths
from handlers.docker.settings import DockerSettings, checked
from handlers.oci.client import scheme_for
from handlers.oci.errors import ConfigurationError, first_error
from handlers.oci.reference import ReferenceError
from handlers.oci.registry import RegistryTarget, open_registry
from handlers.sources import fetch_job_source, split_credentials
from runner.sdk import Handler, HandlerError, JobContext
from runner.sdk.plans import BasePlan, BuildPlan

EXECUTION_LABEL = f"{LABEL_PREFIX}execution-id"


class DockerBuildError(HandlerError):
    """The build itself failed: the builder's message, the failed step's exit code."""


async def _probe_docker(ctx: JobContext, settings: DockerSettings) -> Probe:
    try:
        docker = base_command("docker", settings)
    except HandlerError as exc:
        return Probe(docker_detail=str(exc))
    done = await ctx.processes.run(
        [*docker, "version", "--format", "{{json .}}"], capture_stdout=True, check=False
    )
    client, server = parse_docker_version(done.stdout)
    found = Probe(docker_cli=True, docker_client_version=client, docker_server_version=server)
    if done.returncode != 0 or not server:
        tail = done.stderr_tail[-1] if done.stderr_tail else f"exit code {done.returncode}"
        where = settings.host or "the default socket"
        return replace(found, docker_detail=f"dockerd at {where} did not answer: {tail}")
    buildx = False
    if not docker_has_buildkit(client, buildx=False):  # a 23+ CLI has BuildKit only with buildx
        answer = await ctx.processes.run([*docker, "buildx", "version"], capture_stdout=True, check=False)
        buildx = answer.returncode == 0
    return replace(found, docker_daemon=True, docker_buildx=buildx)


async def _probe_podman(ctx: JobContext, settings: DockerSettings, found: Probe) -> Probe:
    try:
        podman = base_command("podman", settings)
    except HandlerError as exc:
        return replace(found, podman_detail=str(exc))
    done = await ctx.processes.run(
        [*podman, "version", "--format", "{{.Client.Version}}"], capture_stdout=True, check=False
    )
    if done.returncode != 0:
        detail = done.stderr_tail[-1] if done.stderr_tail else "podman version failed"
        return replace(found, podman_detail=detail)
    version = (done.stdout or b"").decode(errors="replace").strip()
    return replace(found, podman=True, podman_version=version)


async def probe_builders(ctx: JobContext, settings: DockerSettings) -> Probe:
    """Ask what is there: the docker CLI and its daemon (unless podman is forced), then podman
    (unless docker is forced or a dockerd answered: auto would not take it)."""
    found = Probe()
    if settings.builder in ("auto", "docker"):
        found = await _probe_docker(ctx, settings)
    if settings.builder in ("auto", "podman") and not found.docker_daemon:
        found = await _probe_podman(ctx, settings, found)
    return found


class DockerBuildHandler(Handler):
    plan_model: ClassVar[type[BasePlan] | None] = BuildPlan

    def __init__(self) -> None:
        self._settings = DockerSettings()
        self._dst: RegistryTarget | None = None
        self._tag = ""
        self._paths: BuildPaths | None = None
        self._kind = ""
        self._probe = Probe()
        self._built: list[str] = []
        self._commit = ""

    # ------------------------------------------------------------------ prepare

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(BuildPlan)
        spec = plan.docker_build_plan
        if spec is None:
            raise ConfigurationError("docker-build plan has no docker_build_plan")
        if plan.dst_registry is None:
            raise ConfigurationError("docker-build plan has no dst_registry")
        self._tag = ctx.job.owner_id or plan.dst_tag
        if not self._tag:
            raise ConfigurationError("docker-build: the job has no owner_id and the plan no dst_tag")
        self._settings = checked(ctx.handler_settings(DockerSettings), os.environ)
        ctx.secrets.register(*(spec.secrets or {}).values())
        validate_secret_ids(spec.secrets)
        build_arg_flags(spec.build_args, os.environ)  # bad names fail now, not after the clone
        self._dst = dst = await open_registry(
            plan.dst_registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log
        )
        ctx.resources.push_async_callback(dst.aclose)
        try:
            self._dst.ref(self._tag)
        except ReferenceError as exc:
            raise ConfigurationError(f"docker-build: {exc}") from None
        if plan.git_source is None:
            raise ConfigurationError("docker-build plan has no git_source")

        async def probe() -> None:
            self._probe = await probe_builders(ctx, self._settings)

        # The builder probe (a docker or podman start, ~25 ms) runs while the source is cloned.
        with first_error():
            async with anyio.create_task_group() as tg:
                tg.start_soon(probe)
                source = await fetch_job_source(ctx, plan.git_source, dest_name="src")
        self._commit = source.commit
        self._paths = resolve_build_paths(source.root, source.directory, spec.context, spec.dockerfile)
        self._kind, why = choose_builder(self._settings.builder, self._probe)
        builder = self._builder(ctx)
        ctx.log.info(f"builder: {builder.describe()} ({why})", builder=builder.kind)
        if spec.secrets and not builder.supports_secrets:
            raise ConfigurationError(
                f"the plan has build secrets but {builder.describe()} cannot mount them "
                "(it has no BuildKit: install the buildx plugin or use podman)"
            )

    def _builder(self, ctx: JobContext) -> Builder:
        probe = self._probe
        if self._kind == "docker":
            return Builder(
                kind="docker",
                command=tuple(base_command("docker", self._settings, config_dir=self._config_dir(ctx))),
                version=probe.docker_client_version,
                buildkit=docker_has_buildkit(probe.docker_client_version, probe.docker_buildx),
            )
        return Builder(
            kind="podman",
            command=tuple(base_command("podman", self._settings)),
            version=probe.podman_version,
            buildkit=False,
        )

    @staticmethod
    def _config_dir(ctx: JobContext) -> Path:
        return ctx.workspace / "docker-config"

    # ------------------------------------------------------------------ execute

    def _local_ref(self) -> str:
        assert self._dst is not None
        return f"{self._dst.name}:{self._tag}"

    async def execute(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(BuildPlan)
        spec = plan.docker_build_plan
        assert spec is not None
        assert self._dst is not None
        assert self._paths is not None
        builder = self._builder(ctx)
        args = build_arg_flags(spec.build_args, os.environ)
        if args.missing:
            ctx.log.info(f"build args not set in the environment, left to their ARG defaults: {args.missing}")
        source_url = split_credentials(plan.git_source.url).display if plan.git_source else ""
        labels = image_labels(
            spec.labels,
            {
                f"{LABEL_PREFIX}job-id": ctx.job.id,
                EXECUTION_LABEL: ctx.execution.id,
                f"{LABEL_PREFIX}owner-id": ctx.job.owner_id or "",
                "org.opencontainers.image.revision": self._commit,
                "org.opencontainers.image.source": source_url,
            },
        )
        ref = self._local_ref()
        try:
            place_dockerfile(self._paths)
            secret_flags = write_secret_files(spec.secrets or {}, self._secrets_dir(ctx))
            build = BuildSpec(
                context=self._paths.context,
                dockerfile=self._paths.dockerfile,
                tags=[ref],
                iidfile=ctx.workspace / "image-id",
                target=spec.target,
                network=self._settings.network,
                flags=[*args.flags, *label_flags(labels), *secret_flags],
            )
            output = BuildOutput("build")
            done = await ctx.processes.run(
                builder.build_argv(build),
                env={**builder.env, **args.env},
                cwd=self._paths.context,
                line_handler=output,
                check=False,
            )
        finally:
            remove_dockerfile_copy(self._paths)
            shutil.rmtree(self._secrets_dir(ctx), ignore_errors=True)
        if done.returncode != 0:
            message, step_code = build_failure(output.lines)
            raise DockerBuildError(
                f"docker-build failed: {message or f'{builder.kind} build exited with {done.returncode}'}",
                exit_code=step_code if step_code is not None else done.returncode,
                builder_exit_code=done.returncode,
                stderr_tail="\n".join(list(output.lines)[-20:]),
            )
        self._built.append(ref)
        steps, hits = output.counts.get("step", 0), output.counts.get("cache-hit", 0)
        ctx.log.info(f"built {ref}: {steps} steps, {hits} cache hits")
        await self._push(ctx, builder, ref)

    @staticmethod
    def _secrets_dir(ctx: JobContext) -> Path:
        return ctx.workspace / "build-secrets"

    async def _push(self, ctx: JobContext, builder: Builder, ref: str) -> None:
        assert self._dst is not None
        credentials = self._dst.client.auth.credentials
        auth_file = write_auth_file(self._config_dir(ctx), self._dst.registry, credentials)
        tls = scheme_for(self._dst.registry, ctx.tools.insecure_registries) == "https"
        output = BuildOutput("push")
        done = await ctx.processes.run(
            builder.push_argv(ref, auth_file=auth_file, tls_verify=tls, digest_file=ctx.workspace / "digest"),
            env=builder.env,
            line_handler=output,
            check=False,
        )
        if done.returncode != 0:
            message, _ = build_failure(output.lines)
            raise HandlerError(
                f"push of {ref} failed: {message or f'exit code {done.returncode}'}",
                exit_code=done.returncode,
                stderr_tail="\n".join(list(output.lines)[-20:]),
            )
        pushed = await self._dst.client.head_manifest(self._dst.repository, self._tag)
        if pushed is None:
            raise HandlerError(f"push of {ref} reported success but the registry has no such tag")
        ctx.log.info(f"pushed {ref}@{pushed.digest}", digest=pushed.digest)
        ctx.set_outputs(
            {
                "image": {
                    "tag": self._tag,
                    "digest": pushed.digest,
                    "repository": self._dst.name,
                    "media_type": pushed.media_type,
                    "size": pushed.size,
                }
            }
        )

    # ------------------------------------------------------------------ cleanup

    async def cleanup(self, ctx: JobContext) -> None:
        if self._paths is not None:
            remove_dockerfile_copy(self._paths)
        shutil.rmtree(self._secrets_dir(ctx), ignore_errors=True)
        shutil.rmtree(self._config_dir(ctx), ignore_errors=True)
        await self._prune(ctx)

    async def _prune(self, ctx: JobContext) -> None:
        if not self._kind or not self._built or self._settings.prune == "none":
            return
        builder = self._builder(ctx)
        done = await ctx.processes.run(builder.remove_argv(self._built), check=False)
        if done.returncode != 0:
            ctx.log.warning(f"could not remove the job's image {self._built}")
        if self._settings.prune == "dangling":
            await ctx.processes.run([*builder.command, "image", "prune", "--force"], check=False)
        self._built = []
