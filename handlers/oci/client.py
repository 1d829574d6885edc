"""RegistryClient: the OCI distribution API over httpx, async and streaming.

One client talks to one registry (``host[:port]``) with one set of credentials and one
connection pool (HTTP keep-alive), whatever repositories it touches. What it guarantees:

* manifests are fetched with an Accept header naming the four media types we can walk (OCI
  manifest and index, Docker v2 schema 2 and manifest list); anything else is refused with
  ``UnsupportedMediaType``, and a manifest's bytes are checked against the digest asked for or
  announced in ``Docker-Content-Digest``;
* blobs stream: a download is an async iterator of the response's own chunks, an upload is a
  streaming request body, so memory stays flat whatever the layer size; every blob is hashed
  on the way through and a mismatch raises ``DigestMismatch`` **before** the last chunk is
  handed on, so a destination never receives a complete wrong blob;
* uploads are monolithic (POST, then one streaming PUT: one round trip less, fastest against
  distribution) or chunked (PATCH with ``Content-Range``, for registries that cap request
  sizes), and may first try a cross-repository mount;
* idempotent calls (HEAD/GET/manifest PUT/upload start) are retried on transient failures
  (connection errors, timeouts, 5xx, 429) with backoff and jitter; a streaming body cannot be
  replayed, so the caller retries a whole blob copy with :func:`retrying`;
* loopback registries (127.0.0.0/8, ``localhost``, ``::1``) are reached over plain HTTP, as
  docker does; others over HTTPS unless listed as insecure.

Error messages name the reference (``host/repository:tag``) and never credentials.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

import anyio
import httpx

from handlers.oci import media
from handlers.oci.auth import Authenticator, Credentials, repository_scope
from handlers.oci.descriptors import Descriptor, Manifest, sha256_digest
from handlers.oci.errors import (
    AccessDenied,
    AuthenticationError,
    DigestMismatch,
    NotFound,
    RegistryError,
    TransientError,
    UnsupportedMediaType,
)
from handlers.oci.reference import api_host, is_digest
from runner.sdk import backoff_delay

T = TypeVar("T")

#: httpcore reads at most 64 KiB per recv(); a registry blob streams 4x faster (in CPU per byte)
#: with 256 KiB reads. This is a class attribute of httpcore's HTTP/1.1 connection, so raising
#: it affects every httpx client of the process, harmlessly (it is only an upper bound).
_READ_SIZE = 256 * 1024
try:
    from httpcore._async.http11 import AsyncHTTP11Connection as _H11

    if getattr(_H11, "READ_NUM_BYTES", _READ_SIZE) < _READ_SIZE:
        _H11.READ_NUM_BYTES = _READ_SIZE
except ImportError:  # pragma: no cover - a future httpcore without it streams a bit slower
    pass

#: Largest manifest we accept (distribution's own limit is 4 MiB).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
_THREAD_HASH_MIN = 128 * 1024
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_loopback_host(registry: str) -> bool:
    """Whether ``host[:port]`` names this machine (plain HTTP is then fine, as docker has it)."""
    host = urlsplit("//" + registry).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def scheme_for(registry: str, insecure_registries: Collection[str] = ()) -> str:
    """``http`` for loopback and listed insecure registries (by ``host:port`` or host), else ``https``."""
    if is_loopback_host(registry):
        return "http"
    host = urlsplit("//" + registry).hostname or registry
    insecure = {r.strip().lower().rstrip("/") for r in insecure_registries}
    return "http" if registry.lower() in insecure or host.lower() in insecure else "https"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA bundle costs ~0.1 s, too much to
    pay per client (a re-sync must finish in well under 0.3 s)."""
    return httpx.create_ssl_context()


async def retrying(fn: Callable[[], Awaitable[T]], *, attempts: int = 4, base_delay: float = 0.2) -> T:
    """Run ``fn`` again after a ``TransientError`` (up to ``attempts`` times in all)."""
    for attempt in range(attempts):
        try:
            return await fn()
        except TransientError:
            if attempt + 1 >= attempts:
                raise
            await anyio.sleep(backoff_delay(attempt, base=base_delay, cap=5.0))
    raise AssertionError("unreachable")


