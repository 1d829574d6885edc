"""Per-execution directories under the runner's state dir, and a disk-space guard.

Why: the reference runner works in ``/tmp/<id>`` (mode 0777) and, at the start of every job,
deletes every ``/tmp/{workspace,run,plugin,archive}*`` it finds, including the directories of
jobs running concurrently in other loops. Here each execution owns exactly one private (0700)
directory, ``<root>/<execution_id>``, with its own ``tmp/`` and ``.home/`` (the child
processes' TMPDIR and HOME). A job removes its own directory; the start-up ``sweep`` removes
what a crashed runner left behind, sparing only what the caller says to keep. Nothing else
ever deletes a workspace.

A nearly full disk fails ``create`` with ``DiskFull`` and a message that says so, rather than a
tool failing later with a puzzling write error.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import structlog

from runner.api.models import ErrorCode
from runner.handler import HandlerError

__all__ = [
    "DEFAULT_MIN_FREE_BYTES",
    "DiskFull",
    "InvalidExecutionId",
    "Workspaces",
    "check_execution_id",
    "free_bytes",
    "remove_tree",
]

_log = structlog.get_logger("runner.workspace")

DEFAULT_MIN_FREE_BYTES = 100 * 1024 * 1024
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class InvalidExecutionId(ValueError):
    """An execution id that cannot safely name a file or directory (``/``, ``..``, empty...)."""


class DiskFull(HandlerError):
    """Not enough free space to start a job; the message names the directory and the figures."""

    code = ErrorCode.INTERNAL


def check_execution_id(execution_id: str) -> str:
    """Return the id if it is a safe single path component, else raise ``InvalidExecutionId``."""
    if not _ID_RE.fullmatch(execution_id) or ".." in execution_id:
        raise InvalidExecutionId(f"unsafe execution id for a path: {execution_id!r}")
    return execution_id


def free_bytes(path: Path) -> int:
    """Bytes available to an unprivileged writer on the file system holding ``path``.

    ``path`` need not exist yet: its nearest existing ancestor is measured.
    """
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize


def _make_writable(path: str) -> None:
    """Give the owner rwx on a directory (or rw on a file) so its entries can be removed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    wanted = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
    if st.st_mode & wanted != wanted:
        os.chmod(path, stat.S_IMODE(st.st_mode) | wanted)


def remove_tree(path: Path) -> None:
    """``rm -rf`` that copes with read-only directories (Go module caches, provider plugins).

    Missing paths are fine; symlinks are removed, never followed. Raises ``OSError`` when
    something still cannot be removed (a mount point, a busy file system).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink(missing_ok=True)
        return
    # Open up every directory first, top-down, so rmtree can list and unlink everything.
    _make_writable(str(path))
    for top, dirnames, _files in os.walk(path, onerror=lambda _exc: None):
        for name in dirnames:
            _make_writable(os.path.join(top, name))

    def onexc(func: Callable[..., Any], failed: str, exc: BaseException) -> None:
        if isinstance(exc, FileNotFoundError):
            return
        if isinstance(exc, PermissionError):
            _make_writable(os.path.dirname(failed))
            _make_writable(failed)
            try:
                func(failed)
            except FileNotFoundError:
                return
            return
        raise exc

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=onexc)
    else:
        shutil.rmtree(path, onerror=lambda func, failed, exc_info: onexc(func, failed, exc_info[1]))


class Workspaces:
    """The directory of every execution's workspace: ``root/<execution_id>``."""

    def __init__(self, root: Path, *, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def path(self, execution_id: str) -> Path:
        return self.root / check_execution_id(execution_id)

    def create(self, execution_id: str) -> Path:
        """A fresh, empty, private workspace with ``tmp/`` and ``.home/``.

        Anything already under that id (left by a crashed runner) is removed first. Raises
        ``DiskFull`` when the file system has less than ``min_free_bytes`` free.
        """
        target = self.path(execution_id)
        available = free_bytes(self.root)
        if available < self.min_free_bytes:
            raise DiskFull(
                f"disk full: only {available // (1024 * 1024)} MiB free in {self.root}, "
                f"a job needs at least {self.min_free_bytes // (1024 * 1024)} MiB",
                free_bytes=available,
                required_bytes=self.min_free_bytes,
                path=str(self.root),
            )
        if os.path.lexists(target):
            remove_tree(target)
        try:
            target.mkdir(mode=0o700)
            for sub in ("tmp", ".home"):
                (target / sub).mkdir(mode=0o700)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(
                    f"disk full: cannot create a workspace in {self.root}: {exc.strerror}"
                ) from None
            raise
        os.chmod(target, 0o700)
        return target

    def remove(self, execution_id: str) -> None:
        """Remove one workspace; a missing one is fine. Raises ``OSError`` if it cannot be removed."""
        remove_tree(self.path(execution_id))

    def sweep(self, keep: Collection[str] = ()) -> list[str]:
        """Start-up sweep: remove every entry of the root not named in ``keep``; return the names.

        An entry that cannot be removed is logged and left (it is retried at the next start).
        """
        kept = set(keep)
        removed: list[str] = []
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return removed
        for name in entries:
            if name in kept:
                continue
            try:
                remove_tree(self.root / name)
            except OSError as exc:
                _log.error("could not remove stale workspace", workspace=name, error=str(exc))
                continue
            removed.append(name)
        if removed:
            _log.info("removed stale workspaces", count=len(removed), workspaces=removed)
        return removed

    def usage_bytes(self) -> int:
        """Disk blocks used under the root (hard links counted once; symlinks not followed)."""
        seen: set[tuple[int, int]] = set()
        total = 0
        for top, dirnames, filenames in os.walk(self.root, onerror=lambda _exc: None):
            for name in (*dirnames, *filenames):
                try:
                    st = os.lstat(os.path.join(top, name))
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_blocks * 512
        return total
