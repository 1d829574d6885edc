"""An exclusive ``fcntl`` lock on a file, awaited without blocking the event loop.

Several jobs (possibly in several runner processes sharing a tools directory) download the same
terraform version or fill the same plugin cache; a lock file serialises them. The lock is polled
with ``LOCK_NB`` so waiting stays cancellable, and the kernel drops it if the process dies.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio


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
