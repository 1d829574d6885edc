"""``RUNNER_DOCKER_*``: the docker-build family's settings, parsed from their own prefix.

A ``HandlerSettings`` family (``ctx.handler_settings(DockerSettings)``); ``checked`` adds what
the generic parser cannot know (the allowed values), so a bad value fails the job with one
message naming the variable and the runner goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

from runner.sdk import HandlerError, HandlerSettings

BUILDERS = ("auto", "docker", "podman")
PRUNE_MODES = ("none", "image", "dangling")
_PRUNE_ALIASES = {"true": "image", "1": "image", "yes": "image", "false": "none", "0": "none", "no": "none"}


@dataclasses.dataclass(frozen=True)
class DockerSettings(HandlerSettings):
    prefix: ClassVar[str] = "RUNNER_DOCKER_"

    #: ``auto`` takes dockerd when one answers, else podman; the job log says which.
    builder: str = "auto"
    #: After the push: ``image`` removes the job's image from the builder's store, ``dangling``
    #: also every dangling image (multi-stage leftovers of podman and the legacy builder; for a
    #: builder the runner has to itself), ``none`` keeps everything. true/false: image/none.
    prune: str = "image"
    #: The docker CLI (a path or a name on PATH).
    cli: str = "docker"
    #: The podman binary.
    podman: str = "podman"
    #: The daemon the docker CLI talks to; empty: the runner's ``DOCKER_HOST``.
    host: str = ""
    #: Podman's storage root (``--root``); empty: podman's default.
    podman_root: str = ""
    #: The network of RUN steps: ``host`` (the runner's own egress), ``none``, or a builder network.
    network: str = "host"


def checked(settings: DockerSettings, environ: Mapping[str, str]) -> DockerSettings:
    """Validate the choices and fill ``host`` from the runner's ``DOCKER_HOST``."""
    builder = settings.builder.strip().lower() or "auto"
    if builder not in BUILDERS:
        raise HandlerError(f"RUNNER_DOCKER_BUILDER={settings.builder!r} is not one of {', '.join(BUILDERS)}")
    prune = settings.prune.strip().lower() or "image"
    prune = _PRUNE_ALIASES.get(prune, prune)
    if prune not in PRUNE_MODES:
        raise HandlerError(
            f"RUNNER_DOCKER_PRUNE={settings.prune!r} is not one of {', '.join(PRUNE_MODES)} (or true/false)"
        )
    host = settings.host or environ.get("DOCKER_HOST", "").strip()
    return dataclasses.replace(settings, builder=builder, prune=prune, host=host)


def docker_settings(environ: Mapping[str, str]) -> DockerSettings:
    """Parse ``RUNNER_DOCKER_*`` from ``environ`` directly (benches, tests, ``runner exec``)."""
    return checked(DockerSettings.from_source(environ), environ)
