"""A job's child that tries to read its ancestors' secrets through /proc (issue 11's probe).

Usage: ``probe_proc.py OUT``. Walks up from its parent to pid 1 and, for each ancestor, reads
what the same user might read: ``environ``, ``cmdline``, the environment region of ``mem``,
``fd/*``, each task's ``environ``. Everything it could read is written to ``OUT`` (so the test
can look for the token, which this script is not told), followed by a summary line per entry.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _read(path: str) -> bytes | str:
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror}"


def _env_region(pid: int) -> bytes | str:
    """The start-up environment straight from the process's memory."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[-4]), int(fields[-3])  # env_start, env_end
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(start)
            return mem.read(max(0, end - start))
    except (OSError, ValueError, IndexError) as exc:
        return f"{type(exc).__name__}: {exc}"


def probe(pid: int) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {
        "environ": _read(f"/proc/{pid}/environ"),
        "cmdline": _read(f"/proc/{pid}/cmdline"),
        "mem(env)": _env_region(pid),
    }
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = f"/proc/{pid}/fd/{fd}"
            if os.path.isfile(target):
                found[f"fd/{fd}"] = _read(target)
    except OSError as exc:
        found["fd"] = f"{type(exc).__name__}: {exc.strerror}"
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            found[f"task/{tid}/environ"] = _read(f"/proc/{pid}/task/{tid}/environ")
    except OSError as exc:
        found["task"] = f"{type(exc).__name__}: {exc.strerror}"
    return found


def main() -> None:
    out = Path(sys.argv[1])
    summary = []
    blob = b""
    pid = os.getppid()
    while pid > 1:
        for entry, value in probe(pid).items():
            readable = isinstance(value, bytes)
            summary.append(
                {
                    "pid": pid,
                    "entry": entry,
                    "readable": readable,
                    "detail": len(value) if readable else value,
                }
            )
            if isinstance(value, bytes):
                blob += value + b"\n"
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            break
    own = _read("/proc/self/environ")
    summary.append({"pid": os.getpid(), "entry": "self/environ", "readable": isinstance(own, bytes)})
    out.write_bytes(blob + b"\n--summary--\n" + json.dumps(summary).encode())
    print(f"probe: {sum(1 for s in summary if s['readable'])} of {len(summary)} entries readable")


if __name__ == "__main__":
    main()
