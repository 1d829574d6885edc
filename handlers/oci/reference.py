"""Parsing image references: ``[host[:port]/]repository[:tag][@digest]``.

Docker's defaults apply to references without a registry host: ``nginx`` is
``docker.io/library/nginx:latest``. The first path component is a host when it contains a
``.`` or a ``:`` or is ``localhost`` (docker's rule), so ``127.0.0.1:5000/app`` and
``123456789012.dkr.ecr.us-east-1.amazonaws.com/app`` keep their host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

DOCKER_HUB = "docker.io"
#: Where Docker Hub's registry API actually lives.
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})

_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]+)?$")


class ReferenceError(ValueError):
    """A string that is not a valid image reference; the message quotes it."""


def looks_like_host(component: str) -> bool:
    """Docker's rule for whether the first path component names a registry."""
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


def normalize_registry(host: str) -> str:
    """Canonical registry name: Docker Hub aliases fold to ``docker.io``; scheme and slashes go."""
    host = strip_scheme(host).strip("/").lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def strip_scheme(text: str) -> str:
    for prefix in ("https://", "http://", "oci://", "docker://"):
        if text.lower().startswith(prefix):
            return text[len(prefix) :]
    return text


def api_host(registry: str) -> str:
    """The host that serves the registry API for ``registry`` (Docker Hub's differs)."""
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry


def is_digest(text: str) -> bool:
    return bool(_DIGEST_RE.match(text))


@dataclass(frozen=True)
class Reference:
    """A parsed reference. ``tag`` and ``digest`` may both be set (the digest wins)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, *, default_registry: str = DOCKER_HUB) -> Reference:
        raw = strip_scheme(text.strip())
        if not raw:
            raise ReferenceError("empty image reference")
        name, digest = raw, None
        if "@" in raw:
            name, _, digest = raw.partition("@")
            if not is_digest(digest):
                raise ReferenceError(f"invalid digest in image reference {text!r}")
        tag = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise ReferenceError(f"invalid tag {tag!r} in image reference {text!r}")
        first, sep, rest = name.partition("/")
        if sep and looks_like_host(first):
            registry, repository = normalize_registry(first), rest
        else:
            registry, repository = normalize_registry(default_registry), name
        if not _HOST_RE.match(registry):
            raise ReferenceError(f"invalid registry host {registry!r} in image reference {text!r}")
        if registry == DOCKER_HUB and "/" not in repository:
            repository = "library/" + repository
        validate_repository(repository, text)
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest if known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_identifier(self, tag_or_digest: str) -> Reference:
        if is_digest(tag_or_digest):
            return replace(self, tag=None, digest=tag_or_digest)
        if not _TAG_RE.match(tag_or_digest):
            raise ReferenceError(f"invalid tag {tag_or_digest!r} for {self.registry}/{self.repository}")
        return replace(self, tag=tag_or_digest, digest=None)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


def validate_repository(repository: str, context: str) -> None:
    if not repository:
        raise ReferenceError(f"missing repository in image reference {context!r}")
    for component in repository.split("/"):
        if not _COMPONENT_RE.match(component):
            raise ReferenceError(f"invalid repository {repository!r} in image reference {context!r}")
