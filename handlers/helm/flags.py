"""The flags that differ between helm 3 and helm 4, decided from the binary's version.

helm 4 removed ``--atomic`` (it is ``--rollback-on-failure`` there) and turned ``--wait`` into a
strategy (``--wait=watcher`` is what helm 3's bare ``--wait`` did). A job that pins a version knows
its major already; an unpinned helm from PATH is asked (``helm version``), because passing
``--atomic`` to helm 4 fails the job before anything is deployed. The answer is kept in-process
per binary (its path, size and mtime), so a runner asks each binary once, not once per job.
"""

from __future__ import annotations

import os

from handlers.helm.binary import HelmBinary, path_version
from runner.sdk import ProcessRunner

#: What an unpinned helm whose version cannot be read is taken for (the older flags).
DEFAULT_MAJOR = 3

#: path -> (size, mtime_ns, major) of the unpinned helms asked so far; one entry per path, so a
#: replaced binary (new size or mtime) is asked again and the table never grows past the paths.
_asked: dict[str, tuple[int, int, int]] = {}


def major_of(version: str | None) -> int:
    """``4.1.4`` -> 4; None or unreadable -> ``DEFAULT_MAJOR``."""
    head = (version or "").lstrip("vV").split(".", 1)[0]
    return int(head) if head.isdigit() else DEFAULT_MAJOR


async def helm_major(binary: HelmBinary, processes: ProcessRunner) -> int:
    """The binary's major version: its pinned version's, else ``helm version``'s (asked once per
    binary; an unreadable answer is not kept, so the next job asks again)."""
    if binary.version is not None:
        return major_of(binary.version)
    path = str(binary.path)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None:
        known = _asked.get(path)
        if known is not None and known[:2] == (st.st_size, st.st_mtime_ns):
            return known[2]
    version = await path_version(path, processes)
    major = major_of(version)
    if st is not None and version is not None:
        _asked[path] = (st.st_size, st.st_mtime_ns, major)
    return major


def wait_flag(major: int) -> str:
    return "--wait=watcher" if major >= 4 else "--wait"


def upgrade_flags(major: int, timeout: int) -> list[str]:
    """``helm upgrade --install``: wait for readiness and roll back on failure, within ``timeout``."""
    rollback = "--rollback-on-failure" if major >= 4 else "--atomic"
    return [wait_flag(major), rollback, f"--timeout={timeout}s"]
