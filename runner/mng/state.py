"""The supervisor's state file: which version runs, and how to find the workload again.

The workload must outlive a ``kill -9`` of mng (its own session in process mode, dockerd's child
in container mode), so a restarted mng adopts it instead of starting a second one. This file is
how: the pid and its kernel start time (a reused pid never matches), or the container's name; the
version running and the one before it; and whether the workload is held stopped on purpose.
Written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

STATE_FILE = "workload.json"


@dataclass
class WorkloadState:
    mode: str = ""
    version: str = ""
    previous_version: str = ""
    pid: int = 0
    #: Field 22 of /proc/<pid>/stat: with the pid, identifies one process for its whole life.
    pid_start: int = 0
    container: str = ""
    held: bool = False
    held_reason: str = ""

    @classmethod
    def load(cls, path: Path) -> WorkloadState:
        try:
            data: Any = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError):
            return cls()  # unreadable: start from scratch rather than refuse to supervise
        if not isinstance(data, dict):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(asdict(self), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when there is no such process
    (or it is a zombie: dead, waiting to be reaped)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ')'.
    rest = raw.rsplit(")", 1)[-1].split()
    if not rest or rest[0] == "Z":
        return None
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def same_process_alive(pid: int, start: int) -> bool:
    return pid > 0 and start > 0 and process_start_time(pid) == start
