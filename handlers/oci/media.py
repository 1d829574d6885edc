"""OCI and Docker media types, and which of them are manifests we know how to walk."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: The OCI 1.1 empty descriptor: config of artifacts that have no config of their own.
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_DATA = b"{}"
OCI_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

#: Image manifests: one config and a list of layers.
IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: Indexes: a list of manifests, usually one per platform.
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
#: Everything ``RegistryClient.get_manifest`` accepts.
MANIFESTS = IMAGE_MANIFESTS | INDEXES

#: The Accept header sent for manifests, most specific first.
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))

#: Annotations.
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_CREATED = "org.opencontainers.image.created"
#: Octal file mode of an artifact layer (e.g. "0755"), so hook scripts stay executable.
ANNOTATION_FILE_MODE = "vnd.byoc-runner.file.mode"


def base_media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, without parameters and in lower case."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFESTS


def is_index(media_type: str) -> bool:
    return media_type in INDEXES
