"""Which version ``mng-runner-update-version`` asks for: a plain decision, unit-tested alone.

The supervisor checks that the string is a usable version (pip and docker tag at once); this
only picks it, as the reference does from settings ``container_image_tag``, with the job's
metadata first when it names one (an operator's explicit target for this job).
"""

from __future__ import annotations

from collections.abc import Mapping

#: Job metadata keys that name the version, most specific first.
METADATA_VERSION_KEYS = ("version", "container_image_tag", "image_tag")


class VersionError(ValueError):
    """No version to update to; the message says where it was looked for."""


def resolve_version(settings_tag: str | None, metadata: Mapping[str, str | None] | None) -> str:
    for key in METADATA_VERSION_KEYS:
        value = str((metadata or {}).get(key) or "").strip()
        if value:
            return value
    tag = (settings_tag or "").strip()
    if tag:
        return tag
    raise VersionError(
        "no version to update to: neither the job's metadata (version, container_image_tag, image_tag) "
        "nor the settings' container_image_tag name one"
    )
