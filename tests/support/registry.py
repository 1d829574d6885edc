"""Real OCI registries on loopback for the ``oci`` tier (and the bench), plus test images.

Fixtures (session-scoped: a registry starts in well under a second, but there is no reason
to start one per test):

* ``oci_registry`` / ``oci_registry_b``: plain ``docker-registry serve`` (distribution 2.8),
  no auth;
* ``oci_basic_registry``: htpasswd basic auth (``runner`` / ``s3cret``);
* ``oci_token_registry``: distribution configured with ``auth: token:``, in front of a small
  token server of ours (a subprocess, ``python -m tests.support.registry token-server``) that
  signs RS256 JWTs with an ``x5c`` certificate the registry trusts, so clients go through the
  real ``WWW-Authenticate: Bearer realm=...`` challenge; it counts token requests;
* ``moto_ecr`` / ``oci_ecr_registry``: ``moto_server`` as the ECR/STS API, and an htpasswd
  registry whose user ``AWS`` has the password moto's ``GetAuthorizationToken`` returns.

Test images are built from deterministic pseudo-random layers (``RandomBlob``) with our own
client, streamed so a 200 MB layer never sits in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.tools import require_tool

USER = "runner"
PASSWORD = "s3cret"  # noqa: S105 - a test fixture credential
TOKEN_SERVICE = "byoc-test-registry"
TOKEN_ISSUER = "byoc-test-issuer"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout}s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class RegistryServer:
    """A running registry: ``host`` is ``127.0.0.1:<port>``."""

    host: str
    root: Path
    proc: subprocess.Popen[bytes]
    users: dict[str, str] = field(default_factory=dict)
    token_url: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        _stop(self.proc)

    def token_stats(self) -> dict[str, Any]:
        assert self.token_url, "not a token-auth registry"
        data: dict[str, Any] = httpx.get(self.token_url.rsplit("/", 1)[0] + "/stats").json()
        return data


def write_htpasswd(path: Path, users: dict[str, str]) -> None:
    tool = require_tool("htpasswd", hint="apt-get install apache2-utils")
    lines = []
    for user, password in users.items():
        out = subprocess.run([tool, "-Bbn", user, password], check=True, capture_output=True)
        lines.append(out.stdout.decode().strip())
    path.write_text("\n".join(lines) + "\n")


def start_registry(
    workdir: Path,
    *,
    users: dict[str, str] | None = None,
    token: dict[str, str] | None = None,
) -> RegistryServer:
    """Start ``docker-registry serve`` on a free loopback port (plain HTTP)."""
    binary = require_tool("docker-registry", hint="apt-get install docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "byoc-test-secret"},
    }
    if users:
        write_htpasswd(workdir / "htpasswd", users)
        config["auth"] = {"htpasswd": {"realm": "byoc-test", "path": str(workdir / "htpasswd")}}
    if token:
        config["auth"] = {"token": token}
    (workdir / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = workdir / "registry.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([binary, "serve", str(workdir / "config.yml")], stdout=fh, stderr=fh)
    _wait_http(f"http://127.0.0.1:{port}/v2/", proc, log)
    return RegistryServer(
        host=f"127.0.0.1:{port}",
        root=workdir,
        proc=proc,
        users=dict(users or {}),
        token_url=token["realm"] if token else None,
    )


# --------------------------------------------------------------------------- token server


def _make_signing_cert(workdir: Path) -> tuple[Path, Path]:
    """An RSA key and a self-signed certificate the registry trusts as its root bundle."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "byoc-test-token-signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = workdir / "token.key", workdir / "token.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_server_main(argv: list[str]) -> None:
    """``python -m tests.support.registry token-server PORT KEY CERT USERS_JSON``.

    A distribution token service: checks basic credentials, grants pull to anyone and
    pull/push/delete to known users, and answers ``/stats`` with the requests it served.
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    port, key_path, cert_path, users_json = argv
    users: dict[str, str] = json.loads(users_json)
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    stats: dict[str, Any] = {"requests": 0, "scopes": [], "refused": 0}

    def sign(claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/stats":
                self._json(200, stats)
                return
            query = parse_qs(url.query)
            subject = ""
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if users.get(user) != password:
                    stats["refused"] += 1
                    self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    return
                subject = user
            stats["requests"] += 1
            access = []
            for scope in query.get("scope", []):
                stats["scopes"].append(scope)
                for item in scope.split(" "):
                    kind, _, rest = item.partition(":")
                    name, _, actions = rest.rpartition(":")
                    wanted = [a for a in actions.split(",") if a]
                    granted = [a for a in wanted if subject or a == "pull"]
                    access.append({"type": kind, "name": name, "actions": granted})
            now = int(time.time())
            claims = {
                "iss": TOKEN_ISSUER,
                "sub": subject,
                "aud": query.get("service", [""])[0],
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": os.urandom(8).hex(),
                "access": access,
            }
            token = sign(claims)
            self._json(200, {"token": token, "access_token": token, "expires_in": 300})

    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    server.serve_forever()


def start_token_registry(
    workdir: Path, users: dict[str, str]
) -> tuple[RegistryServer, subprocess.Popen[bytes]]:
    workdir.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = _make_signing_cert(workdir)
    port = free_port()
    log = workdir / "token-server.log"
    root = Path(__file__).resolve().parents[2]
    with log.open("wb") as fh:
        token_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.registry",
                "token-server",
                str(port),
                str(key_path),
                str(cert_path),
                json.dumps(users),
            ],
            stdout=fh,
            stderr=fh,
            cwd=root,
        )
    realm = f"http://127.0.0.1:{port}/token"
    _wait_http(f"http://127.0.0.1:{port}/stats", token_proc, log)
    server = start_registry(
        workdir / "registry",
        token={
            "realm": realm,
            "service": TOKEN_SERVICE,
            "issuer": TOKEN_ISSUER,
            "rootcertbundle": str(cert_path),
        },
    )
    server.users = dict(users)
    return server, token_proc


# --------------------------------------------------------------------------- moto (ECR)


@dataclass
class MotoServer:
    url: str
    proc: subprocess.Popen[bytes]

    def ecr_password(self, region: str = "us-east-1") -> str:
        import boto3

        ecr = boto3.client(
            "ecr",
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id="AKIDTEST",
            aws_secret_access_key="x",
        )
        raw = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        return str(base64.b64decode(raw).decode().partition(":")[2])


def start_moto(workdir: Path) -> MotoServer:
    binary = require_tool("moto_server", hint="pip install 'moto[server]'")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "moto.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=fh)
    _wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, log, timeout=30)
    return MotoServer(url=f"http://127.0.0.1:{port}", proc=proc)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("registry-a"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def oci_registry_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("registry-b"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def oci_basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("registry-basic"), users={USER: PASSWORD})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def oci_token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    pytest.importorskip("cryptography")
    server, token_proc = start_token_registry(tmp_path_factory.mktemp("registry-token"), {USER: PASSWORD})
    yield server
    server.stop()
    _stop(token_proc)


@pytest.fixture(scope="session")
def moto_ecr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    _stop(server.proc)


@pytest.fixture(scope="session")
def oci_ecr_registry(
    tmp_path_factory: pytest.TempPathFactory, moto_ecr: MotoServer
) -> Iterator[RegistryServer]:
    """An htpasswd registry whose ``AWS`` user has moto's ECR token as password."""
    server = start_registry(tmp_path_factory.mktemp("registry-ecr"), users={"AWS": moto_ecr.ecr_password()})
    yield server
    server.stop()


