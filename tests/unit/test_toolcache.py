"""handlers/common/toolcache.py: the tools-dir cache shared by terraform and helm.

The lock is a real ``flock`` (also across processes), the downloads come from a real HTTP server
on loopback; the families' own tests (tests/terraform/test_binary.py, tests/helm/test_mirror.py,
tests/helm/test_decisions.py) drive the same code through their resolvers.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from handlers.common.toolcache import (
    download_verified,
    file_lock,
    install_executable,
    record_sha256,
    sha256_file,
    verify_recorded,
)
from tests.support.static import serve_directory

pytestmark = [pytest.mark.unit]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A directory served over HTTP on loopback: (base URL, directory)."""
    root = tmp_path / "served"
    root.mkdir()
    with serve_directory(root) as url:
        yield url, root


class Refused(Exception):
    pass


class Missing(Exception):
    pass


def copy_install(archive: Path, target: Path) -> None:
    with archive.open("rb") as src:
        install_executable(src, target, prefix=".tool-")


# --------------------------------------------------------------------------- file_lock


@pytest.mark.anyio
async def test_file_lock_serialises_holders_and_its_wait_is_cancellable(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "1.0.0.lock"
    order: list[str] = []

    async def holder(name: str) -> None:
        async with file_lock(lock, poll_interval=0.01):
            order.append(f"{name} in")
            await anyio.sleep(0.2)
            order.append(f"{name} out")

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder, "a")
        await anyio.sleep(0.05)
        tg.start_soon(holder, "b")
    assert order == ["a in", "a out", "b in", "b out"]
    assert lock.stat().st_mode & 0o777 == 0o600

    # Held by another process: our wait polls, and a cancel ends it without the lock.
    script = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(30)\n"
    )
    other = subprocess.Popen([sys.executable, "-c", script, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "held"
        entered = False
        with anyio.move_on_after(0.3) as scope:
            async with file_lock(lock, poll_interval=0.01):
                entered = True
        assert scope.cancelled_caught
        assert not entered
    finally:
        other.kill()
        other.wait()
    # The kernel dropped the dead process's lock.
    with anyio.fail_after(5):
        async with file_lock(lock):
            pass


# --------------------------------------------------------------------------- install_executable


def test_install_executable_renames_into_place_or_leaves_the_target(tmp_path: Path) -> None:
    target = tmp_path / "tool"
    install_executable(io.BytesIO(b"#!/bin/sh\necho one\n"), target, prefix=".tool-")
    assert target.read_bytes() == b"#!/bin/sh\necho one\n"
    assert target.stat().st_mode & 0o777 == 0o755

    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        install_executable(io.BufferedReader(Broken()), target, prefix=".tool-")
    assert target.read_bytes() == b"#!/bin/sh\necho one\n", "the old binary is untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tool"], "no temporary file is left"


# --------------------------------------------------------------------------- the hash records


def test_recorded_hash_is_checked_only_when_size_or_mtime_move(tmp_path: Path) -> None:
    binary = tmp_path / "helm"
    binary.write_bytes(b"binary v1")
    assert not verify_recorded(binary), "no record: not trusted"
    record_sha256(binary, sha256_file(binary))
    assert (tmp_path / "helm.json").is_file()
    assert verify_recorded(binary)

    # Touched, same bytes: hashed again, accepted, and the record follows the new mtime.
    st = binary.stat()
    os.utime(binary, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    assert verify_recorded(binary)
    assert f'"mtime_ns": {st.st_mtime_ns + 5_000_000}' in (tmp_path / "helm.json").read_text()

    # Other bytes: refused.
    binary.write_bytes(b"binary v2 (corrupted)")
    assert not verify_recorded(binary)
    (tmp_path / "helm.json").write_text("not json")
    assert not verify_recorded(binary)
    assert sha256_file(binary) == hashlib.sha256(b"binary v2 (corrupted)").hexdigest()


# --------------------------------------------------------------------------- download_verified


@pytest.mark.anyio
async def test_download_verified_installs_only_the_expected_bytes(
    tmp_path: Path, served: tuple[str, Path]
) -> None:
    base, root = served
    payload = os.urandom(3 << 20)  # several chunks
    (root / "tool.bin").write_bytes(payload)
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / "tool"
    good = hashlib.sha256(payload).hexdigest()
    refused: list[str] = []

    def mismatch(actual: str) -> Refused:
        refused.append(actual)
        return Refused(actual)

    async with httpx.AsyncClient() as http:

        async def fetch(name: str, sha256: str) -> None:
            await download_verified(
                http,
                f"{base}/{name}",
                sha256,
                target,
                suffix=".bin",
                install=copy_install,
                unavailable=Missing,
                mismatch=mismatch,
            )

        with pytest.raises(Refused):
            await fetch("tool.bin", "0" * 64)
        assert refused == [good]
        assert list(cache.iterdir()) == [], "a refused download leaves nothing"

        with pytest.raises(Missing, match=r"/absent.bin answered HTTP 404"):
            await fetch("absent.bin", good)
        assert list(cache.iterdir()) == []

        await fetch("tool.bin", good)
    assert target.read_bytes() == payload
    assert [p.name for p in cache.iterdir()] == ["tool"], "the downloaded archive is removed"