class VerifiedChunks:
    """An async iterator of chunks already checked against ``digest`` by :func:`verified_chunks`
    (so an upload of them need not hash them a second time)."""

    def __init__(self, chunks: AsyncIterator[bytes], digest: str) -> None:
        self._chunks = chunks
        self.digest = digest

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def verified_chunks(
    chunks: AsyncIterable[bytes], digest: str, *, size: int | None, what: str
) -> VerifiedChunks:
    """Pass ``chunks`` through while hashing them; hold the last chunk back until the digest and
    size are checked, so a consumer never sees a complete blob that is wrong."""
    return VerifiedChunks(_verify(chunks, digest, size=size, what=what), digest)


async def _verify(
    chunks: AsyncIterable[bytes], digest: str, *, size: int | None, what: str
) -> AsyncIterator[bytes]:
    algorithm, _, expected = digest.partition(":")
    if algorithm not in ("sha256", "sha512"):
        raise UnsupportedMediaType(f"{what}: unsupported digest algorithm {algorithm!r}")
    hasher = hashlib.new(algorithm)
    total = 0
    pending: bytes | None = None
    async for chunk in chunks:
        if not chunk:
            continue
        if len(chunk) >= _THREAD_HASH_MIN:
            # hashlib releases the GIL: other blobs' I/O goes on while this chunk is hashed.
            await anyio.to_thread.run_sync(hasher.update, chunk)
        else:
            hasher.update(chunk)
        total += len(chunk)
        if size is not None and total > size:
            raise DigestMismatch(f"{what}: more than the {size} bytes its descriptor announces")
        if pending is not None:
            yield pending
        pending = chunk
    if size is not None and total != size:
        raise DigestMismatch(f"{what}: got {total} bytes, its descriptor announces {size}")
    if hasher.hexdigest() != expected:
        raise DigestMismatch(
            f"{what}: content has digest {algorithm}:{hasher.hexdigest()}, expected {digest}"
        )
    if pending is not None:
        yield pending


def _error_codes(response: httpx.Response) -> list[str]:
    try:
        body = response.json()
        return [str(e.get("code", "")) for e in body.get("errors", []) if isinstance(e, dict)]
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return []


def raise_for_status(response: httpx.Response, what: str, registry: str, ok: Collection[int]) -> None:
    """Map a registry answer to one of our errors, naming ``what`` (a reference) and the status."""
    status = response.status_code
    if status in ok:
        return
    codes = _error_codes(response)
    detail = f" ({status}{' ' + ', '.join(c for c in codes if c) if any(codes) else ''})"
    if status == 401:
        raise AuthenticationError(
            f"{what}: registry {registry} requires valid credentials{detail}", status=status
        )
    if status == 403:
        raise AccessDenied(f"{what}: access denied by registry {registry}{detail}", status=status)
    if status == 404:
        raise NotFound(f"{what}: not found{detail}", status=status)
    if status in _TRANSIENT_STATUS:
        raise TransientError(f"{what}: registry {registry} answered{detail}", status=status)
    if "DIGEST_INVALID" in codes:
        raise DigestMismatch(f"{what}: registry {registry} rejected the digest{detail}", status=status)
    if status == 415 or ("MANIFEST_INVALID" in codes and "media type" in response.text.lower()):
        raise UnsupportedMediaType(
            f"{what}: registry {registry} rejected the media type{detail}", status=status
        )
    raise RegistryError(f"{what}: registry {registry} answered{detail}", status=status)


