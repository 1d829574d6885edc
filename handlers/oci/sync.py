"""The ``oci-sync`` handler: copy ``src_registry:src_tag`` to ``dst_registry:dst_tag``.

Plan: ``SyncOCIPlan`` (docs/runner-api.md §9.3). The whole graph is copied with digests unchanged
and the destination tag written last, so a failure leaves nothing half-tagged. Outputs are
what the control plane decodes into ``OCIArtifactOutputs`` (docs/runner-api.md §8.3; the
reference's ``bins/runner/internal/jobs/build/containerimage/outputs.go``)::

    {"image": {"tag", "repository", "media_type", "digest", "size", "urls", "annotations",
               "artifact_type", "platform": {"architecture", "os", "os_version", "variant",
                                             "os_features"}}}
"""

from __future__ import annotations

from typing import Any, ClassVar

from handlers.oci.copy import CopyResult, image_platform
from handlers.oci.descriptors import Platform
from handlers.oci.errors import ConfigurationError
from handlers.oci.reference import ReferenceError
from handlers.oci.registry import RegistryTarget, open_registry
from handlers.oci.transfer import copy_between
from runner.sdk import Handler, JobContext
from runner.sdk.plans import BasePlan, SyncOCIPlan


async def image_outputs(
    src: RegistryTarget, dst: RegistryTarget, tag: str, result: CopyResult
) -> dict[str, Any]:
    """``{"image": {...}}`` in the reference's shape; the platform comes from the image config."""
    manifest = result.manifest
    platform = await image_platform(src.client, src.repository, manifest) or Platform()
    return {
        "image": {
            "tag": tag,
            "repository": dst.name,
            "media_type": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
            "urls": [],
            "annotations": manifest.annotations,
            "artifact_type": manifest.artifact_type,
            "platform": platform.to_output(),
        }
    }


class OciSyncHandler(Handler):
    plan_model: ClassVar[type[BasePlan] | None] = SyncOCIPlan

    def __init__(self) -> None:
        self._targets: list[RegistryTarget] = []

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(SyncOCIPlan)
        if plan.src_registry is None:
            raise ConfigurationError("oci-sync plan has no src_registry")
        if plan.dst_registry is None:
            raise ConfigurationError("oci-sync plan has no dst_registry")
        if not plan.src_tag:
            raise ConfigurationError(f"oci-sync plan has no src_tag for {plan.src_registry.repository}")
        if not plan.dst_tag:
            raise ConfigurationError(f"oci-sync plan has no dst_tag for {plan.dst_registry.repository}")
        src = await open_registry(plan.src_registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
        self._targets.append(src)
        dst = await open_registry(plan.dst_registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
        self._targets.append(dst)
        # Validate both tags now, so bad input fails in prepare with a clear message.
        try:
            src.ref(plan.src_tag)
            dst.ref(plan.dst_tag)
        except ReferenceError as exc:
            raise ConfigurationError(f"oci-sync: {exc}") from None

    async def execute(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(SyncOCIPlan)
        src, dst = self._targets
        result = await copy_between(src, plan.src_tag, dst, plan.dst_tag, log=ctx.log)
        ctx.set_outputs(await image_outputs(src, dst, plan.dst_tag, result))

    async def cleanup(self, ctx: JobContext) -> None:
        targets, self._targets = self._targets, []
        for target in targets:
            await target.aclose()
