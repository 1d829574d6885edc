"""OCI artifacts: directory -> artifact -> directory, byte-identical; unsafe titles refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

import pytest

from handlers.oci import media
from handlers.oci.artifacts import UnsafePath, pull_directory, push_directory
from handlers.oci.descriptors import Manifest, sha256_digest
from handlers.oci.registry import RegistryTarget, open_registry
from runner.api.plans import OCIRegistryRepository
from runner.config import Config
from tests.support.registry import PASSWORD, USER, RegistryServer, skopeo_raw_digest

pytestmark = [pytest.mark.oci, pytest.mark.anyio]

CONFIG = Config(runner_id="r", api_url="http://127.0.0.1:1", api_token="t")


async def target_for(server: RegistryServer, path: str) -> RegistryTarget:
    auth = {"OCIAuth": {"Username": USER, "Password": PASSWORD}} if server.users else {}
    repo = OCIRegistryRepository.model_validate(
        {"RegistryType": "private_oci", "Repository": f"{server.host}/{path}", **auth}
    )
    return await open_registry(repo, config=CONFIG)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "main.tf": b'terraform { backend "s3" {} }\n',
        "modules/net/vpc.tf": b"resource x y {}\n" * 50,
        "hooks/pre-apply.sh": b"#!/bin/sh\necho pre\n",
        "empty.txt": b"",
        "data/blob.bin": os.urandom(3 * 1024 * 1024 + 7),
        ".terraform/ignored": b"cache",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "hooks/pre-apply.sh").chmod(0o755)
    (root / "link-inside.tf").symlink_to(root / "main.tf")
    (root / "link-outside").symlink_to("/etc/hostname")
    return files


async def test_round_trip_is_byte_identical(oci_basic_registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    target = await target_for(oci_basic_registry, "art/module")
    try:
        pushed = await push_directory(
            target,
            "bld1",
            src,
            layer_media_type="file/terraform",
            exclude=lambda p: p.parts[0] == ".terraform",
            annotations={"component_id": "cmp1"},
        )
        expected = sorted([*(k for k in files if not k.startswith(".terraform")), "link-inside.tf"])
        assert pushed.files == expected
        assert pushed.media_type == media.OCI_MANIFEST

        # The same files give the same digest (no timestamps).
        again = await push_directory(
            target,
            "bld1-again",
            src,
            layer_media_type="file/terraform",
            exclude=lambda p: p.parts[0] == ".terraform",
            annotations={"component_id": "cmp1"},
        )
        assert again.digest == pushed.digest

        out = tmp_path / "out"
        pulled = await pull_directory(target, "bld1", out)
        assert pulled == expected
        for rel in expected:
            source = src / ("main.tf" if rel == "link-inside.tf" else rel)
            assert (out / rel).read_bytes() == source.read_bytes(), rel
        assert stat.S_IMODE((out / "hooks/pre-apply.sh").stat().st_mode) == 0o755
        assert stat.S_IMODE((out / "main.tf").stat().st_mode) == 0o644
        assert not (out / ".terraform").exists()
        assert not (out / "link-outside").exists()
        # Pull by digest too.
        assert await pull_directory(target, pushed.digest, tmp_path / "by-digest") == expected

        manifest = await target.client.get_manifest(target.repository, "bld1")
        assert manifest.artifact_type == "application/vnd.nuon.artifact"
        assert manifest.annotations == {"component_id": "cmp1"}
        assert {layer.media_type for layer in manifest.layers} == {"file/terraform"}
    finally:
        await target.aclose()
    # skopeo (the oracle) sees the manifest we pushed, byte for byte.
    assert (
        skopeo_raw_digest(f"{oci_basic_registry.host}/art/module:bld1", creds=f"{USER}:{PASSWORD}")
        == pushed.digest
    )


async def push_crafted(target: RegistryTarget, tag: str, titles: list[str]) -> None:
    layers = []
    for index, title in enumerate(titles):
        data = f"evil {index}\n".encode()
        digest = sha256_digest(data)
        await target.client.push_blob(target.repository, digest, len(data), data)
        layers.append(
            {
                "mediaType": media.OCI_LAYER_TAR,
                "digest": digest,
                "size": len(data),
                "annotations": {media.ANNOTATION_TITLE: title},
            }
        )
    await target.client.push_blob(target.repository, media.OCI_EMPTY_DIGEST, 2, media.OCI_EMPTY_DATA)
    manifest = Manifest.build(
        {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "artifactType": "application/vnd.nuon.artifact",
            "config": {"mediaType": media.OCI_EMPTY, "digest": media.OCI_EMPTY_DIGEST, "size": 2},
            "layers": layers,
        }
    )
    await target.client.put_manifest(target.repository, tag, manifest)


@pytest.mark.parametrize(
    ("titles", "reason"),
    [
        (["ok.txt", "../escape.txt"], "escapes the target directory"),
        (["sub/../../escape.txt"], "escapes the target directory"),
        (["/etc/evil"], "is an absolute path"),
        ([""], "empty or invalid"),
    ],
)
async def test_pull_refuses_escaping_titles(
    oci_registry: RegistryServer, tmp_path: Path, titles: list[str], reason: str
) -> None:
    target = await target_for(oci_registry, "art/evil")
    try:
        tag = f"t{abs(hash(tuple(titles))) % 10**8}"
        await push_crafted(target, tag, titles)
        out = tmp_path / "out"
        with pytest.raises(UnsafePath) as info:
            await pull_directory(target, tag, out)
        assert reason in str(info.value)
        assert f"{oci_registry.host}/art/evil:{tag}" in str(info.value)
        # Nothing was written, not even the harmless file listed first.
        assert list(out.rglob("*")) == []
        assert not (tmp_path / "escape.txt").exists()
    finally:
        await target.aclose()


async def test_pull_refuses_symlink_escape(oci_registry: RegistryServer, tmp_path: Path) -> None:
    target = await target_for(oci_registry, "art/symlink")
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside)
    try:
        await push_crafted(target, "v1", ["sub/planted.sh"])
        with pytest.raises(UnsafePath) as info:
            await pull_directory(target, "v1", out)
        assert "symlink" in str(info.value)
        assert list(outside.iterdir()) == []
    finally:
        await target.aclose()


@pytest.mark.unit
def test_exclude_gets_relative_posix_paths(tmp_path: Path) -> None:
    from handlers.oci.artifacts import _collect

    make_tree(tmp_path)
    seen: list[PurePosixPath] = []

    def exclude(path: PurePosixPath) -> bool:
        seen.append(path)
        return path.name == "modules"

    warnings: list[str] = []
    entries = _collect(tmp_path, exclude, warnings)
    assert PurePosixPath("modules") in seen
    assert all(not p.is_absolute() for p in seen)
    assert "modules/net/vpc.tf" not in [e.rel for e in entries]
    assert any("link-outside" in w for w in warnings)
