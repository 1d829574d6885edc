"""An exclusive ``fcntl`` lock on a file, awaited without blocking the event loop.

Kept as terraform's name for it (its plugin cache and its CLI config lock here): the lock itself
is the tools-dir cache's, handlers/common/toolcache.file_lock, shared with the helm family.
"""

from __future__ import annotations

from handlers.common.toolcache import file_lock

__all__ = ["file_lock"]
