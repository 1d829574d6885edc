"""The ``container-image-build`` handler: mirror an existing image into the build registry.

Plan: ``BuildPlan.container_image_pull_plan`` (``image``, ``tag``, ``repo_config``) is the
source; ``dst_registry`` the destination, tagged with the job's ``owner_id`` (the build id,
as the reference does), or ``dst_tag`` when the job carries no owner. The copy keeps every
digest and writes the tag last. Outputs ``{"image": {"tag", "digest", "repository"}}``.
"""

from __future__ import annotations

from typing import ClassVar

from handlers.oci.errors import ConfigurationError
from handlers.oci.reference import ReferenceError
from handlers.oci.registry import RegistryTarget, open_registry
from handlers.oci.transfer import copy_between
from runner.sdk import Handler, JobContext
from runner.sdk.plans import BasePlan, BuildPlan, OCIRegistryRepository


def source_config(plan: BuildPlan) -> tuple[OCIRegistryRepository, str | None]:
    """The source registry config and the tag the plan asks for (None: from the image)."""
    pull = plan.container_image_pull_plan
    if pull is None:
        raise ConfigurationError("container-image-build plan has no container_image_pull_plan")
    repo = pull.repo_config
    if repo is None:
        if not pull.image:
            raise ConfigurationError("container_image_pull_plan has neither image nor repo_config")
        repo = OCIRegistryRepository(RegistryType="public_oci", Repository=pull.image)
    elif not repo.repository:
        repo = repo.model_copy(update={"repository": pull.image})
    return repo, pull.tag or None


class ContainerImageBuildHandler(Handler):
    plan_model: ClassVar[type[BasePlan] | None] = BuildPlan

    def __init__(self) -> None:
        self._src: RegistryTarget | None = None
        self._dst: RegistryTarget | None = None
        self._src_ref = ""
        self._dst_tag = ""

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(BuildPlan)
        repo, tag = source_config(plan)
        if plan.dst_registry is None:
            raise ConfigurationError("container-image-build plan has no dst_registry")
        self._dst_tag = ctx.job.owner_id or plan.dst_tag
        if not self._dst_tag:
            raise ConfigurationError("container-image-build: the job has no owner_id and the plan no dst_tag")
        self._src = await open_registry(repo, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
        self._src_ref = tag or self._src.tag or "latest"
        self._dst = await open_registry(plan.dst_registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
        try:
            self._src.ref(self._src_ref)
            self._dst.ref(self._dst_tag)
        except ReferenceError as exc:
            raise ConfigurationError(f"container-image-build: {exc}") from None

    async def execute(self, ctx: JobContext) -> None:
        assert self._src is not None
        assert self._dst is not None
        result = await copy_between(self._src, self._src_ref, self._dst, self._dst_tag, log=ctx.log)
        ctx.set_outputs(
            {
                "image": {
                    "tag": self._dst_tag,
                    "digest": result.manifest.digest,
                    "repository": self._dst.name,
                }
            }
        )

    async def cleanup(self, ctx: JobContext) -> None:
        for target in (self._src, self._dst):
            if target is not None:
                await target.aclose()
        self._src = self._dst = None
