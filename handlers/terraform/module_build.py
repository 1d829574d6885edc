"""``terraform-module-build``: clone the module and push it as an OCI artifact.

The artifact holds one ``file/terraform`` layer per file of ``git_source.path`` (``.git`` and
``.terraform`` left out, unlike the reference), tagged with the build id (``job.owner_id``,
falling back to ``dst_tag``): the tag a sync and then a deploy pull.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import ClassVar

from handlers.oci.artifacts import push_directory
from handlers.oci.registry import open_registry
from handlers.sources import fetch_job_source
from handlers.terraform.workspace import InvalidInput, declared_backends
from runner.sdk import Handler, JobContext
from runner.sdk.plans import BasePlan, BuildPlan

LAYER_MEDIA_TYPE = "file/terraform"
EXCLUDED_DIRS = frozenset({".git", ".terraform"})


def exclude_path(rel: PurePosixPath) -> bool:
    """True for anything inside ``.git`` or ``.terraform`` (at any depth)."""
    return any(part in EXCLUDED_DIRS for part in rel.parts)


class TerraformModuleBuildHandler(Handler):
    plan_model: ClassVar[type[BasePlan] | None] = BuildPlan

    async def execute(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(BuildPlan)
        tag = ctx.job.owner_id or plan.dst_tag
        if not tag:
            raise InvalidInput(
                "no tag for the module artifact: the job has no owner_id and the plan no dst_tag"
            )
        if plan.dst_registry is None:
            raise InvalidInput("the build plan has no dst_registry")
        fetched = await fetch_job_source(ctx, plan.git_source)
        module = fetched.directory
        if not any(module.glob("*.tf")) and not any(module.glob("*.tf.json")):
            ctx.log.warning(
                "the module directory holds no *.tf file",
                path=plan.git_source.path if plan.git_source else "",
            )
        declared = declared_backends(module)
        if declared:
            ctx.log.info(
                "the module declares a backend; deploys replace it with the runner's",
                files=", ".join(declared),
            )
        target = await open_registry(plan.dst_registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
        try:
            pushed = await push_directory(
                target, tag, module, layer_media_type=LAYER_MEDIA_TYPE, exclude=exclude_path, log=ctx.log
            )
            repository = target.name
        finally:
            await target.aclose()
        ctx.log.info(
            "module pushed", artifact=f"{repository}:{tag}", digest=pushed.digest, files=len(pushed.files)
        )
        ctx.set_outputs(
            {
                "files": pushed.files,
                "image": {
                    "tag": tag,
                    "digest": pushed.digest,
                    "repository": repository,
                    "media_type": pushed.media_type,
                    "size": pushed.size,
                },
            }
        )
