"""scripts/fetch-verified.py: the Dockerfile's download-and-verify step, run as a real process."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO
from tests.support.static import serve_directory

SCRIPT = REPO / "scripts" / "fetch-verified.py"
PAYLOAD = b"#!/bin/sh\necho fake tool\n"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def archives(tmp_path: Path) -> dict[str, Path]:
    zpath = tmp_path / "tool_1.0_linux_amd64.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("tool", PAYLOAD)
        zf.writestr("LICENSE.txt", "license")
    tpath = tmp_path / "tool-v1.0-linux-amd64.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        info = tarfile.TarInfo("linux-amd64/tool")
        info.size = len(PAYLOAD)
        tf.addfile(info, io.BytesIO(PAYLOAD))
    bare = tmp_path / "tool-bare"
    bare.write_bytes(PAYLOAD)
    return {"zip": zpath, "tgz": tpath, "bare": bare}


@pytest.mark.unit
@pytest.mark.parametrize(("kind", "member"), [("zip", "tool"), ("tgz", "linux-amd64/tool"), ("bare", None)])
def test_installs_the_member_when_the_checksum_matches(
    archives: dict[str, Path], tmp_path: Path, kind: str, member: str | None
) -> None:
    out = tmp_path / "bin" / "tool"
    args = ["--url", archives[kind].as_uri(), "--sha256", sha(archives[kind]), "--out", str(out)]
    if member:
        args += ["--member", member]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == PAYLOAD
    assert out.stat().st_mode & 0o777 == 0o755
    assert "sha256 ok" in proc.stdout


@pytest.mark.unit
def test_a_wrong_checksum_is_refused_and_nothing_is_written(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bin" / "tool"
    proc = run("--url", archives["zip"].as_uri(), "--sha256", "0" * 64, "--member", "tool", "--out", str(out))
    assert proc.returncode == 1
    assert "SHA256 mismatch" in proc.stderr
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


@pytest.mark.unit
@pytest.mark.parametrize(
    ("sha_arg", "member", "message"),
    [
        ("not-a-sha", "tool", "must be 64 hex digits"),
        (None, "missing/tool", "is not in the archive"),
    ],
)
def test_bad_arguments_fail_clearly(
    archives: dict[str, Path], tmp_path: Path, sha_arg: str | None, member: str, message: str
) -> None:
    digest = sha_arg or sha(archives["zip"])
    proc = run(
        "--url",
        archives["zip"].as_uri(),
        "--sha256",
        digest,
        "--member",
        member,
        "--out",
        str(tmp_path / "t"),
    )
    assert proc.returncode == 1
    assert message in proc.stderr
    assert not (tmp_path / "t").exists()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as url:
        yield url, root


@pytest.mark.integration
def test_over_http_and_credentials_never_printed(
    archives: dict[str, Path], http_root: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = http_root
    (root / archives["tgz"].name).write_bytes(archives["tgz"].read_bytes())
    url = f"{base}/{archives['tgz'].name}".replace("http://", "http://mirror-user:hunter2-pass@")
    out = tmp_path / "tool"
    proc = run(
        "--url", url, "--sha256", sha(archives["tgz"]), "--member", "linux-amd64/tool", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == PAYLOAD
    assert "hunter2-pass" not in proc.stdout + proc.stderr
    bad = run("--url", url, "--sha256", "f" * 64, "--member", "linux-amd64/tool", "--out", str(out))
    assert bad.returncode == 1
    assert "hunter2-pass" not in bad.stdout + bad.stderr
    assert "127.0.0.1" in bad.stderr
