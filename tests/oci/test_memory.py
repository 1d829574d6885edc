"""A 200 MB layer streams through with flat memory (peak RSS measured in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.registry import RegistryServer, skopeo_raw_digest

pytestmark = pytest.mark.oci

SIZE = 200 * 1024 * 1024
#: Allowed peak RSS growth while pushing / copying a 200 MB layer.
BUDGET_KB = 40 * 1024


def test_200mb_layer_copies_with_flat_memory(
    oci_registry: RegistryServer, oci_registry_b: RegistryServer
) -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "tests.oci.memory_probe", oci_registry.host, oci_registry_b.host, str(SIZE)],
        cwd=root,
        capture_output=True,
        check=True,
        timeout=120,
    )
    figures = json.loads(out.stdout)
    print(figures)
    assert figures["bytes_copied"] >= SIZE
    assert figures["push_growth_kb"] < BUDGET_KB, figures
    assert figures["copy_growth_kb"] < BUDGET_KB, figures
    assert skopeo_raw_digest(f"{oci_registry_b.host}/mem/big:v1") == skopeo_raw_digest(
        f"{oci_registry.host}/mem/big:v1"
    )
