"""Image copies between real registries, with skopeo as the oracle."""

from __future__ import annotations

import pytest

from handlers.oci import media
from handlers.oci.auth import Credentials
from handlers.oci.client import RegistryClient
from handlers.oci.copy import BlobProgress, copy_image
from tests.support.registry import (
    PASSWORD,
    USER,
    RegistryServer,
    push_random_image,
    push_random_index,
    skopeo_inspect,
    skopeo_raw_digest,
)

pytestmark = [pytest.mark.oci, pytest.mark.anyio]

KB = 1024


async def test_single_platform_copy_keeps_digest_and_second_copy_transfers_nothing(
    oci_registry: RegistryServer, oci_basic_registry: RegistryServer
) -> None:
    creds = Credentials(USER, PASSWORD)
    async with (
        RegistryClient(oci_registry.host) as src,
        RegistryClient(oci_basic_registry.host, credentials=creds) as dst,
    ):
        pushed = await push_random_image(src, "test/single", "v1", [300 * KB, 5 * KB, 1], seed="single")
        seen: list[BlobProgress] = []
        first = await copy_image(src, "test/single", "v1", dst, "mirror/single", "d1", progress=seen.append)
        assert first.manifest.digest == pushed.digest
        assert first.blobs_copied == 4  # config + 3 layers
        assert {p.action for p in seen} == {"copied"}
        assert sum(p.descriptor.size for p in seen) == first.bytes_copied

        again = await copy_image(src, "test/single", "v1", dst, "mirror/single", "d1")
        assert again.up_to_date
        assert again.blobs_copied == 0
        assert again.bytes_copied == 0

        # A new tag of the same image: the manifest is pushed, every blob is already present.
        other = await copy_image(src, "test/single", "v1", dst, "mirror/single", "d2")
        assert other.blobs_copied == 0
        assert other.blobs_present == 4
    oracle = skopeo_raw_digest(f"{oci_basic_registry.host}/mirror/single:d1", creds=f"{USER}:{PASSWORD}")
    assert oracle == pushed.digest
    info = skopeo_inspect(f"{oci_basic_registry.host}/mirror/single:d2", creds=f"{USER}:{PASSWORD}")
    assert info["Digest"] == pushed.digest
    assert info["Architecture"] == "amd64"


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-manifest-list"])
async def test_two_platform_index_copy(
    oci_registry: RegistryServer, oci_registry_b: RegistryServer, docker: bool
) -> None:
    repo = f"test/multi-{'docker' if docker else 'oci'}"
    async with RegistryClient(oci_registry.host) as src, RegistryClient(oci_registry_b.host) as dst:
        index = await push_random_index(
            src,
            repo,
            "v1",
            [("linux", "amd64"), ("linux", "arm64")],
            [64 * KB, 1 * KB],
            seed=repo,
            docker=docker,
        )
        result = await copy_image(src, repo, "v1", dst, "mirror/" + repo, "v1")
        assert result.manifest.digest == index.digest
        assert result.manifest.media_type == (media.DOCKER_MANIFEST_LIST if docker else media.OCI_INDEX)
        assert result.blobs_copied == 6
        assert result.manifests_pushed == 3
        fetched = await dst.get_manifest("mirror/" + repo, "v1")
        assert fetched.digest == index.digest
        for child in index.children:
            got = await dst.get_manifest("mirror/" + repo, child.digest)
            assert got.digest == child.digest
        second = await copy_image(src, repo, "v1", dst, "mirror/" + repo, "v1")
        assert second.up_to_date
        assert second.bytes_copied == 0
    assert skopeo_raw_digest(f"{oci_registry_b.host}/mirror/{repo}:v1") == index.digest
    for child in index.children:
        assert skopeo_raw_digest(f"{oci_registry_b.host}/mirror/{repo}@{child.digest}") == child.digest


async def test_mount_across_repositories_of_one_registry(oci_registry: RegistryServer) -> None:
    async with RegistryClient(oci_registry.host) as src, RegistryClient(oci_registry.host) as dst:
        pushed = await push_random_image(src, "test/mount-src", "v1", [128 * KB, 2 * KB], seed="mount")
        result = await copy_image(src, "test/mount-src", "v1", dst, "test/mount-dst", "v1")
        assert result.blobs_mounted == 3
        assert result.blobs_copied == 0
        assert dst.stats["bytes_uploaded"] == 0
    assert skopeo_raw_digest(f"{oci_registry.host}/test/mount-dst:v1") == pushed.digest


async def test_chunked_upload_matches_monolithic(
    oci_registry: RegistryServer, oci_registry_b: RegistryServer
) -> None:
    async with (
        RegistryClient(oci_registry.host) as src,
        RegistryClient(oci_registry_b.host, chunk_size=256 * KB) as dst,
    ):
        pushed = await push_random_image(src, "test/chunked", "v1", [1000 * KB + 17], seed="chunked")
        result = await copy_image(src, "test/chunked", "v1", dst, "mirror/chunked", "v1")
        assert result.blobs_copied == 2
        layer = pushed.layers[0]
        out = bytearray()
        async with dst.open_blob("mirror/chunked", layer.digest, size=layer.size) as chunks:
            async for chunk in chunks:
                out += chunk
        assert len(out) == layer.size
    assert skopeo_raw_digest(f"{oci_registry_b.host}/mirror/chunked:v1") == pushed.digest
