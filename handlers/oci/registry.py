"""From a plan's ``OCIRegistryRepository`` to an authenticated client bound to one repository.

This is the entry point the other handlers use (terraform and helm pull and push artifacts
through it)::

    target = await open_registry(plan.src_registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
    try:
        files = await pull_directory(target, plan.src_tag, workdir)
    finally:
        await target.aclose()

Where the registry is: if ``Repository`` starts with a host (``127.0.0.1:5000/app``, an ECR
URI ``<acct>.dkr.ecr.<region>.amazonaws.com/app``), that host; otherwise ``LoginServer`` +
``/`` + ``Repository`` (Docker Hub when both are bare and the type is ``public_oci``).

Credentials by ``RegistryType``:

* ``private_oci`` / ``public_oci``: ``OCIAuth`` username and password if given, else anonymous;
* ``acr``: ``OCIAuth`` is required (the Azure RBAC token exchange is not supported);
* ``ecr``: an ECR token from ``GetAuthorizationToken`` with ``ECRAuth`` (see ``ecr.py``);
* anything else fails with a ``HandlerError`` naming the type.

Every credential is registered with ``secrets`` (the job's masking) before it is used.
"""

from __future__ import annotations

from typing import Protocol

from handlers.oci.auth import Credentials
from handlers.oci.client import RegistryClient
from handlers.oci.ecr import ecr_credentials
from handlers.oci.errors import ConfigurationError
from handlers.oci.reference import DOCKER_HUB, Reference, ReferenceError, looks_like_host, strip_scheme
from runner.sdk import JobLog, SecretRegistry
from runner.sdk.plans import OCIRegistryRepository

REGISTRY_TYPES = ("ecr", "acr", "private_oci", "public_oci")


class RegistryTarget:
    """An authenticated client bound to one repository of one registry."""

    def __init__(
        self, client: RegistryClient, repository: str, *, registry_type: str = "", tag: str | None = None
    ):
        self.client = client
        #: ``host[:port]`` (``docker.io`` for Docker Hub).
        self.registry = client.registry
        #: The path inside the registry (``org/app``).
        self.repository = repository
        self.registry_type = registry_type
        #: A tag or digest written into the config's ``Repository`` itself, if any.
        self.tag = tag

    def ref(self, tag_or_digest: str) -> Reference:
        """The full reference of ``tag_or_digest`` in this repository."""
        return Reference(self.registry, self.repository).with_identifier(tag_or_digest)

    def display(self, tag_or_digest: str) -> str:
        """``host/repo:tag`` or ``host/repo@sha256:...``, for logs and errors; no credentials."""
        return self.client.display(self.repository, tag_or_digest)

    @property
    def name(self) -> str:
        """``host/repo``."""
        return f"{self.registry}/{self.repository}"

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> RegistryTarget:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RegistryTarget({self.name!r}, type={self.registry_type!r})"


def locate(repo: OCIRegistryRepository) -> Reference:
    """Where ``repo`` points: registry host, repository path, and any tag written into it."""
    raw = strip_scheme(repo.repository.strip()).strip("/")
    login = strip_scheme(repo.login_server.strip()).strip("/")
    kind = repo.registry_type.strip().lower()
    if not raw:
        raise ConfigurationError(f"{kind or 'registry'} config has an empty Repository")
    first = raw.split("/", 1)[0]
    if not ("/" in raw and looks_like_host(first)):
        if login:
            raw = f"{login}/{raw}"
        elif kind != "public_oci":
            raise ConfigurationError(
                f"{kind} repository {raw!r} names no registry host and the config has no LoginServer"
            )
    try:
        return Reference.parse(raw, default_registry=DOCKER_HUB)
    except ReferenceError as exc:
        raise ConfigurationError(f"{kind} registry config: {exc}") from None


def _explicit_tag(repo: OCIRegistryRepository, parsed: Reference) -> str | None:
    """The tag/digest only if the config actually wrote one (``parse`` defaults to latest)."""
    text = repo.repository
    if parsed.digest:
        return parsed.digest
    tail = text.rsplit("/", 1)[-1]
    return parsed.tag if ":" in tail else None


class RegistrySettings(Protocol):
    """What a registry client needs of the tool settings (``ctx.tools``)."""

    @property
    def insecure_registries(self) -> tuple[str, ...]: ...
    @property
    def request_timeout(self) -> float: ...


async def open_registry(
    repo: OCIRegistryRepository | None,
    *,
    config: RegistrySettings,
    secrets: SecretRegistry | None = None,
    log: JobLog | None = None,
    chunk_size: int | None = None,
    max_connections: int = 16,
) -> RegistryTarget:
    """Resolve ``repo`` to a host and repository, get its credentials, return a bound client.

    Raises ``ConfigurationError`` (a ``HandlerError``) for an unknown ``RegistryType``, missing
    credentials or a repository that names no registry; ``AuthenticationError`` if ECR refuses.
    Nothing is sent to the registry yet: the first request authenticates.
    """
    if repo is None:
        raise ConfigurationError("the plan has no registry config")
    kind = repo.registry_type.strip().lower()
    if kind not in REGISTRY_TYPES:
        raise ConfigurationError(
            f"unknown registry type {repo.registry_type!r} for repository {repo.repository!r} "
            f"(expected one of {', '.join(REGISTRY_TYPES)})"
        )
    where = locate(repo)
    on_secret = secrets.register if secrets is not None else None
    if repo.oci_auth is not None and secrets is not None:
        secrets.register(repo.oci_auth.password)

    credentials: Credentials | None = None
    auth = repo.oci_auth
    has_user = bool(auth and auth.username)
    has_password = bool(auth and auth.password)
    if kind == "ecr":
        credentials = await ecr_credentials(
            repo.ecr_auth, registry=where.registry, region=repo.region, on_secret=on_secret
        )
    elif has_user != has_password:
        missing = "Password" if has_user else "Username"
        raise ConfigurationError(f"{kind} registry {where.name}: OCIAuth has no {missing}")
    elif has_user and auth is not None:
        credentials = Credentials(auth.username, auth.password)
    elif kind == "acr":
        raise ConfigurationError(
            f"acr registry {where.name}: OCIAuth username and password are required "
            "(Azure RBAC token exchange is not supported)"
        )

    client = RegistryClient(
        where.registry,
        credentials=credentials,
        insecure_registries=config.insecure_registries,
        on_secret=on_secret,
        chunk_size=chunk_size,
        max_connections=max_connections,
        timeout=max(60.0, config.request_timeout),
    )
    if log is not None:
        mode = "anonymous" if credentials is None else "with credentials"
        log.debug(f"registry {where.name} ({kind}, {client.scheme}, {mode})")
    return RegistryTarget(client, where.repository, registry_type=kind, tag=_explicit_tag(repo, where))