class RegistryClient:
    """A client of one registry. Cheap to keep around; close it with :meth:`aclose`."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        insecure_registries: Collection[str] = (),
        on_secret: Callable[[str], None] | None = None,
        max_connections: int = 16,
        chunk_size: int | None = None,
        retries: int = 3,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.registry = registry
        self.scheme = scheme_for(registry, insecure_registries)
        self.base_url = f"{self.scheme}://{api_host(registry)}"
        #: Upload in PATCH chunks of this size; None uploads monolithically with one streaming PUT.
        self.chunk_size = chunk_size
        self.retries = retries
        self.auth = Authenticator(registry, credentials, on_secret=on_secret)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0), pool=None),
            limits=limits,
            follow_redirects=True,
            # Plain-HTTP registries need no TLS context at all; HTTPS ones share one.
            verify=False if self.scheme == "http" else _tls_context(),
            transport=transport,
            headers={"User-Agent": "byoc-runner-oci/1"},
        )
        #: Counters for tests and benchmarks.
        self.stats: dict[str, int] = {"blobs_uploaded": 0, "blobs_mounted": 0, "bytes_uploaded": 0}

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def display(self, repository: str, tag_or_digest: str | None = None) -> str:
        base = f"{self.registry}/{repository}"
        if not tag_or_digest:
            return base
        return base + ("@" if is_digest(tag_or_digest) else ":") + tag_or_digest

    def _url(self, repository: str, kind: str, ref: str = "") -> str:
        return f"{self.base_url}/v2/{repository}/{kind}/{ref}"

    # ------------------------------------------------------------------ transport

    async def _send(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        stream: bool = False,
        what: str,
    ) -> httpx.Response:
        """One request, authenticated; a 401 is answered once by learning the challenge."""
        replayable = content is None or isinstance(content, bytes)
        for attempt in (0, 1):
            request_headers = dict(headers or {})
            authorization = await self.auth.authorization(self._http, scope)
            if authorization:
                request_headers["Authorization"] = authorization
            request = self._http.build_request(method, url, headers=request_headers, content=content)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise TransientError(
                    f"{what}: cannot reach registry {self.registry}: {type(exc).__name__}"
                ) from None
            if response.status_code == 401 and attempt == 0 and replayable:
                await response.aread()
                await response.aclose()
                if await self.auth.challenge(self._http, response, scope):
                    continue
            return response
        raise AssertionError("unreachable")

    async def _call(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        what: str,
        ok: Collection[int],
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        passthrough: Collection[int] = (),
    ) -> httpx.Response:
        """A replayable request with retries; the body is read; ``passthrough`` statuses return."""

        async def once() -> httpx.Response:
            response = await self._send(method, url, scope=scope, headers=headers, content=content, what=what)
            if response.status_code not in passthrough:
                raise_for_status(response, what, self.registry, ok)
            return response

        return await retrying(once, attempts=self.retries + 1)

    # ------------------------------------------------------------------ manifests

    async def get_manifest(self, repository: str, ref: str) -> Manifest:
        """Fetch a manifest by tag or digest; only the four walkable media types are accepted."""
        what = self.display(repository, ref)
        response = await self._call(
            "GET",
            self._url(repository, "manifests", ref),
            scope=repository_scope(repository, "pull"),
            what=what,
            ok=(200,),
            headers={"Accept": media.MANIFEST_ACCEPT},
        )
        data = response.content
        if len(data) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"{what}: manifest of {len(data)} bytes is larger than {MAX_MANIFEST_BYTES}")
        media_type = media.base_media_type(response.headers.get("content-type"))
        if media_type not in media.MANIFESTS:
            declared = ""
            try:
                import json

                doc = json.loads(data)
                declared = str(doc.get("mediaType") or "") if isinstance(doc, dict) else ""
                if not declared and isinstance(doc, dict) and doc.get("schemaVersion") == 1:
                    declared = "application/vnd.docker.distribution.manifest.v1+json"
            except ValueError:
                pass
            if declared in media.MANIFESTS:
                media_type = declared
            else:
                shown = media_type or declared or "none"
                raise UnsupportedMediaType(f"{what}: manifest of unsupported media type {shown}")
        manifest = Manifest.from_bytes(data, media_type)
        expected = ref if is_digest(ref) else response.headers.get("docker-content-digest", "")
        if expected.startswith("sha256:") and expected != manifest.digest:
            raise DigestMismatch(
                f"{what}: manifest has digest {manifest.digest}, the registry says {expected}"
            )
        try:
            manifest.document  # noqa: B018 - parse now so a broken manifest fails here, by name
        except ValueError:
            raise RegistryError(f"{what}: manifest is not valid JSON") from None
        return manifest

    async def head_manifest(self, repository: str, ref: str) -> Descriptor | None:
        """The descriptor of a manifest if it exists (no body transferred), else None."""
        what = self.display(repository, ref)
        response = await self._call(
            "HEAD",
            self._url(repository, "manifests", ref),
            scope=repository_scope(repository, "pull"),
            what=what,
            ok=(200,),
            headers={"Accept": media.MANIFEST_ACCEPT},
            passthrough=(404,),
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("docker-content-digest", "")
        if not digest:
            return None  # cannot tell without the body; callers then GET
        return Descriptor(
            media_type=media.base_media_type(response.headers.get("content-type")),
            digest=digest,
            size=int(response.headers.get("content-length") or 0),
        )

    async def put_manifest(self, repository: str, ref: str, manifest: Manifest) -> str:
        """Push a manifest under a tag (or its digest); returns the digest the registry stored."""
        what = self.display(repository, ref)
        response = await self._call(
            "PUT",
            self._url(repository, "manifests", ref),
            scope=repository_scope(repository, "pull", "push"),
            what=what,
            ok=(200, 201, 202),
            headers={"Content-Type": manifest.media_type},
            content=manifest.data,
        )
        stored = response.headers.get("docker-content-digest") or manifest.digest
        if stored != manifest.digest:
            raise DigestMismatch(f"{what}: registry stored digest {stored}, we pushed {manifest.digest}")
        return stored

    async def delete_manifest(self, repository: str, digest: str) -> None:
        await self._call(
            "DELETE",
            self._url(repository, "manifests", digest),
            scope=repository_scope(repository, "pull", "push", "delete"),
            what=self.display(repository, digest),
            ok=(200, 202),
        )

    # ------------------------------------------------------------------ blobs

    async def has_blob(self, repository: str, digest: str) -> bool:
        response = await self._call(
            "HEAD",
            self._url(repository, "blobs", digest),
            scope=repository_scope(repository, "pull"),
            what=self.display(repository, digest),
            ok=(200,),
            passthrough=(404,),
        )
        return response.status_code == 200

    @asynccontextmanager
    async def open_blob(
        self, repository: str, digest: str, *, size: int | None = None
    ) -> AsyncIterator[VerifiedChunks]:
        """Stream a blob: ``async with client.open_blob(repo, d) as chunks: async for c in chunks``.

        The chunks are verified against ``digest`` (and ``size`` if given) as they pass.
        """
        what = self.display(repository, digest)
        response = await self._send(
            "GET",
            self._url(repository, "blobs", digest),
            scope=repository_scope(repository, "pull"),
            stream=True,
            what=what,
        )
        try:
            if response.status_code != 200:
                await response.aread()
                raise_for_status(response, what, self.registry, (200,))
            yield verified_chunks(self._raw_chunks(response, what), digest, size=size, what=what)
        finally:
            await response.aclose()

    async def _raw_chunks(self, response: httpx.Response, what: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: download interrupted: {type(exc).__name__}") from None

    async def get_blob(self, repository: str, digest: str, *, max_size: int = MAX_MANIFEST_BYTES) -> bytes:
        """A small blob (a config) in memory, verified."""

        async def once() -> bytes:
            out = bytearray()
            async with self.open_blob(repository, digest) as chunks:
                async for chunk in chunks:
                    out += chunk
                    if len(out) > max_size:
                        raise RegistryError(
                            f"{self.display(repository, digest)}: blob larger than {max_size} bytes"
                        )
            return bytes(out)

        return await retrying(once, attempts=self.retries + 1)

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository; False if it would not."""
        location = await self._start_upload(repository, mount=(digest, from_repository))
        if location is None:
            self.stats["blobs_mounted"] += 1
            return True
        # The registry opened an ordinary upload instead; abandon it (it expires on its own).
        return False

    async def _start_upload(self, repository: str, *, mount: tuple[str, str] | None = None) -> str | None:
        """POST an upload; None when a mount succeeded (201), else the upload's Location."""
        scope = repository_scope(repository, "pull", "push")
        url = self._url(repository, "blobs", "uploads") + "/"
        if mount is not None:
            url += "?" + urlencode({"mount": mount[0], "from": mount[1]})
            scope += " " + repository_scope(mount[1], "pull")
        what = self.display(repository, mount[0] if mount else None)
        response = await self._call("POST", url, scope=scope, what=what, ok=(201, 202))
        if response.status_code == 201 and mount is not None:
            return None
        location = str(response.headers.get("location") or "")
        if not location:
            raise RegistryError(f"{what}: registry {self.registry} opened an upload without a Location")
        return urljoin(self.base_url + "/", location)

    @staticmethod
    def _with_digest(location: str, digest: str) -> str:
        return location + ("&" if "?" in location else "?") + urlencode({"digest": digest})

    async def push_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        content: bytes | AsyncIterable[bytes],
        *,
        mount_from: str | None = None,
    ) -> str:
        """Upload a blob (or mount it from ``mount_from`` in the same registry).

        ``content`` may be bytes or a stream; a stream is verified on the way and the upload
        aborted on a mismatch. Returns ``"mounted"`` or ``"uploaded"``. A stream cannot be
        replayed: wrap the whole copy in :func:`retrying` to survive transient failures.
        """
        what = self.display(repository, digest)
        if isinstance(content, bytes) and sha256_digest(content) != digest:
            raise DigestMismatch(f"{what}: content has digest {sha256_digest(content)}, expected {digest}")
        location = await self._start_upload(repository, mount=(digest, mount_from) if mount_from else None)
        if location is None:
            self.stats["blobs_mounted"] += 1
            return "mounted"
        stream: bytes | AsyncIterable[bytes]
        if isinstance(content, bytes) or (isinstance(content, VerifiedChunks) and content.digest == digest):
            stream = content  # bytes were hashed above; a VerifiedChunks is hashed as it is read
        else:
            stream = verified_chunks(content, digest, size=size, what=what)
        scope = repository_scope(repository, "pull", "push")
        if self.chunk_size and size > self.chunk_size:
            await self._upload_chunked(location, digest, stream, scope=scope, what=what)
        else:
            response = await self._send(
                "PUT",
                self._with_digest(location, digest),
                scope=scope,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                content=stream,
                what=what,
            )
            raise_for_status(response, what, self.registry, (201, 204))
            self._check_stored(response, digest, what)
        self.stats["blobs_uploaded"] += 1
        self.stats["bytes_uploaded"] += size
        return "uploaded"

    def _check_stored(self, response: httpx.Response, digest: str, what: str) -> None:
        stored = response.headers.get("docker-content-digest")
        if stored and stored != digest:
            raise DigestMismatch(f"{what}: registry stored digest {stored}")

    async def _upload_chunked(
        self, location: str, digest: str, content: bytes | AsyncIterable[bytes], *, scope: str, what: str
    ) -> None:
        assert self.chunk_size
        offset = 0

        async def send_chunk(data: bytes) -> None:
            nonlocal location, offset
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(data)),
                "Content-Range": f"{offset}-{offset + len(data) - 1}",
            }
            response = await self._send(
                "PATCH", location, scope=scope, headers=headers, content=data, what=what
            )
            raise_for_status(response, what, self.registry, (202, 204))
            location = urljoin(self.base_url + "/", response.headers.get("location") or location)
            offset += len(data)

        buffer = bytearray()
        source = [content] if isinstance(content, bytes) else content
        if isinstance(source, list):
            for item in source:
                buffer += item
        else:
            async for chunk in source:
                buffer += chunk
                while len(buffer) >= self.chunk_size:
                    await send_chunk(bytes(buffer[: self.chunk_size]))
                    del buffer[: self.chunk_size]
        while buffer:
            await send_chunk(bytes(buffer[: self.chunk_size]))
            del buffer[: self.chunk_size]
        response = await self._send(
            "PUT",
            self._with_digest(location, digest),
            scope=scope,
            headers={"Content-Length": "0"},
            content=b"",
            what=what,
        )
        raise_for_status(response, what, self.registry, (201, 204))
        self._check_stored(response, digest, what)

    # ------------------------------------------------------------------ misc

    async def ping(self) -> None:
        """``GET /v2/``: reachability and credentials, for a clear early error."""
        response = await self._call(
            "GET", f"{self.base_url}/v2/", scope="", what=f"registry {self.registry}", ok=(200,)
        )
        await response.aclose()

    async def tags(self, repository: str) -> list[str]:
        response = await self._call(
            "GET",
            self._url(repository, "tags", "list"),
            scope=repository_scope(repository, "pull"),
            what=self.display(repository),
            ok=(200,),
        )
        body: Any = response.json()
        return [str(t) for t in (body.get("tags") or [])] if isinstance(body, dict) else []
