"""Copying a whole image graph between repositories, digest for digest.

``copy_image`` walks ``index -> every child manifest -> config and layers`` and recreates it
at the destination with the **same bytes**, so every digest, the root's included, is
unchanged. Order matters for safety: blobs first, then each child manifest (by digest), and
the root manifest under the destination tag **last**, so a failure anywhere leaves the tag
as it was (nothing half-tagged).

What is not transferred: a destination tag already pointing at the same digest ends the copy
after one HEAD (the registry guarantees its blobs exist), as does a child manifest already
present; a blob the destination has (HEAD) is skipped; a blob in another repository of the
same registry is mounted. Blobs stream from source to destination through a bounded number
of concurrent copies, each verified on the way, and each retried as a whole on transient
failures; a blob shared by two platforms is copied once. ``progress`` hears about every blob.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from handlers.oci import media
from handlers.oci.client import RegistryClient, retrying
from handlers.oci.descriptors import Descriptor, Manifest, Platform
from handlers.oci.errors import (
    AccessDenied,
    AuthenticationError,
    NotFound,
    RegistryError,
    UnsupportedMediaType,
    first_error,
)

DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class BlobProgress:
    """One blob done: ``action`` is ``copied``, ``present`` (already there) or ``mounted``."""

    descriptor: Descriptor
    action: str
    seconds: float


ProgressCallback = Callable[[BlobProgress], None]


@dataclass
class CopyResult:
    manifest: Manifest
    #: The destination tag already pointed at this digest: nothing was transferred.
    up_to_date: bool = False
    blobs_copied: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    bytes_copied: int = 0
    manifests_pushed: int = 0
    manifests_present: int = 0
    blob_log: list[BlobProgress] = field(default_factory=list)

    @property
    def descriptor(self) -> Descriptor:
        return self.manifest.descriptor()


def _is_foreign(desc: Descriptor) -> bool:
    """Docker foreign layers (Windows base layers) live elsewhere and are not copied."""
    return "foreign" in desc.media_type and bool(desc.urls)


class _GraphCopy:
    def __init__(
        self,
        src: RegistryClient,
        src_repo: str,
        dst: RegistryClient,
        dst_repo: str,
        *,
        concurrency: int,
        progress: ProgressCallback | None,
        mount: bool,
        result: CopyResult,
    ) -> None:
        self.src, self.src_repo, self.dst, self.dst_repo = src, src_repo, dst, dst_repo
        self.limiter = anyio.CapacityLimiter(max(1, concurrency))
        self.progress = progress
        self.mount = mount and src.registry == dst.registry and src_repo != dst_repo
        self.result = result
        self._blobs: dict[str, anyio.Event] = {}

    async def blob(self, desc: Descriptor) -> None:
        """Copy one blob once, however many manifests reference it."""
        if _is_foreign(desc):
            return
        event = self._blobs.get(desc.digest)
        if event is not None:
            await event.wait()
            return
        event = self._blobs[desc.digest] = anyio.Event()
        try:
            async with self.limiter:
                started = time.monotonic()
                action = await self._transfer(desc)
            report = BlobProgress(desc, action, time.monotonic() - started)
            self.result.blob_log.append(report)
            if action == "copied":
                self.result.blobs_copied += 1
                self.result.bytes_copied += desc.size
            elif action == "mounted":
                self.result.blobs_mounted += 1
            else:
                self.result.blobs_present += 1
            if self.progress is not None:
                self.progress(report)
        finally:
            event.set()

    async def _transfer(self, desc: Descriptor) -> str:
        if await self.dst.has_blob(self.dst_repo, desc.digest):
            return "present"
        if self.mount:
            try:
                if await self.dst.mount_blob(self.dst_repo, desc.digest, self.src_repo):
                    return "mounted"
            except (AuthenticationError, AccessDenied):
                # The destination's credentials may not read the source repository (a token
                # service can refuse the combined scope): copy the bytes instead.
                self.mount = False

        async def once() -> None:
            try:
                async with self.src.open_blob(self.src_repo, desc.digest, size=desc.size) as chunks:
                    await self.dst.push_blob(self.dst_repo, desc.digest, desc.size, chunks)
            except NotFound as exc:
                raise NotFound(
                    f"{self.src.display(self.src_repo, desc.digest)}: blob missing from the source ({exc})",
                    status=exc.status,
                ) from None

        await retrying(once, attempts=self.src.retries + 1)
        return "copied"

    async def image(self, manifest: Manifest) -> None:
        """Copy the blobs of one image manifest, concurrently."""
        async with anyio.create_task_group() as tg:
            for desc in manifest.blobs():
                tg.start_soon(self.blob, desc)

    async def child(self, desc: Descriptor) -> None:
        """Copy one manifest an index points at (and what it points at), then push it by digest."""
        if await self.dst.head_manifest(self.dst_repo, desc.digest) is not None:
            self.result.manifests_present += 1
            return
        manifest = await self.src.get_manifest(self.src_repo, desc.digest)
        await self.node(manifest)
        await self.dst.put_manifest(self.dst_repo, manifest.digest, manifest)
        self.result.manifests_pushed += 1

    async def node(self, manifest: Manifest) -> None:
        if manifest.media_type in media.IMAGE_MANIFESTS:
            await self.image(manifest)
        elif manifest.is_index:
            async with anyio.create_task_group() as tg:
                for desc in manifest.children:
                    if desc.media_type and desc.media_type not in media.MANIFESTS:
                        raise UnsupportedMediaType(
                            f"{self.src.display(self.src_repo, desc.digest)}: index entry of unsupported "
                            f"media type {desc.media_type}"
                        )
                    tg.start_soon(self.child, desc)
        else:  # get_manifest refuses these already; keep the walk honest anyway
            raise UnsupportedMediaType(f"manifest of unsupported media type {manifest.media_type}")


async def copy_image(
    src: RegistryClient,
    src_repo: str,
    src_ref: str,
    dst: RegistryClient,
    dst_repo: str,
    dst_tag: str,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: ProgressCallback | None = None,
    mount: bool = True,
) -> CopyResult:
    """Copy ``src_repo:src_ref`` (tag or digest) to ``dst_repo:dst_tag`` with its digest unchanged."""
    root = await src.get_manifest(src_repo, src_ref)
    result = CopyResult(manifest=root)
    existing = await dst.head_manifest(dst_repo, dst_tag)
    if existing is not None and existing.digest == root.digest:
        result.up_to_date = True
        return result
    walker = _GraphCopy(
        src, src_repo, dst, dst_repo, concurrency=concurrency, progress=progress, mount=mount, result=result
    )
    with first_error():
        await walker.node(root)
    await dst.put_manifest(dst_repo, dst_tag, root)
    result.manifests_pushed += 1
    return result


async def image_platform(client: RegistryClient, repository: str, manifest: Manifest) -> Platform | None:
    """The platform of an image manifest, read from its config blob (None for an index or
    an artifact whose config is not an image config)."""
    cfg = manifest.config
    if manifest.is_index or cfg is None or cfg.media_type not in (media.OCI_CONFIG, media.DOCKER_CONFIG):
        return None
    try:
        document = json.loads(await client.get_blob(repository, cfg.digest, max_size=8 * 1024 * 1024))
    except (ValueError, RegistryError):
        return None
    return Platform.from_dict(document) if isinstance(document, dict) else None
