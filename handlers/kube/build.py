"""kubernetes-manifest-build: the manifests of ``git_source.path``, validated and pushed as an artifact.

The newer API names the type without defining it; ours mirrors terraform-module-build. Every
``*.yaml``/``*.yml`` file under the source path (recursive, sorted by relative path) is parsed by
handlers/kube/manifest.py, the parser kubernetes-manifest-deploy applies with, so a build that
passes is one the deploy can read: each object has apiVersion, kind and metadata.name, ``List``
kinds are refused, duplicates (within or across files) are refused. All files' problems are
reported in one error, each naming its file. The artifact (type ``artifact/nuon``) holds one
file, ``manifest.yaml``: the files' documents concatenated in that order, so the deploy can take
it as one manifest. Tag: ``job.owner_id``, else ``dst_tag``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from handlers.kube.manifest import ManifestError, ManifestObject, ObjectKey, parse_manifest
from handlers.oci.artifacts import push_directory
from handlers.oci.registry import open_registry
from handlers.sources import fetch_job_source
from runner.sdk import Handler, HandlerError, JobContext
from runner.sdk.plans import BasePlan, BuildPlan

ARTIFACT_TYPE = "artifact/nuon"
MANIFEST_FILE = "manifest.yaml"


def manifest_files(root: Path) -> list[Path]:
    """The YAML files under ``root``, sorted by relative path so the artifact is reproducible."""
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml")]
    return sorted((p for p in found if ".git" not in p.relative_to(root).parts), key=lambda p: p.as_posix())


def validate(files: dict[str, str]) -> list[ManifestObject]:
    """Every object of ``{relative path: text}``; one error listing every file's problem."""
    problems: list[str] = []
    objects: list[ManifestObject] = []
    where: dict[ObjectKey, str] = {}
    for rel, text in files.items():
        try:
            parsed = parse_manifest(text, default_namespace="")
        except ManifestError as exc:
            if str(exc) == "the manifest has no objects":
                continue  # an empty file is not an error; an empty source is (below)
            problems.append(f"{rel}: {exc}")
            continue
        for obj in parsed:
            if obj.key in where:
                problems.append(f"{rel}: {obj.key} is already defined in {where[obj.key]}")
            else:
                where[obj.key] = rel
                objects.append(obj)
    if problems:
        raise ManifestError("invalid manifests:\n" + "\n".join(problems))
    if not objects:
        raise ManifestError("the source has no manifests: no Kubernetes object in any *.yaml or *.yml file")
    return objects


def concatenate(files: dict[str, str]) -> str:
    parts = [f"# Source: {rel}\n{text.strip()}\n" for rel, text in files.items() if text.strip()]
    return "---\n".join(parts)


def object_list(objects: list[ManifestObject]) -> list[dict[str, str]]:
    return [
        {
            "apiVersion": o.key.api_version,
            "kind": o.key.kind,
            "namespace": o.key.namespace,
            "name": o.key.name,
        }
        for o in objects
    ]


class KubernetesManifestBuildHandler(Handler):
    plan_model: ClassVar[type[BasePlan] | None] = BuildPlan

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(BuildPlan)
        if plan.dst_registry is None:
            raise HandlerError("the build plan has no dst_registry")
        if not (ctx.job.owner_id or plan.dst_tag):
            raise HandlerError(
                "no tag for the manifest artifact: the job has no owner_id and the plan no dst_tag"
            )
        if not (plan.git_source and plan.git_source.url):
            raise HandlerError("the build plan names no manifests: git_source.url is not set")

    async def execute(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(BuildPlan)
        assert plan.git_source is not None  # prepare() checked
        assert plan.dst_registry is not None
        tag = ctx.job.owner_id or plan.dst_tag
        fetched = await fetch_job_source(ctx, plan.git_source)
        root = fetched.directory
        files = {p.relative_to(root).as_posix(): p.read_text() for p in manifest_files(root)}
        objects = validate(files)
        artifact = ctx.workspace / "artifact"
        artifact.mkdir(exist_ok=True)
        (artifact / MANIFEST_FILE).write_text(concatenate(files))
        target = await open_registry(plan.dst_registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
        async with target:
            pushed = await push_directory(target, tag, artifact, artifact_type=ARTIFACT_TYPE, log=ctx.log)
            where = target.display(tag)
        ctx.log.info(f"{len(objects)} objects from {len(files)} files pushed as {where} ({pushed.digest})")
        outputs: dict[str, Any] = {
            "files": [{"AbsPath": "", "RelPath": MANIFEST_FILE, "FileType": ""}],
            "image": {"tag": tag, "digest": pushed.digest, "repository": target.name},
            "digest": pushed.digest,
            "objects": object_list(objects),
        }
        ctx.set_outputs(outputs)
