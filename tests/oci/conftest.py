"""The oci tier runs its async tests on asyncio (anyio's pytest plugin)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def edge_registry(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """tests/oci/edge_registry.py served by uvicorn on a free loopback port; yields host:port."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.support.registry import _stop, _wait_http, free_port

    port = free_port()
    log = tmp_path_factory.mktemp("edge") / "edge.log"
    root = Path(__file__).resolve().parents[2]
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.oci.edge_registry:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdout=fh,
            stderr=fh,
            cwd=root,
        )
    _wait_http(f"http://127.0.0.1:{port}/v2/", proc, log)
    yield f"127.0.0.1:{port}"
    _stop(proc)