@pytest.fixture
def aws_endpoint(moto_ecr: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the runner's STS/ECR calls at moto (``RUNNER_AWS_ENDPOINT_URL``)."""
    monkeypatch.setenv("RUNNER_AWS_ENDPOINT_URL", moto_ecr.url)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return moto_ecr.url


# --------------------------------------------------------------------------- test images


class RandomBlob:
    """Deterministic pseudo-random content of any size, streamed (never held in memory).

    Content is a 1 MiB random block per seed, each MiB prefixed with its index so no two
    MiBs are equal; the digest is computed once by streaming it.
    """

    BLOCK = 1024 * 1024

    def __init__(self, size: int, seed: int | str) -> None:
        self.size = size
        self.seed = str(seed)
        self._block = hashlib.shake_256(self.seed.encode()).digest(self.BLOCK)
        hasher = hashlib.sha256()
        for chunk in self.iter_chunks():
            hasher.update(chunk)
        self.digest = "sha256:" + hasher.hexdigest()

    def iter_chunks(self) -> Iterator[bytes]:
        remaining, index = self.size, 0
        while remaining > 0:
            block = index.to_bytes(8, "big") + self._block[8:]
            piece = block[: min(remaining, self.BLOCK)]
            remaining -= len(piece)
            index += 1
            yield piece

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self.iter_chunks():
            yield chunk

    def data(self) -> bytes:
        return b"".join(self.iter_chunks())


async def push_random_image(
    client: Any,
    repository: str,
    tag: str | None,
    layer_sizes: list[int],
    *,
    seed: str,
    docker: bool = False,
    architecture: str = "amd64",
    os_name: str = "linux",
    layer_media_type: str | None = None,
) -> Any:
    """Push an image of random layers with ``client`` (a RegistryClient); returns its Manifest.

    ``tag=None`` pushes by digest only (children of an index).
    """
    from handlers.oci import media
    from handlers.oci.descriptors import Manifest

    layer_type = layer_media_type or (media.DOCKER_LAYER_GZIP if docker else media.OCI_LAYER_TAR)
    layers = []
    for index, size in enumerate(layer_sizes):
        blob = RandomBlob(size, f"{seed}-layer-{index}")
        if not await client.has_blob(repository, blob.digest):
            await client.push_blob(repository, blob.digest, blob.size, blob.chunks())
        layers.append({"mediaType": layer_type, "digest": blob.digest, "size": blob.size})
    config = json.dumps(
        {
            "architecture": architecture,
            "os": os_name,
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layers]},
            "config": {"Labels": {"seed": seed}},
        }
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    await client.push_blob(repository, config_digest, len(config), config)
    manifest = Manifest.build(
        {
            "schemaVersion": 2,
            "mediaType": media.DOCKER_MANIFEST if docker else media.OCI_MANIFEST,
            "config": {
                "mediaType": media.DOCKER_CONFIG if docker else media.OCI_CONFIG,
                "digest": config_digest,
                "size": len(config),
            },
            "layers": layers,
        }
    )
    await client.put_manifest(repository, tag or manifest.digest, manifest)
    return manifest


