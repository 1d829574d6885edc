"""The oci-sync and container-image-build handlers against real registries, driven by hand
(prepare -> execute -> cleanup) with ``runner.testing``'s JobContext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from handlers.oci.auth import Credentials
from handlers.oci.client import RegistryClient
from handlers.oci.image_build import ContainerImageBuildHandler
from handlers.oci.sync import OciSyncHandler
from runner.sdk import HandlerError, JobContext
from runner.testing import RecordingLog, RecordingSecrets, make_context, run_handler
from tests.support.registry import PASSWORD, USER, RegistryServer, push_random_image, skopeo_inspect

pytestmark = [pytest.mark.oci, pytest.mark.anyio]

OUTPUT_KEYS = {
    "tag",
    "repository",
    "media_type",
    "digest",
    "size",
    "urls",
    "annotations",
    "artifact_type",
    "platform",
}
PLATFORM_KEYS = {"architecture", "os", "os_version", "variant", "os_features"}


def repo(host: str, path: str, kind: str = "private_oci", **extra: Any) -> dict[str, Any]:
    return {"RegistryType": kind, "Repository": f"{host}/{path}", **extra}


def basic_auth(password: str = PASSWORD) -> dict[str, Any]:
    return {"OCIAuth": {"Username": USER, "Password": password}}


def recorders(ctx: JobContext) -> tuple[RecordingLog, RecordingSecrets]:
    """The recording log and secret registry ``make_context`` gave the context."""
    assert isinstance(ctx.log, RecordingLog)
    assert isinstance(ctx.secrets, RecordingSecrets)
    return ctx.log, ctx.secrets


async def dst_has_tag(server: RegistryServer, path: str, tag: str) -> bool:
    creds = Credentials(USER, PASSWORD) if server.users.get(USER) else None
    async with RegistryClient(server.host, credentials=creds) as client:
        return await client.head_manifest(path, tag) is not None


async def test_oci_sync_outputs_progress_and_masking(
    oci_registry: RegistryServer, oci_basic_registry: RegistryServer, tmp_path: Path
) -> None:
    async with RegistryClient(oci_registry.host) as client:
        pushed = await push_random_image(client, "org/app", "bld1", [200 * 1024, 3000], seed="sync-handler")
    plan = {
        "src_registry": repo(oci_registry.host, "org/app"),
        "src_tag": "bld1",
        "dst_registry": repo(oci_basic_registry.host, "install/app", **basic_auth()),
        "dst_tag": "dpl1",
    }
    ctx = make_context("oci-sync", plan, workspace=tmp_path)
    log, secrets = recorders(ctx)
    await run_handler(OciSyncHandler(), ctx=ctx)

    assert ctx.outputs is not None
    image = ctx.outputs["image"]
    assert set(ctx.outputs) == {"image"}
    assert set(image) == OUTPUT_KEYS
    assert set(image["platform"]) == PLATFORM_KEYS
    assert image["digest"] == pushed.digest
    assert image["tag"] == "dpl1"
    assert image["repository"] == f"{oci_basic_registry.host}/install/app"
    assert image["media_type"] == "application/vnd.oci.image.manifest.v1+json"
    assert image["size"] == pushed.size
    assert image["platform"]["architecture"] == "amd64"
    assert image["platform"]["os"] == "linux"
    info = skopeo_inspect(f"{oci_basic_registry.host}/install/app:dpl1", creds=f"{USER}:{PASSWORD}")
    assert info["Digest"] == pushed.digest

    copied = [attrs for _, _, attrs in log.records if attrs.get("action") == "copied"]
    assert len(copied) == 3
    assert sorted(int(a["size"]) for a in copied) == sorted([200 * 1024, 3000, pushed.config.size])
    assert PASSWORD in secrets.values
    assert all(PASSWORD not in m for m in log.messages())

    # A second sync of the same tag transfers nothing and says so.
    ctx2 = make_context("oci-sync", plan, workspace=tmp_path)
    log2, _ = recorders(ctx2)
    await run_handler(OciSyncHandler(), ctx=ctx2)
    assert ctx2.outputs is not None
    assert ctx2.outputs["image"]["digest"] == pushed.digest
    assert any("nothing to copy" in m for m in log2.messages())
    assert not [a for _, _, a in log2.records if a.get("action") == "copied"]


async def test_container_image_build_tags_with_owner_id(
    oci_registry: RegistryServer, oci_registry_b: RegistryServer, tmp_path: Path
) -> None:
    async with RegistryClient(oci_registry.host) as client:
        pushed = await push_random_image(client, "library/nginx", "1.25", [4096], seed="cib", docker=True)
    plan = {
        "component_id": "cmp1",
        "dst_registry": repo(oci_registry_b.host, "apps/web"),
        "dst_tag": "fallback-tag",
        "container_image_pull_plan": {
            "image": f"{oci_registry.host}/library/nginx",
            "tag": "1.25",
            "repo_config": {"RegistryType": "public_oci", "Repository": f"{oci_registry.host}/library/nginx"},
        },
    }
    ctx = make_context("container-image-build", plan, workspace=tmp_path, owner_id="bld123")
    await run_handler(ContainerImageBuildHandler(), ctx=ctx)
    assert ctx.outputs == {
        "image": {"tag": "bld123", "digest": pushed.digest, "repository": f"{oci_registry_b.host}/apps/web"}
    }
    assert skopeo_inspect(f"{oci_registry_b.host}/apps/web:bld123")["Digest"] == pushed.digest

    ctx2 = make_context("container-image-build", plan, workspace=tmp_path, owner_id="")
    await run_handler(ContainerImageBuildHandler(), ctx=ctx2)
    assert ctx2.outputs is not None
    assert ctx2.outputs["image"]["tag"] == "fallback-tag"


# --------------------------------------------------------------------------- bad input


async def run_sync_expecting_failure(plan: dict[str, Any], tmp_path: Path) -> HandlerError:
    ctx = make_context("oci-sync", plan, workspace=tmp_path)
    log, secrets = recorders(ctx)
    with pytest.raises(HandlerError) as info:
        await run_handler(OciSyncHandler(), ctx=ctx)
    text = str(info.value)
    for secret in secrets.values:
        assert secret not in text
        assert all(secret not in m for m in log.messages())
    return info.value


async def test_unknown_registry_type(oci_registry: RegistryServer, tmp_path: Path) -> None:
    plan = {
        "src_registry": repo(oci_registry.host, "org/app", kind="gcr"),
        "src_tag": "v1",
        "dst_registry": repo(oci_registry.host, "org/dst"),
        "dst_tag": "v1",
    }
    error = await run_sync_expecting_failure(plan, tmp_path)
    assert "unknown registry type 'gcr'" in str(error)
    assert "org/app" in str(error)


async def test_missing_and_incomplete_auth(
    oci_registry: RegistryServer, oci_basic_registry: RegistryServer, tmp_path: Path
) -> None:
    async with RegistryClient(oci_registry.host) as client:
        await push_random_image(client, "org/auth", "v1", [1000], seed="auth")
    base = {"src_registry": repo(oci_registry.host, "org/auth"), "src_tag": "v1", "dst_tag": "missing-auth"}
    # No OCIAuth for a registry that wants basic auth: a 401 naming the destination.
    error = await run_sync_expecting_failure(
        {**base, "dst_registry": repo(oci_basic_registry.host, "x/y")}, tmp_path
    )
    assert f"{oci_basic_registry.host}/x/y" in str(error)
    assert "401" in str(error)
    assert not await dst_has_tag(oci_basic_registry, "x/y", "missing-auth")
    # Wrong password: 401 again, and the password appears nowhere.
    wrong = repo(oci_basic_registry.host, "x/y", **basic_auth("not-the-password"))
    error = await run_sync_expecting_failure({**base, "dst_registry": wrong}, tmp_path)
    assert "401" in str(error)
    assert "not-the-password" not in str(error)
    assert not await dst_has_tag(oci_basic_registry, "x/y", "missing-auth")
    # A username without a password is refused before any request.
    half = repo(oci_basic_registry.host, "x/y", OCIAuth={"Username": USER})
    error = await run_sync_expecting_failure({**base, "dst_registry": half}, tmp_path)
    assert "OCIAuth has no Password" in str(error)
    # acr needs OCIAuth.
    acr = repo(oci_basic_registry.host, "x/y", kind="acr")
    error = await run_sync_expecting_failure({**base, "dst_registry": acr}, tmp_path)
    assert "acr registry" in str(error)


async def test_source_tag_not_found(oci_registry: RegistryServer, tmp_path: Path) -> None:
    plan = {
        "src_registry": repo(oci_registry.host, "org/nothing"),
        "src_tag": "no-such-tag",
        "dst_registry": repo(oci_registry.host, "org/dst404"),
        "dst_tag": "v1",
    }
    error = await run_sync_expecting_failure(plan, tmp_path)
    assert f"{oci_registry.host}/org/nothing:no-such-tag" in str(error)
    assert "404" in str(error)
    assert "not found" in str(error)


async def test_forbidden_source(edge_registry: str, oci_registry: RegistryServer, tmp_path: Path) -> None:
    plan = {
        "src_registry": repo(edge_registry, "forbidden/app"),
        "src_tag": "v1",
        "dst_registry": repo(oci_registry.host, "org/dst403"),
        "dst_tag": "v1",
    }
    error = await run_sync_expecting_failure(plan, tmp_path)
    assert f"{edge_registry}/forbidden/app:v1" in str(error)
    assert "403" in str(error)
    assert "access denied" in str(error)


async def test_unknown_manifest_media_type(
    edge_registry: str, oci_registry: RegistryServer, tmp_path: Path
) -> None:
    plan = {
        "src_registry": repo(edge_registry, "schema1/app"),
        "src_tag": "v1",
        "dst_registry": repo(oci_registry.host, "org/dst-schema1"),
        "dst_tag": "v1",
    }
    error = await run_sync_expecting_failure(plan, tmp_path)
    assert f"{edge_registry}/schema1/app:v1" in str(error)
    assert "unsupported media type application/vnd.docker.distribution.manifest.v1+prettyjws" in str(error)
    assert not await dst_has_tag(oci_registry, "org/dst-schema1", "v1")


async def test_index_entry_of_unknown_media_type(oci_registry: RegistryServer, tmp_path: Path) -> None:
    from handlers.oci.descriptors import Manifest

    async with RegistryClient(oci_registry.host) as client:
        child = await push_random_image(client, "org/odd", None, [100], seed="odd")
        index = Manifest.build(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {"mediaType": "application/vnd.example.unknown+json", "digest": child.digest, "size": 1}
                ],
            }
        )
        await client.put_manifest("org/odd", "v1", index)
    plan = {
        "src_registry": repo(oci_registry.host, "org/odd"),
        "src_tag": "v1",
        "dst_registry": repo(oci_registry.host, "org/odd-dst"),
        "dst_tag": "v1",
    }
    error = await run_sync_expecting_failure(plan, tmp_path)
    assert "application/vnd.example.unknown+json" in str(error)
    assert f"{oci_registry.host}/org/odd" in str(error)
    assert not await dst_has_tag(oci_registry, "org/odd-dst", "v1")


async def test_digest_mismatch_leaves_nothing_tagged(
    oci_registry: RegistryServer, oci_registry_b: RegistryServer, tmp_path: Path
) -> None:
    async with RegistryClient(oci_registry.host) as client:
        pushed = await push_random_image(client, "org/corrupt", "v1", [300 * 1024, 100], seed="corrupt")
    # Corrupt the big layer in the source registry's storage (same size, different bytes).
    layer = pushed.layers[0]
    hexdigest = layer.digest.split(":", 1)[1]
    data = oci_registry.root / "data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    raw = bytearray(data.read_bytes())
    raw[1000] ^= 0xFF
    data.write_bytes(bytes(raw))
    plan = {
        "src_registry": repo(oci_registry.host, "org/corrupt"),
        "src_tag": "v1",
        "dst_registry": repo(oci_registry_b.host, "org/corrupt-dst"),
        "dst_tag": "v1",
    }
    error = await run_sync_expecting_failure(plan, tmp_path)
    assert layer.digest in str(error)
    assert f"{oci_registry.host}/org/corrupt@{layer.digest}" in str(error)
    assert not await dst_has_tag(oci_registry_b, "org/corrupt-dst", "v1")
    async with RegistryClient(oci_registry_b.host) as client:
        assert not await client.has_blob("org/corrupt-dst", layer.digest)


async def test_bad_tag_is_refused_in_prepare(oci_registry: RegistryServer, tmp_path: Path) -> None:
    plan = {
        "src_registry": repo(oci_registry.host, "org/app"),
        "src_tag": "bad tag!",
        "dst_registry": repo(oci_registry.host, "org/dst"),
        "dst_tag": "v1",
    }
    error = await run_sync_expecting_failure(plan, tmp_path)
    assert "invalid tag 'bad tag!'" in str(error)


# --------------------------------------------------------------------------- ECR (moto)


@pytest.mark.parametrize("mode", ["static", "assume_role"])
async def test_ecr_auth_through_moto(
    mode: str,
    aws_endpoint: str,
    oci_registry: RegistryServer,
    oci_ecr_registry: RegistryServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with RegistryClient(oci_registry.host) as client:
        pushed = await push_random_image(client, "org/ecr-src", "v1", [2048], seed="ecr")
    static = {"access_key_id": "AKIAEXAMPLEKEY000001", "secret_access_key": "secret-key-for-the-test"}
    if mode == "static":
        ecr_auth: dict[str, Any] = {"static": static, "region": "us-east-1"}
    else:
        ecr_auth = {
            "assume_role": {
                "role_arn": "arn:aws:iam::123456789012:role/maintenance",
                "session_name": "oci-sync-test",
            },
            "region": "us-east-1",
        }
    plan = {
        "src_registry": repo(oci_registry.host, "org/ecr-src"),
        "src_tag": "v1",
        "dst_registry": repo(
            oci_ecr_registry.host, "install/app", kind="ecr", Region="us-east-1", ECRAuth=ecr_auth
        ),
        "dst_tag": mode,
    }
    if mode == "assume_role":
        # The base identity for AssumeRole comes from the default chain: give moto dummy keys.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIABASEIDENTITY0001")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "base-secret")
    ctx = make_context("oci-sync", plan, workspace=tmp_path)
    log, secrets = recorders(ctx)
    await run_handler(OciSyncHandler(), ctx=ctx)
    assert ctx.outputs is not None
    assert ctx.outputs["image"]["digest"] == pushed.digest
    password = oci_ecr_registry.users["AWS"]
    assert password in secrets.values
    if mode == "static":
        assert "secret-key-for-the-test" in secrets.values
    assert all(password not in m for m in log.messages())
    info = skopeo_inspect(f"{oci_ecr_registry.host}/install/app:{mode}", creds=f"AWS:{password}")
    assert info["Digest"] == pushed.digest


async def test_ecr_without_ecr_auth(
    oci_ecr_registry: RegistryServer, oci_registry: RegistryServer, tmp_path: Path
) -> None:
    plan = {
        "src_registry": repo(oci_registry.host, "org/app"),
        "src_tag": "v1",
        "dst_registry": repo(oci_ecr_registry.host, "install/app", kind="ecr", Region="us-east-1"),
        "dst_tag": "v1",
    }
    error = await run_sync_expecting_failure(plan, tmp_path)
    assert "ECRAuth is missing" in str(error)
    assert oci_ecr_registry.host in str(error)
