"""OCI artifacts: a directory packed as one layer per file, pushed and pulled.

This is how builds hand terraform modules and helm charts to deploys (the reference's
``bins/runner/internal/jobs/build/{terraform,helm}`` and their deploys). The layout is ORAS's
"image-manifest" style, which distribution 2.8 accepts:

* an OCI image manifest with ``artifactType`` set and the OCI 1.1 empty config
  (``application/vnd.oci.empty.v1+json``, content ``{}``);
* one layer per regular file, in sorted path order, each annotated with
  ``org.opencontainers.image.title`` = its relative POSIX path and
  ``vnd.byoc-runner.file.mode`` = its permission bits (``"0755"``), so hook scripts stay
  executable after a round trip. No timestamps are added: the same files give the same digest.

Pulling refuses any title that is absolute, contains ``..``, or would be written through a
symlink that leaves the target directory, before a byte is written. Files are written to a
temporary name and renamed into place once their digest is verified, mode 0644 (0755 when
the recorded mode had an execute bit).
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import anyio

from handlers.oci import media
from handlers.oci.client import retrying
from handlers.oci.descriptors import Descriptor, Manifest, sha256_digest
from handlers.oci.errors import RegistryError, first_error
from handlers.oci.registry import RegistryTarget
from runner.sdk import JobLog

DEFAULT_ARTIFACT_TYPE = "application/vnd.nuon.artifact"
DEFAULT_LAYER_MEDIA_TYPE = media.OCI_LAYER_TAR
_READ_SIZE = 1024 * 1024
_CONCURRENCY = 8


class UnsafePath(RegistryError):
    """An artifact layer whose title would be written outside the target directory."""


@dataclass(frozen=True)
class PushedArtifact:
    digest: str
    size: int
    media_type: str
    #: Relative POSIX paths of the files packed, sorted.
    files: list[str]


@dataclass(frozen=True)
class _FileEntry:
    rel: str
    path: Path
    mode: int


def _collect(
    directory: Path, exclude: Callable[[PurePosixPath], bool] | None, warnings: list[str]
) -> list[_FileEntry]:
    """Regular files under ``directory`` (symlinks to files inside it count as files)."""
    if not directory.is_dir():
        raise NotADirectoryError(str(directory))
    root = directory.resolve()
    entries: list[_FileEntry] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        rel_dir = PurePosixPath(here.relative_to(root).as_posix())
        kept = []
        for d in sorted(dirs):
            rel = rel_dir / d
            if (exclude and exclude(rel)) or (here / d).is_symlink():
                continue
            kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            rel = rel_dir / name
            if exclude and exclude(rel):
                continue
            path = here / name
            if path.is_symlink():
                target = path.resolve()
                if not (target.is_file() and target.is_relative_to(root)):
                    warnings.append(f"skipping symlink {rel} (points outside the directory)")
                    continue
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                continue
            entries.append(_FileEntry(rel=rel.as_posix(), path=path, mode=stat.S_IMODE(info.st_mode)))
    entries.sort(key=lambda e: e.rel)
    return entries


async def _file_digest(path: Path) -> tuple[str, int]:
    def work() -> tuple[str, int]:
        import hashlib

        hasher = hashlib.sha256()
        size = 0
        with path.open("rb") as fh:
            while chunk := fh.read(_READ_SIZE):
                hasher.update(chunk)
                size += len(chunk)
        return "sha256:" + hasher.hexdigest(), size

    return await anyio.to_thread.run_sync(work)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as fh:
        while chunk := await fh.read(_READ_SIZE):
            yield chunk


async def _ensure_blob(
    target: RegistryTarget, desc: Descriptor, path: Path | None, data: bytes | None
) -> None:
    client, repo = target.client, target.repository
    if await client.has_blob(repo, desc.digest):
        return

    async def once() -> None:
        content = data if data is not None else _file_chunks(path)  # type: ignore[arg-type]
        await client.push_blob(repo, desc.digest, desc.size, content)

    await retrying(once, attempts=client.retries + 1)


async def push_directory(
    target: RegistryTarget,
    tag: str,
    directory: Path,
    *,
    artifact_type: str = DEFAULT_ARTIFACT_TYPE,
    layer_media_type: str = DEFAULT_LAYER_MEDIA_TYPE,
    exclude: Callable[[PurePosixPath], bool] | None = None,
    annotations: Mapping[str, str] | None = None,
    log: JobLog | None = None,
) -> PushedArtifact:
    """Pack every regular file under ``directory`` into an artifact and push it as ``tag``.

    ``exclude`` gets each relative path (directories too: excluding one prunes it). Blobs the
    repository already has are not uploaded again; the manifest is pushed last, so a failure
    leaves the tag untouched.
    """
    warnings: list[str] = []
    try:
        entries = await anyio.to_thread.run_sync(_collect, directory, exclude, warnings)
    except NotADirectoryError:
        raise RegistryError(f"artifact {target.display(tag)}: {directory} is not a directory") from None
    for warning in warnings:
        if log is not None:
            log.warning(f"artifact {target.display(tag)}: {warning}")
    layers: list[Descriptor] = [Descriptor(media_type="", digest="", size=0)] * len(entries)
    limiter = anyio.CapacityLimiter(_CONCURRENCY)

    async def push_one(index: int, entry: _FileEntry) -> None:
        async with limiter:
            digest, size = await _file_digest(entry.path)
            desc = Descriptor(
                media_type=layer_media_type,
                digest=digest,
                size=size,
                annotations={
                    media.ANNOTATION_TITLE: entry.rel,
                    media.ANNOTATION_FILE_MODE: f"{entry.mode:04o}",
                },
            )
            await _ensure_blob(target, desc, entry.path, None)
            layers[index] = desc
            if log is not None:
                log.debug(f"artifact: pushed {entry.rel} ({size} bytes)")

    with first_error():
        async with anyio.create_task_group() as tg:
            empty = Descriptor(media.OCI_EMPTY, media.OCI_EMPTY_DIGEST, len(media.OCI_EMPTY_DATA))
            tg.start_soon(_ensure_blob, target, empty, None, media.OCI_EMPTY_DATA)
            for index, entry in enumerate(entries):
                tg.start_soon(push_one, index, entry)

    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": media.OCI_EMPTY, "digest": media.OCI_EMPTY_DIGEST, "size": 2},
        "layers": [d.to_dict() for d in layers],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    manifest = Manifest.build(document)
    await target.client.put_manifest(target.repository, tag, manifest)
    files = [e.rel for e in entries]
    if log is not None:
        log.info(f"artifact {target.display(tag)}: pushed {len(files)} file(s), digest {manifest.digest}")
    return PushedArtifact(
        digest=manifest.digest, size=manifest.size, media_type=manifest.media_type, files=files
    )


def safe_relative_path(title: str, what: str) -> PurePosixPath:
    """The title as a relative path, or ``UnsafePath`` if it is absolute or climbs out."""
    if not title or "\x00" in title:
        raise UnsafePath(f"{what}: empty or invalid file name in layer title")
    path = PurePosixPath(title)
    if path.is_absolute() or title.startswith("/"):
        raise UnsafePath(f"{what}: layer title {title!r} is an absolute path")
    if any(part == ".." for part in path.parts):
        raise UnsafePath(f"{what}: layer title {title!r} escapes the target directory")
    if not path.parts or path.parts == (".",):
        raise UnsafePath(f"{what}: layer title {title!r} names no file")
    return path


def _check_destination(root: Path, rel: PurePosixPath, what: str) -> Path:
    """Refuse a destination reached through a symlink that leaves ``root``."""
    dest = root.joinpath(*rel.parts)
    probe = root
    for part in rel.parts:
        probe = probe / part
        if probe.is_symlink():
            resolved = probe.resolve()
            if not resolved.is_relative_to(root) or probe == dest:
                raise UnsafePath(
                    f"{what}: {rel} would be written through the symlink {probe.relative_to(root)}"
                )
    parent = dest.parent.resolve() if dest.parent.exists() else dest.parent
    if not (parent == root or parent.is_relative_to(root)):
        raise UnsafePath(f"{what}: {rel} escapes the target directory")
    return dest


def _make_root(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory.resolve()


def _prepare_file(root: Path, rel: PurePosixPath, what: str) -> tuple[Path, Path]:
    """Create the parents, check again (they exist now), name the temporary file."""
    dest = root.joinpath(*rel.parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _check_destination(root, rel, what)
    return dest, dest.with_name(f".{dest.name}.partial-{os.getpid()}")


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)


def _install(partial: Path, dest: Path, mode: int) -> None:
    partial.chmod(mode)
    os.replace(partial, dest)


def file_mode(annotations: Mapping[str, str]) -> int:
    """0755 when the recorded mode had an execute bit, else 0644."""
    try:
        recorded = int(annotations.get(media.ANNOTATION_FILE_MODE, "0644"), 8)
    except ValueError:
        recorded = 0o644
    return 0o755 if recorded & 0o111 else 0o644


async def pull_directory(
    target: RegistryTarget, tag_or_digest: str, directory: Path, *, log: JobLog | None = None
) -> list[str]:
    """Pull the artifact ``tag_or_digest`` and unpack its files into ``directory``.

    Every title is checked before anything is written; layers without a title are skipped.
    Returns the relative paths written, sorted.
    """
    client, repo = target.client, target.repository
    what = f"artifact {target.display(tag_or_digest)}"
    manifest = await client.get_manifest(repo, tag_or_digest)
    if manifest.is_index:
        raise RegistryError(f"{what}: is an index ({manifest.media_type}), not a single artifact")
    root = _make_root(directory)
    plan: list[tuple[Descriptor, PurePosixPath]] = []
    seen: set[PurePosixPath] = set()
    for layer in manifest.layers:
        title = layer.annotations.get(media.ANNOTATION_TITLE)
        if title is None:
            if log is not None:
                log.warning(f"{what}: skipping layer {layer.digest} without a title")
            continue
        rel = safe_relative_path(title, what)
        if rel in seen:
            raise RegistryError(f"{what}: two layers are titled {title!r}")
        seen.add(rel)
        _check_destination(root, rel, what)
        plan.append((layer, rel))

    limiter = anyio.CapacityLimiter(_CONCURRENCY)

    async def fetch(layer: Descriptor, rel: PurePosixPath) -> None:
        async with limiter:
            dest, partial = _prepare_file(root, rel, what)

            async def once() -> None:
                try:
                    async with (
                        await anyio.open_file(partial, "wb") as fh,
                        client.open_blob(repo, layer.digest, size=layer.size) as chunks,
                    ):
                        async for chunk in chunks:
                            await fh.write(chunk)
                except BaseException:
                    _discard(partial)
                    raise

            await retrying(once, attempts=client.retries + 1)
            _install(partial, dest, file_mode(layer.annotations))

    with first_error():
        async with anyio.create_task_group() as tg:
            for layer, rel in plan:
                tg.start_soon(fetch, layer, rel)
    files = sorted(rel.as_posix() for _, rel in plan)
    if log is not None:
        log.info(f"{what}: pulled {len(files)} file(s) into {directory}")
    return files


__all__ = [
    "DEFAULT_ARTIFACT_TYPE",
    "DEFAULT_LAYER_MEDIA_TYPE",
    "PushedArtifact",
    "UnsafePath",
    "pull_directory",
    "push_directory",
    "safe_relative_path",
    "sha256_digest",
]
