"""helm from a get.helm.sh-style mirror (``RUNNER_HELM_MIRROR_URL``) served on loopback.

The archive is made from the installed helm (``<os>-<arch>/helm`` in
``helm-v<V>-<os>-<arch>.tar.gz``, next to its ``.sha256sum``); PATH holds no helm, so the mirror is
the only place left. A download is verified, cached and run; one whose checksum does not match is
refused and nothing is cached.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.helm.binary import HelmChecksumMismatch, VersionRequest, platform_suffix, resolve_helm
from runner.testing import RecordingLog, make_context
from tests.helm.conftest import HELM_VERSION
from tests.support.static import serve_directory

ARCHIVE = f"helm-v{HELM_VERSION}-{platform_suffix()}.tar.gz"


@pytest.fixture(scope="module")
def mirror_dir(helm_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("helm-mirror")
    good, bad = root / "good", root / "bad"
    good.mkdir()
    with tarfile.open(good / ARCHIVE, "w:gz", compresslevel=1) as tgz:
        tgz.add(helm_bin, arcname=f"{platform_suffix()}/helm")
    digest = hashlib.sha256((good / ARCHIVE).read_bytes()).hexdigest()
    (good / f"{ARCHIVE}.sha256sum").write_text(f"{digest}  {ARCHIVE}\n")
    shutil.copytree(good, bad)
    (bad / f"{ARCHIVE}.sha256sum").write_text(f"{'0' * 64}  {ARCHIVE}\n")
    return root


@pytest.fixture(scope="module")
def mirror_url(mirror_dir: Path) -> Iterator[str]:
    with serve_directory(mirror_dir) as url:
        yield url


@pytest.fixture
def no_helm_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.anyio
@pytest.mark.usefixtures("no_helm_on_path")
async def test_download_from_the_mirror_is_verified_cached_and_runs(mirror_url: str, tmp_path: Path) -> None:
    ctx = make_context("helm-chart-deploy", {}, workspace=tmp_path)
    tools, request = tmp_path / "tools", VersionRequest(HELM_VERSION, "test")
    got = await resolve_helm(
        request, tools_dir=tools, mirror_url=f"{mirror_url}/good/", processes=ctx.processes, log=ctx.log
    )
    assert got.source == "mirror"
    assert got.path == tools / "helm" / HELM_VERSION / "helm"
    assert (got.path.parent / "helm.json").is_file()
    out = subprocess.run([str(got.path), "version", "--short"], capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith(f"v{HELM_VERSION}")
    assert isinstance(ctx.log, RecordingLog)
    assert any(m.startswith("helm downloaded and verified") for m in ctx.log.messages())
    again = await resolve_helm(
        request, tools_dir=tools, mirror_url=f"{mirror_url}/good", processes=ctx.processes, log=ctx.log
    )
    assert again.source == "cache"
    assert not list(got.path.parent.glob(".download-*")), "no temporary download left"


@pytest.mark.anyio
@pytest.mark.usefixtures("no_helm_on_path")
async def test_a_wrong_checksum_is_refused_and_nothing_is_cached(mirror_url: str, tmp_path: Path) -> None:
    ctx = make_context("helm-chart-deploy", {}, workspace=tmp_path)
    tools = tmp_path / "tools"
    with pytest.raises(HelmChecksumMismatch, match=r"the mirror says 0{64}: refused"):
        await resolve_helm(
            VersionRequest(HELM_VERSION, "test"),
            tools_dir=tools,
            mirror_url=f"{mirror_url}/bad",
            processes=ctx.processes,
            log=ctx.log,
        )
    assert not (tools / "helm" / HELM_VERSION / "helm").exists()
    assert not list((tools / "helm" / HELM_VERSION).iterdir()), "no temporary download left"
