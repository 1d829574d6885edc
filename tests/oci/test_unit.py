"""Pure unit tests of the OCI package: references, locations, schemes, verification, errors."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from handlers.oci.auth import Credentials, parse_challenge
from handlers.oci.client import raise_for_status, scheme_for, verified_chunks
from handlers.oci.descriptors import Manifest
from handlers.oci.errors import (
    AccessDenied,
    AuthenticationError,
    ConfigurationError,
    DigestMismatch,
    NotFound,
    TransientError,
    first_error,
)
from handlers.oci.reference import Reference, ReferenceError
from handlers.oci.registry import locate
from runner.api.plans import OCIRegistryRepository

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("index.docker.io/bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest", None),
        ("localhost/team/app:v1", "localhost", "team/app", "v1", None),
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:bld1",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "app",
            "bld1",
            None,
        ),
        ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io", "o/r", None, "sha256:" + "a" * 64),
        ("https://[::1]:5000/x/y:z", "[::1]:5000", "x/y", "z", None),
    ],
)
def test_reference_parse(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize("text", ["", "UPPER/case", "a//b", "host:5000/app:bad tag", "app@sha256:short"])
def test_reference_parse_rejects(text: str) -> None:
    with pytest.raises(ReferenceError):
        Reference.parse(text)


def test_with_identifier_and_str() -> None:
    ref = Reference.parse("127.0.0.1:5000/a/b")
    assert str(ref.with_identifier("v2")) == "127.0.0.1:5000/a/b:v2"
    digest = "sha256:" + "b" * 64
    assert str(ref.with_identifier(digest)) == f"127.0.0.1:5000/a/b@{digest}"
    assert ref.with_identifier(digest).identifier == digest


@pytest.mark.parametrize(
    ("repository", "login", "kind", "expected"),
    [
        ("127.0.0.1:5000/app", "", "private_oci", "127.0.0.1:5000/app"),
        ("org/app", "registry.example.com", "private_oci", "registry.example.com/org/app"),
        ("org/app", "https://registry.example.com/", "private_oci", "registry.example.com/org/app"),
        ("nginx", "index.docker.io", "public_oci", "docker.io/library/nginx"),
        ("nginx", "", "public_oci", "docker.io/library/nginx"),
        (
            "123456789012.dkr.ecr.us-west-2.amazonaws.com/install/app",
            "123456789012.dkr.ecr.us-west-2.amazonaws.com",
            "ecr",
            "123456789012.dkr.ecr.us-west-2.amazonaws.com/install/app",
        ),
        ("myacr", "myacr.azurecr.io", "acr", "myacr.azurecr.io/myacr"),
    ],
)
def test_locate(repository: str, login: str, kind: str, expected: str) -> None:
    repo = OCIRegistryRepository.model_validate(
        {"RegistryType": kind, "Repository": repository, "LoginServer": login}
    )
    assert locate(repo).name == expected


def test_locate_without_host_or_login_server() -> None:
    repo = OCIRegistryRepository.model_validate({"RegistryType": "private_oci", "Repository": "org/app"})
    with pytest.raises(ConfigurationError, match="no LoginServer"):
        locate(repo)


def test_scheme_for() -> None:
    assert scheme_for("127.0.0.1:5000") == "http"
    assert scheme_for("127.9.9.9") == "http"
    assert scheme_for("localhost:5000") == "http"
    assert scheme_for("[::1]:5000") == "http"
    assert scheme_for("registry.example.com") == "https"
    assert scheme_for("10.0.0.5:5000") == "https"
    assert scheme_for("10.0.0.5:5000", ["10.0.0.5:5000"]) == "http"
    assert scheme_for("reg.internal:443", ["reg.internal"]) == "http"


def test_parse_bearer_challenge() -> None:
    header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    challenge = parse_challenge(header)
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    basic = parse_challenge('Basic realm="x"')
    assert basic is not None
    assert basic.scheme == "basic"
    assert basic.params == {"realm": "x"}
    assert parse_challenge(None) is None


def test_credentials_repr_hides_password() -> None:
    creds = Credentials("AWS", "hunter2")
    assert "hunter2" not in repr(creds)
    assert creds.basic_header() == "Basic QVdTOmh1bnRlcjI="


async def _collect(chunks: list[bytes], digest: str, size: int | None) -> list[bytes]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    out: list[bytes] = []
    async for chunk in verified_chunks(source(), digest, size=size, what="x"):
        out.append(chunk)
    return out


def test_verified_chunks_passes_good_content() -> None:
    chunks = [b"abc", b"def", b"g"]
    digest = "sha256:" + hashlib.sha256(b"abcdefg").hexdigest()
    assert anyio.run(_collect, chunks, digest, 7) == chunks


def test_verified_chunks_holds_back_the_last_chunk_of_bad_content() -> None:
    chunks = [b"abc", b"def", b"LAST"]
    digest = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    seen: list[bytes] = []

    async def consume() -> None:
        async def source() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        async for chunk in verified_chunks(source(), digest, size=None, what="blob"):
            seen.append(chunk)

    with pytest.raises(DigestMismatch, match="blob: content has digest"):
        anyio.run(consume)
    assert b"LAST" not in seen


def test_verified_chunks_checks_size() -> None:
    digest = "sha256:" + hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(DigestMismatch, match="more than the 2 bytes"):
        anyio.run(_collect, [b"abc"], digest, 2)
    with pytest.raises(DigestMismatch, match="got 3 bytes"):
        anyio.run(_collect, [b"abc"], digest, 4)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"errors": [{"code": "UNAUTHORIZED"}]}, AuthenticationError),
        (403, {"errors": [{"code": "DENIED"}]}, AccessDenied),
        (404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]}, NotFound),
        (503, {}, TransientError),
        (429, {}, TransientError),
        (400, {"errors": [{"code": "DIGEST_INVALID"}]}, DigestMismatch),
    ],
)
def test_raise_for_status(status: int, body: dict[str, object], error: type[Exception]) -> None:
    request = httpx.Request("GET", "http://127.0.0.1:1/v2/a/manifests/v1")
    response = httpx.Response(status, json=body, request=request)
    with pytest.raises(error) as info:
        raise_for_status(response, "127.0.0.1:1/a:v1", "127.0.0.1:1", (200,))
    assert "127.0.0.1:1/a:v1" in str(info.value)
    assert str(status) in str(info.value)


def test_first_error_unwraps_task_group_failures() -> None:
    async def boom() -> None:
        raise NotFound("x: not found")

    async def main() -> None:
        with first_error():
            async with anyio.create_task_group() as tg:
                tg.start_soon(boom)
                tg.start_soon(anyio.sleep, 10)

    with pytest.raises(NotFound, match="x: not found"):
        anyio.run(main)


def test_manifest_artifact_type_and_children() -> None:
    manifest = Manifest.build(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.cncf.helm.config.v1+json",
                "digest": "sha256:" + "c" * 64,
                "size": 3,
            },
            "layers": [],
        }
    )
    assert manifest.artifact_type == "application/vnd.cncf.helm.config.v1+json"
    assert manifest.children == []
    assert [b.digest for b in manifest.blobs()] == ["sha256:" + "c" * 64]