async def push_random_index(
    client: Any,
    repository: str,
    tag: str,
    platforms: list[tuple[str, str]],
    layer_sizes: list[int],
    *,
    seed: str,
    docker: bool = False,
) -> Any:
    """A multi-platform index (OCI index or Docker manifest list) of random images."""
    from handlers.oci import media
    from handlers.oci.descriptors import Manifest

    entries = []
    for os_name, arch in platforms:
        child = await push_random_image(
            client,
            repository,
            None,
            layer_sizes,
            seed=f"{seed}-{os_name}-{arch}",
            docker=docker,
            architecture=arch,
            os_name=os_name,
        )
        entries.append(
            {
                "mediaType": child.media_type,
                "digest": child.digest,
                "size": child.size,
                "platform": {"architecture": arch, "os": os_name},
            }
        )
    index = Manifest.build(
        {
            "schemaVersion": 2,
            "mediaType": media.DOCKER_MANIFEST_LIST if docker else media.OCI_INDEX,
            "manifests": entries,
        }
    )
    await client.put_manifest(repository, tag, index)
    return index


def skopeo_raw_digest(reference: str, *, creds: str | None = None) -> str:
    """The oracle: sha256 of the manifest bytes ``skopeo inspect --raw`` returns."""
    skopeo = require_tool("skopeo", hint="apt-get install skopeo")
    argv = [skopeo, "inspect", "--raw", "--tls-verify=false"]
    if creds:
        argv += ["--creds", creds]
    out = subprocess.run([*argv, f"docker://{reference}"], check=True, capture_output=True, timeout=60)
    return "sha256:" + hashlib.sha256(out.stdout).hexdigest()


def skopeo_inspect(reference: str, *, creds: str | None = None) -> dict[str, Any]:
    skopeo = require_tool("skopeo", hint="apt-get install skopeo")
    argv = [skopeo, "inspect", "--tls-verify=false"]
    if creds:
        argv += ["--creds", creds]
    out = subprocess.run([*argv, f"docker://{reference}"], check=True, capture_output=True, timeout=60)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def disk_usage(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "token-server":
        token_server_main(sys.argv[2:])
    else:
        print(
            "usage: python -m tests.support.registry token-server PORT KEY CERT USERS_JSON", file=sys.stderr
        )
        sys.exit(2)
