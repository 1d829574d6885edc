"""The tools-dir binary cache that the terraform and helm families share.

Each family decides which version a job wants and where to look (handlers/terraform/binary.py,
handlers/helm/binary.py); filling ``<tools_dir>/<tool>/<version>/<tool>`` is common to both:

- ``file_lock``: an exclusive ``fcntl`` lock on a lock file, polled with ``LOCK_NB`` so the wait
  stays cancellable; the kernel drops it if the process dies. Several jobs (possibly in several
  runner processes sharing a tools dir) fetching one version are serialised by it;
- ``download_verified``: stream a mirror's archive into a temporary file next to the cache entry,
  hashing it, refuse it unless its SHA256 is the mirror's, then unpack it (in a thread); the
  temporary file never outlives the call;
- ``install_executable``: write an executable next to its target and rename it into place, so a
  reader sees the old file or the whole new one, never a part;
- ``record_sha256`` / ``verify_recorded``: a cached binary's SHA256, size and mtime kept beside
  it (``<tool>.json``); a binary whose size or mtime moved is hashed again and refused when the
  hash differs, so a corrupted cache never runs (helm's cache records; terraform's does not).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import anyio
import httpx

_CHUNK = 1 << 20


def machine_arch() -> str:
    """``amd64`` / ``arm64`` (as release archives name them) for this machine."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@asynccontextmanager
async def file_lock(path: Path, *, poll_interval: float = 0.05) -> AsyncIterator[None]:
    """Hold an exclusive lock on ``path`` (created 0600) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await anyio.sleep(poll_interval)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def install_executable(source: IO[bytes], target: Path, *, prefix: str) -> None:
    """Copy ``source`` into a temporary file (``prefix``) next to ``target``, mode 0755, and
    rename it into place; on any failure the temporary file is removed and ``target`` untouched."""
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
        tmp.chmod(0o755)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _record_path(binary: Path) -> Path:
    return binary.with_name(f"{binary.name}.json")


def record_sha256(binary: Path, sha256: str) -> None:
    """Keep ``binary``'s SHA256 with its current size and mtime beside it (``<name>.json``)."""
    st = binary.stat()
    record = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = binary.with_name(f".{binary.name}.json.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, _record_path(binary))


def verify_recorded(binary: Path) -> bool:
    """True when ``binary`` is the one recorded; re-hashes only when its size or mtime moved."""
    try:
        record = json.loads(_record_path(binary).read_text())
        st = binary.stat()
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or not record.get("sha256"):
        return False
    if st.st_size == record.get("size") and st.st_mtime_ns == record.get("mtime_ns"):
        return True
    if sha256_file(binary) != record["sha256"]:
        return False
    record_sha256(binary, str(record["sha256"]))
    return True


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


async def download_verified(
    http: httpx.AsyncClient,
    url: str,
    expected_sha256: str,
    target: Path,
    *,
    suffix: str,
    install: Callable[[Path, Path], None],
    unavailable: Callable[[str], Exception],
    mismatch: Callable[[str], Exception],
) -> None:
    """Fetch ``url`` and, when its SHA256 is ``expected_sha256``, ``install(archive, target)``.

    The archive is streamed into a temporary file (``suffix``) in ``target``'s directory and
    hashed on the way. A non-200 answer raises ``unavailable(message)``; another SHA256 raises
    ``mismatch(actual_sha256)`` and nothing is installed. The archive is removed in every case.
    """
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=suffix, dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            async with http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise unavailable(f"{url} answered HTTP {response.status_code}")
                async for chunk in response.aiter_bytes(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise mismatch(actual)
        await anyio.to_thread.run_sync(install, tmp, target)
    finally:
        await anyio.to_thread.run_sync(_remove, tmp)
