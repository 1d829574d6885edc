"""Copy between two ``RegistryTarget``s with per-blob progress in the job log.

Shared by the ``oci-sync`` and ``container-image-build`` handlers (and usable by any other
handler that moves an image): one log record per blob saying whether it was copied, already
present or mounted, with its size, and a summary at the end.
"""

from __future__ import annotations

import time
from typing import Any

from handlers.oci.copy import DEFAULT_CONCURRENCY, BlobProgress, CopyResult, ProgressCallback, copy_image
from handlers.oci.errors import RegistryError
from handlers.oci.registry import RegistryTarget
from runner.sdk import JobLog


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def progress_logger(log: JobLog) -> ProgressCallback:
    def report(progress: BlobProgress) -> None:
        desc = progress.descriptor
        attrs: dict[str, Any] = {
            "digest": desc.digest,
            "size": desc.size,
            "media_type": desc.media_type,
            "action": progress.action,
        }
        if progress.action == "copied":
            rate = desc.size / progress.seconds / 1e6 if progress.seconds > 0 else 0.0
            log.info(
                f"copied blob {desc.digest} of size {human_size(desc.size)} in {progress.seconds:.2f}s"
                f" ({rate:.0f} MB/s)",
                **attrs,
            )
        elif progress.action == "mounted":
            log.info(
                f"mounted blob {desc.digest} of size {human_size(desc.size)} from the source repository",
                **attrs,
            )
        else:
            log.info(
                f"not copying blob {desc.digest} of size {human_size(desc.size)}: already present", **attrs
            )

    return report


async def copy_between(
    src: RegistryTarget,
    src_ref: str,
    dst: RegistryTarget,
    dst_tag: str,
    *,
    log: JobLog,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> CopyResult:
    """Copy ``src:src_ref`` to ``dst:dst_tag``; errors name both ends (no credentials)."""
    what = f"{src.display(src_ref)} -> {dst.display(dst_tag)}"
    log.info(f"copying {what}")
    started = time.monotonic()
    try:
        result = await copy_image(
            src.client,
            src.repository,
            src_ref,
            dst.client,
            dst.repository,
            dst_tag,
            concurrency=concurrency,
            progress=progress_logger(log),
        )
    except RegistryError as exc:
        raise type(exc)(f"copying {what} failed: {exc}", status=exc.status) from exc
    seconds = time.monotonic() - started
    if result.up_to_date:
        log.info(
            f"{dst.display(dst_tag)} is already {result.manifest.digest}: nothing to copy ({seconds:.2f}s)"
        )
    else:
        log.info(
            f"copied {what} as {result.manifest.digest} in {seconds:.2f}s:"
            f" {result.blobs_copied} blob(s) copied ({human_size(result.bytes_copied)}),"
            f" {result.blobs_present} already present,"
            f" {result.blobs_mounted} mounted, {result.manifests_pushed} manifest(s) pushed",
            digest=result.manifest.digest,
            bytes_copied=result.bytes_copied,
        )
    return result
