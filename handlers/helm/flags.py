"""The flags that differ between helm 3 and helm 4, decided from the binary's version.

helm 4 removed ``--atomic`` (it is ``--rollback-on-failure`` there) and turned ``--wait`` into a
strategy (``--wait=watcher`` is what helm 3's bare ``--wait`` did). A job that pins a version knows
its major already; an unpinned helm from PATH is asked once (``helm version``), because passing
``--atomic`` to helm 4 fails the job before anything is deployed.
"""

from __future__ import annotations

from handlers.helm.binary import HelmBinary, path_version
from runner.sdk import ProcessRunner

#: What an unpinned helm whose version cannot be read is taken for (the older flags).
DEFAULT_MAJOR = 3


def major_of(version: str | None) -> int:
    """``4.1.4`` -> 4; None or unreadable -> ``DEFAULT_MAJOR``."""
    head = (version or "").lstrip("vV").split(".", 1)[0]
    return int(head) if head.isdigit() else DEFAULT_MAJOR


async def helm_major(binary: HelmBinary, processes: ProcessRunner) -> int:
    if binary.version is not None:
        return major_of(binary.version)
    return major_of(await path_version(str(binary.path), processes))


def wait_flag(major: int) -> str:
    return "--wait=watcher" if major >= 4 else "--wait"


def upgrade_flags(major: int, timeout: int) -> list[str]:
    """``helm upgrade --install``: wait for readiness and roll back on failure, within ``timeout``."""
    rollback = "--rollback-on-failure" if major >= 4 else "--atomic"
    return [wait_flag(major), rollback, f"--timeout={timeout}s"]
