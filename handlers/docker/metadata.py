"""The ``fetch-image-metadata`` handler: what an image in a registry is, without pulling it.

The newer API names this job type without defining it; ours (docs/docker-build.md): the plan
names a registry repository and a tag (or digest); the job reads the manifest (and, for an
index, each platform's manifest) and each image config through ``handlers.oci``, and returns
``{"image": {...}}``: the oci-sync output fields (tag, repository, media_type, digest, size,
urls, annotations, artifact_type, platform) plus ``platforms``, ``labels``, ``config`` (the
run-time settings of the image, except its environment, which can carry credentials),
``layers`` and, for an index, ``manifests``. No builder, no layer download.

Attestation manifests (BuildKit's ``vnd.docker.reference.type: attestation-manifest`` entries,
platform ``unknown/unknown``) are left out of ``platforms`` unless the plan asks for them.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from handlers.oci import media
from handlers.oci.descriptors import Descriptor, Manifest, Platform
from handlers.oci.errors import ConfigurationError, RegistryError
from handlers.oci.reference import ReferenceError
from handlers.oci.registry import RegistryTarget, open_registry
from runner.sdk import Handler, JobContext
from runner.sdk.plans import BasePlan, FetchImageMetadataPlan

ATTESTATION_TYPE = "attestation-manifest"
#: The image config fields returned, under their OCI names (``Env`` is deliberately absent).
CONFIG_FIELDS = ("User", "ExposedPorts", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "StopSignal")
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def is_attestation(desc: Descriptor) -> bool:
    return desc.annotations.get("vnd.docker.reference.type") == ATTESTATION_TYPE


def image_summary(manifest: Manifest, config: dict[str, Any] | None) -> dict[str, Any]:
    """One image manifest and its config as output: platform, labels, run-time config, layers."""
    config = config or {}
    runtime = config.get("config") or {}
    platform = Platform.from_dict(config) or Platform()
    return {
        "digest": manifest.digest,
        "media_type": manifest.media_type,
        "size": manifest.size,
        "platform": platform.to_output(),
        "labels": dict(runtime.get("Labels") or {}),
        "created": str(config.get("created") or ""),
        "config": {key: runtime[key] for key in CONFIG_FIELDS if runtime.get(key) not in (None, "", [], {})},
        "layers": [{"digest": d.digest, "size": d.size, "media_type": d.media_type} for d in manifest.layers],
    }


def metadata_outputs(
    *,
    tag: str,
    repository: str,
    root: Manifest,
    images: list[dict[str, Any]],
    include_index: bool,
) -> dict[str, Any]:
    """``{"image": {...}}``: the root's identity, the first image's details, every platform."""
    first = images[0] if images else {}
    image: dict[str, Any] = {
        "tag": tag,
        "repository": repository,
        "media_type": root.media_type,
        "digest": root.digest,
        "size": root.size,
        "urls": [],
        "annotations": root.annotations,
        "artifact_type": root.artifact_type,
        "platform": first.get("platform") or Platform().to_output(),
        "platforms": [img["platform"] for img in images],
        "labels": first.get("labels") or {},
        "created": first.get("created") or "",
        "config": first.get("config") or {},
        "layers": first.get("layers") or [],
    }
    if root.is_index and include_index:
        image["manifests"] = images
    return {"image": image}


async def _config_of(target: RegistryTarget, manifest: Manifest) -> dict[str, Any] | None:
    cfg = manifest.config
    if cfg is None or cfg.media_type not in (media.OCI_CONFIG, media.DOCKER_CONFIG):
        return None
    raw = await target.client.get_blob(target.repository, cfg.digest, max_size=MAX_CONFIG_BYTES)
    try:
        document = json.loads(raw)
    except ValueError:
        raise RegistryError(f"{target.display(cfg.digest)}: the image config is not JSON") from None
    return document if isinstance(document, dict) else None


async def read_image(
    target: RegistryTarget, ref: str, *, include_attestations: bool
) -> tuple[Manifest, list[dict[str, Any]]]:
    """The root manifest at ``ref`` and a summary of each image it is (or points at)."""
    root = await target.client.get_manifest(target.repository, ref)
    if not root.is_index:
        return root, [image_summary(root, await _config_of(target, root))]
    images: list[dict[str, Any]] = []
    for child in root.children:
        if is_attestation(child) and not include_attestations:
            continue
        if child.media_type and child.media_type not in media.IMAGE_MANIFESTS:
            continue
        manifest = await target.client.get_manifest(target.repository, child.digest)
        summary = image_summary(manifest, await _config_of(target, manifest))
        if child.platform is not None and summary["platform"]["architecture"] == "":
            summary["platform"] = child.platform.to_output()
        if is_attestation(child):
            summary["attestation"] = True
        images.append(summary)
    return root, images


class FetchImageMetadataHandler(Handler):
    plan_model: ClassVar[type[BasePlan] | None] = FetchImageMetadataPlan

    def __init__(self) -> None:
        self._target: RegistryTarget | None = None
        self._ref = ""

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(FetchImageMetadataPlan)
        if plan.registry is None:
            raise ConfigurationError("fetch-image-metadata plan has no registry")
        self._target = await open_registry(plan.registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
        ctx.resources.push_async_callback(self._target.aclose)
        self._ref = plan.tag or self._target.tag or "latest"
        try:
            self._target.ref(self._ref)
        except ReferenceError as exc:
            raise ConfigurationError(f"fetch-image-metadata: {exc}") from None

    async def execute(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(FetchImageMetadataPlan)
        assert self._target is not None
        root, images = await read_image(
            self._target, self._ref, include_attestations=plan.include_attestation_manifests
        )
        ctx.log.info(
            f"{self._target.display(self._ref)}: {root.digest} ({root.media_type}), "
            f"{len(images)} image(s): " + ", ".join(_platform_text(i["platform"]) for i in images)
        )
        ctx.set_outputs(
            metadata_outputs(
                tag=self._ref,
                repository=self._target.name,
                root=root,
                images=images,
                include_index=plan.include_index,
            )
        )


def _platform_text(platform: dict[str, Any]) -> str:
    text = f"{platform.get('os') or '?'}/{platform.get('architecture') or '?'}"
    return text + (f"/{platform['variant']}" if platform.get("variant") else "")
