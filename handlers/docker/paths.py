"""Where the build context and the Dockerfile are, always inside the job's workspace.

The context is the checkout's ``git_source.path`` joined with ``docker_build_plan.context``
(the reference resolved ``context`` against the process's working directory); the Dockerfile
(default ``Dockerfile``) is relative to the context. A Dockerfile elsewhere in the checkout is
copied into the context under a unique name for the build and removed afterwards (the
reference deleted its copy before the build ran). Anything that leads out of the checkout
(``..``, an absolute path, a symlink) is refused before a builder sees it.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runner.sdk import HandlerError

DEFAULT_DOCKERFILE = "Dockerfile"


class BuildPathError(HandlerError):
    """A context or Dockerfile that is missing or leads outside the workspace."""


@dataclass(frozen=True)
class BuildPaths:
    context: Path
    #: The Dockerfile as the builder reads it (a copy inside the context when ``copy_from`` is set).
    dockerfile: Path
    #: The original Dockerfile outside the context, if it has to be copied in.
    copy_from: Path | None = None


def _inside(base: Path, candidate: Path) -> bool:
    return candidate == base or base in candidate.parents


def _relative(text: str, what: str) -> PurePosixPath:
    rel = PurePosixPath(text.strip() or ".")
    if rel.is_absolute():
        raise BuildPathError(f"{what} {text!r} must be a relative path inside the source", path=text)
    return rel


def resolve_build_paths(root: Path, source_dir: Path, context: str, dockerfile: str) -> BuildPaths:
    """The context (``source_dir/context``) and Dockerfile (relative to it), both inside ``root``.

    ``root`` is the checkout, ``source_dir`` its ``git_source.path`` sub-directory. ``..`` is
    allowed as long as the resolved path (symlinks followed) stays inside ``root``.
    """
    base = root.resolve()
    ctx_dir = (source_dir / _relative(context, "docker_build_plan.context")).resolve()
    if not _inside(base, ctx_dir):
        raise BuildPathError(
            f"docker_build_plan.context {context!r} leads outside the source checkout", path=context
        )
    if not ctx_dir.is_dir():
        raise BuildPathError(f"docker_build_plan.context {context!r} is not a directory in the source")
    name = dockerfile.strip() or DEFAULT_DOCKERFILE
    df = (ctx_dir / _relative(name, "docker_build_plan.dockerfile")).resolve()
    if not _inside(base, df):
        raise BuildPathError(
            f"docker_build_plan.dockerfile {name!r} leads outside the source checkout", path=name
        )
    if not df.is_file():
        raise BuildPathError(f"Dockerfile {name!r} not found (looked for it relative to the context)")
    if _inside(ctx_dir, df):
        return BuildPaths(context=ctx_dir, dockerfile=df)
    return BuildPaths(context=ctx_dir, dockerfile=ctx_dir / copy_name(), copy_from=df)


def copy_name() -> str:
    """A name no file of the context has: ``Dockerfile.byoc-<hex>``."""
    return f"{DEFAULT_DOCKERFILE}.byoc-{uuid.uuid4().hex[:12]}"


def place_dockerfile(paths: BuildPaths) -> None:
    """Copy an outside Dockerfile (and its ``.dockerignore`` sibling) into the context."""
    if paths.copy_from is None:
        return
    shutil.copyfile(paths.copy_from, paths.dockerfile)
    ignore = paths.copy_from.with_name(paths.copy_from.name + ".dockerignore")
    if ignore.is_file():
        shutil.copyfile(ignore, paths.dockerfile.with_name(paths.dockerfile.name + ".dockerignore"))


def remove_dockerfile_copy(paths: BuildPaths) -> None:
    """Undo ``place_dockerfile``; idempotent."""
    if paths.copy_from is None:
        return
    paths.dockerfile.unlink(missing_ok=True)
    paths.dockerfile.with_name(paths.dockerfile.name + ".dockerignore").unlink(missing_ok=True)
