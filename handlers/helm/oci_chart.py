"""A packaged chart pushed as a native Helm OCI chart, beside the reference's ``artifact/nuon``.

The reference's build pushes an artifact holding ``chart.tgz``, which only a Nuon runner reads.
With ``RUNNER_HELM_PUSH_OCI_CHART=true`` the build also pushes the same ``.tgz`` the way ``helm
push`` lays it out, so plain helm and Flux/Argo can install it: repository ``<dst repository>/<chart
name>``, tag the chart version (``+`` written ``_``, as helm does), config
``application/vnd.cncf.helm.config.v1+json`` (Chart.yaml as JSON) and one layer
``application/vnd.cncf.helm.chart.content.v1.tar+gzip``. It goes through the job's own registry
client (handlers.oci: the same credentials resolver, basic, bearer or ECR), not through ``helm
push``, so no registry credential is ever written for helm.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from handlers.oci.client import retrying
from handlers.oci.descriptors import Manifest
from handlers.oci.registry import RegistryTarget

CONFIG_MEDIA_TYPE = "application/vnd.cncf.helm.config.v1+json"
CHART_MEDIA_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class PushedChart:
    repository: str
    tag: str
    digest: str

    def reference(self, registry: str) -> str:
        """``oci://host/repo/name`` with the version, as ``helm pull`` takes it."""
        return f"oci://{registry}/{self.repository}"


def chart_tag(version: str) -> str:
    """helm stores a SemVer build suffix ``+`` as ``_`` (tags cannot hold ``+``)."""
    return version.replace("+", "_")


def chart_manifest(config: bytes, chart: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
    """The manifest ``helm push`` writes for a chart with this Chart.yaml and ``.tgz``."""
    annotations = {
        "org.opencontainers.image.title": str(metadata["name"]),
        "org.opencontainers.image.version": str(metadata["version"]),
    }
    if metadata.get("description"):
        annotations["org.opencontainers.image.description"] = str(metadata["description"])
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": CHART_MEDIA_TYPE, "digest": _digest(chart), "size": len(chart)}],
        "annotations": annotations,
    }


def chart_config(metadata: dict[str, Any]) -> bytes:
    """Chart.yaml as helm's config blob (``chart.Metadata`` marshalled: the same keys)."""
    return json.dumps(metadata, separators=(",", ":"), sort_keys=True, default=str).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def push_oci_chart(target: RegistryTarget, chart_tgz: Path, metadata: dict[str, Any]) -> PushedChart:
    """Push ``chart_tgz`` as ``<target repository>/<name>:<version>``; blobs it has are kept."""
    repository = f"{target.repository}/{metadata['name']}"
    tag = chart_tag(str(metadata["version"]))
    chart = await anyio.Path(chart_tgz).read_bytes()
    config = chart_config(metadata)
    client = target.client
    for blob in (config, chart):
        digest = _digest(blob)
        if not await client.has_blob(repository, digest):

            async def once(data: bytes = blob, digest: str = digest) -> None:
                await client.push_blob(repository, digest, len(data), data)

            await retrying(once, attempts=client.retries + 1)
    manifest = Manifest.build(chart_manifest(config, chart, metadata))
    await client.put_manifest(repository, tag, manifest)
    return PushedChart(repository=repository, tag=tag, digest=manifest.digest)
