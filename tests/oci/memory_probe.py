"""Run as ``python -m tests.oci.memory_probe SRC_HOST DST_HOST SIZE``: push an image with one
``SIZE``-byte layer to SRC and copy it to DST, printing the peak RSS growth of each phase as
JSON. A separate process so the measurement is not disturbed by pytest's own memory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from handlers.oci.client import RegistryClient
from handlers.oci.copy import copy_image
from tests.support.registry import push_random_image


def peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def reset_peak() -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


async def main(src_host: str, dst_host: str, size: int) -> dict[str, int]:
    out: dict[str, int] = {}
    async with RegistryClient(src_host) as src, RegistryClient(dst_host) as dst:
        # Warm up every code path with a small image first.
        await push_random_image(src, "mem/warm", "v1", [100_000], seed="warm")
        await copy_image(src, "mem/warm", "v1", dst, "mem/warm", "v1")
        reset_peak()
        base = peak_kb()
        await push_random_image(src, "mem/big", "v1", [size], seed=f"big-{size}")
        out["push_growth_kb"] = peak_kb() - base
        reset_peak()
        base = peak_kb()
        result = await copy_image(src, "mem/big", "v1", dst, "mem/big", "v1")
        out["copy_growth_kb"] = peak_kb() - base
        out["bytes_copied"] = result.bytes_copied
        out["peak_kb"] = peak_kb()
    return out


if __name__ == "__main__":
    print(json.dumps(anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))))
