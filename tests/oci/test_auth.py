"""Authentication against real registries: basic, bearer challenge with token cache, refusals."""

from __future__ import annotations

import pytest

from handlers.oci.auth import Credentials
from handlers.oci.client import RegistryClient
from handlers.oci.copy import copy_image
from handlers.oci.errors import AccessDenied, AuthenticationError
from tests.support.registry import PASSWORD, USER, RegistryServer, push_random_image, skopeo_raw_digest

pytestmark = [pytest.mark.oci, pytest.mark.anyio]


async def test_basic_auth_wrong_password_and_anonymous_are_refused(
    oci_basic_registry: RegistryServer,
) -> None:
    async with RegistryClient(oci_basic_registry.host, credentials=Credentials(USER, "wrong")) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.get_manifest("test/app", "v1")
    message = str(info.value)
    assert f"{oci_basic_registry.host}/test/app:v1" in message
    assert "401" in message
    assert "wrong" not in message
    async with RegistryClient(oci_basic_registry.host) as client:
        with pytest.raises(AuthenticationError):
            await client.has_blob("test/app", "sha256:" + "0" * 64)


async def test_bearer_challenge_flow_with_token_cache(
    oci_token_registry: RegistryServer, oci_registry: RegistryServer
) -> None:
    secrets: list[str] = []
    creds = Credentials(USER, PASSWORD)
    async with RegistryClient(oci_token_registry.host, credentials=creds, on_secret=secrets.append) as client:
        before = oci_token_registry.token_stats()["requests"]
        pushed = await push_random_image(client, "team/app", "v1", [4096, 10, 20, 30], seed="bearer")
        manifest = await client.get_manifest("team/app", "v1")
        assert manifest.digest == pushed.digest
        assert client.auth.mode == "bearer"
        fetched = oci_token_registry.token_stats()["requests"] - before
        # One token per scope (push, pull), not one per request (there were more than 12 requests).
        assert fetched == client.auth.token_fetches
        assert 1 <= fetched <= 3
        assert any(s.count(".") == 2 for s in secrets), "the JWT was registered as a secret"
        # Copy out of the token registry into a plain one.
        async with RegistryClient(oci_registry.host) as dst:
            result = await copy_image(client, "team/app", "v1", dst, "from-token/app", "v1")
            assert result.manifest.digest == pushed.digest
    assert skopeo_raw_digest(f"{oci_registry.host}/from-token/app:v1") == pushed.digest


async def test_bearer_anonymous_pull_only(oci_token_registry: RegistryServer) -> None:
    async with RegistryClient(oci_token_registry.host, credentials=Credentials(USER, PASSWORD)) as client:
        pushed = await push_random_image(client, "team/public", "v1", [100], seed="anon")
    async with RegistryClient(oci_token_registry.host) as anonymous:
        got = await anonymous.get_manifest("team/public", "v1")
        assert got.digest == pushed.digest
        with pytest.raises((AuthenticationError, AccessDenied)) as info:
            await anonymous.put_manifest("team/public", "v2", got)
        assert f"{oci_token_registry.host}/team/public:v2" in str(info.value)


async def test_bearer_wrong_password_names_registry(oci_token_registry: RegistryServer) -> None:
    async with RegistryClient(oci_token_registry.host, credentials=Credentials(USER, "nope")) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.get_manifest("team/app", "v1")
    assert oci_token_registry.host in str(info.value)
    assert "nope" not in str(info.value)


async def test_transient_failures_are_retried(edge_registry: str, oci_registry: RegistryServer) -> None:
    import httpx

    async with RegistryClient(edge_registry, retries=3) as src, RegistryClient(oci_registry.host) as dst:
        result = await copy_image(src, "flaky/app", "v1", dst, "from-flaky/app", "v1")
        assert result.blobs_copied == 2
    hits = httpx.get(f"http://{edge_registry}/stats").json()
    assert hits["/v2/flaky/app/manifests/v1"] == 3  # two 503s, then the manifest
    assert skopeo_raw_digest(f"{oci_registry.host}/from-flaky/app:v1") == result.manifest.digest


async def test_transient_failures_give_up_after_the_retries(edge_registry: str) -> None:
    from handlers.oci.errors import TransientError

    async with RegistryClient(edge_registry, retries=0) as src:
        with pytest.raises(TransientError) as info:
            await src.get_manifest("flaky/app", "never-before-seen")
    assert f"{edge_registry}/flaky/app:never-before-seen" in str(info.value)
    assert "503" in str(info.value)


async def test_manifest_digest_mismatch(edge_registry: str) -> None:
    from handlers.oci.errors import DigestMismatch

    async with RegistryClient(edge_registry) as src:
        with pytest.raises(DigestMismatch) as info:
            await src.get_manifest("liar/app", "v1")
    assert f"{edge_registry}/liar/app:v1" in str(info.value)
