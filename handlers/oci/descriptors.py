"""Descriptors and manifests: the small JSON documents that tie an image graph together."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from handlers.oci import media


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Platform:
    architecture: str = ""
    os: str = ""
    os_version: str = ""
    variant: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Any) -> Platform | None:
        if not isinstance(data, dict):
            return None
        return cls(
            architecture=str(data.get("architecture") or ""),
            os=str(data.get("os") or ""),
            os_version=str(data.get("os.version") or ""),
            variant=str(data.get("variant") or ""),
            os_features=tuple(str(x) for x in data.get("os.features") or ()),
        )

    def to_output(self) -> dict[str, Any]:
        """The runner-output spelling (the reference's ``bins/runner/internal/jobs/build/*/outputs.go``)."""
        return {
            "architecture": self.architecture,
            "os": self.os,
            "os_version": self.os_version,
            "variant": self.variant,
            "os_features": list(self.os_features),
        }


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str = ""
    platform: Platform | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Descriptor:
        if not isinstance(data, dict) or not data.get("digest"):
            raise ValueError("descriptor without a digest")
        return cls(
            media_type=str(data.get("mediaType") or ""),
            digest=str(data["digest"]),
            size=int(data.get("size") or 0),
            urls=tuple(str(u) for u in data.get("urls") or ()),
            annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()},
            artifact_type=str(data.get("artifactType") or ""),
            platform=Platform.from_dict(data.get("platform")),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out


@dataclass(frozen=True)
class Manifest:
    """A manifest's exact bytes (the digest is over them), its media type and digest."""

    media_type: str
    digest: str
    data: bytes

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str) -> Manifest:
        return cls(media_type=media_type, digest=sha256_digest(data), data=data)

    @classmethod
    def build(cls, document: dict[str, Any]) -> Manifest:
        """Serialise a manifest document we made ourselves (stable key order, compact)."""
        data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        return cls.from_bytes(data, str(document.get("mediaType") or media.OCI_MANIFEST))

    @cached_property
    def document(self) -> dict[str, Any]:
        value = json.loads(self.data)
        if not isinstance(value, dict):
            raise ValueError("manifest is not a JSON object")
        return value

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def is_index(self) -> bool:
        return media.is_index(self.media_type)

    @property
    def config(self) -> Descriptor | None:
        cfg = self.document.get("config")
        return Descriptor.from_dict(cfg) if cfg else None

    @property
    def layers(self) -> list[Descriptor]:
        return [Descriptor.from_dict(d) for d in self.document.get("layers") or ()]

    @property
    def children(self) -> list[Descriptor]:
        """The manifests an index points at."""
        return [Descriptor.from_dict(d) for d in self.document.get("manifests") or ()]

    def blobs(self) -> list[Descriptor]:
        """Config first, then layers (an image manifest); nothing for an index."""
        if self.is_index:
            return []
        cfg = self.config
        return ([cfg] if cfg else []) + self.layers

    @property
    def annotations(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.document.get("annotations") or {}).items()}

    @property
    def artifact_type(self) -> str:
        explicit = str(self.document.get("artifactType") or "")
        if explicit or self.is_index:
            return explicit
        cfg = self.config
        # OCI 1.1: without artifactType, a non-image config media type is the artifact type.
        if cfg and cfg.media_type not in (media.OCI_CONFIG, media.DOCKER_CONFIG, media.OCI_EMPTY):
            return cfg.media_type
        return ""

    def descriptor(self) -> Descriptor:
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=self.size,
            annotations=self.annotations,
            artifact_type=self.artifact_type,
        )
