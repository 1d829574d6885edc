"""What the plan adds to a build command: build args, labels and secrets (pure decisions).

* A build arg with a value is passed as ``KEY=value`` (build args are not secret: they are in
  the image's history). A ``None`` value means "from the environment", as ``docker build
  --build-arg KEY`` does: the value comes from the runner's environment and reaches only the
  builder's environment, never argv; a key the runner does not have is left out (the
  Dockerfile's ``ARG`` default applies). The runner's own ``RUNNER_*`` variables are never
  forwarded.
* Labels are the plan's plus ours; ours win (a plan cannot forge the job id of an image).
* Secrets reach the build only as BuildKit secret mounts (``RUN --mount=type=secret,id=...``):
  each value is written to a private file outside the context and named by ``--secret
  id=...,src=FILE``; the value is never a build arg, never in argv, never in a layer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runner.sdk import HandlerError

_ARG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: Our labels on every image we build.
LABEL_PREFIX = "vnd.byoc-runner."


@dataclass(frozen=True)
class BuildArgs:
    flags: list[str] = field(default_factory=list)
    #: Variables the builder's environment must carry (``None``-valued args found in the env).
    env: dict[str, str] = field(default_factory=dict)
    #: Keys asked for from the environment but not set there (logged, not an error).
    missing: list[str] = field(default_factory=list)


def build_arg_flags(build_args: Mapping[str, str | None] | None, environ: Mapping[str, str]) -> BuildArgs:
    out = BuildArgs()
    for key, value in sorted((build_args or {}).items()):
        if not _ARG_RE.match(key):
            raise HandlerError(f"build arg name {key!r} is not a valid variable name", build_arg=key)
        if value is not None:
            out.flags.extend(["--build-arg", f"{key}={value}"])
            continue
        if key.startswith("RUNNER_"):
            raise HandlerError(
                f"build arg {key} asks for the runner's own setting from the environment: refused",
                build_arg=key,
            )
        if key in environ:
            out.flags.extend(["--build-arg", key])
            out.env[key] = environ[key]
        else:
            out.missing.append(key)
    return out


def image_labels(plan_labels: Mapping[str, str] | None, ours: Mapping[str, str]) -> dict[str, str]:
    labels = {k: v for k, v in (plan_labels or {}).items() if not k.startswith(LABEL_PREFIX)}
    labels.update({k: v for k, v in ours.items() if v})
    return labels


def label_flags(labels: Mapping[str, str]) -> list[str]:
    flags: list[str] = []
    for key, value in sorted(labels.items()):
        flags.extend(["--label", f"{key}={value}"])
    return flags


def validate_secret_ids(secrets: Mapping[str, str] | None) -> list[str]:
    ids = sorted(secrets or {})
    for sid in ids:
        if not _SECRET_ID_RE.match(sid):
            raise HandlerError(f"build secret id {sid!r} is not valid (letters, digits, '_', '.', '-')")
    return ids


def write_secret_files(secrets: Mapping[str, str], directory: Path) -> list[str]:
    """Each secret in a 0600 file of a 0700 directory; returns the ``--secret`` flags."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    flags: list[str] = []
    for sid in validate_secret_ids(secrets):
        path = directory / sid
        path.touch(mode=0o600)
        path.write_text(secrets[sid])
        flags.extend(["--secret", f"id={sid},src={path}"])
    return flags
