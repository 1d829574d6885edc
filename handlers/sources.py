"""Where a job's files come from: a git repository or a local archive, fetched into the workspace.

Shared by every handler that builds or runs something from source (terraform, docker and helm
builds, actions). Two rules shape it:

* **Credentials never travel in argv or in ``.git/config``.** A ``https://user:token@host/...``
  URL is split: git gets the bare URL, and the credentials reach only that git child, as an
  ``http.<origin>.extraHeader`` passed through ``GIT_CONFIG_*`` environment variables and scoped
  to that origin (so a submodule on another host never sees them). The token, its base64 form
  and the original URL are registered as secrets, so they are masked should git print them.
* **Nothing escapes the destination.** A ``git_source.path`` or an archive member that points
  outside the checkout (``..``, absolute paths, symlinks leading out) is refused.

Clones are shallow where git allows it: ``--depth 1 --branch REF`` for branches and tags, a
depth-1 fetch of the commit for a SHA, and a full clone only as the fallback when the server
refuses those (short SHAs, servers without ``allowReachableSHA1InWant``).
"""

from __future__ import annotations

import base64
import re
import shutil
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import anyio

from runner.sdk import HandlerError, JobContext, JobLog, ProcessRunner, SecretRegistry
from runner.sdk.plans import GitSource, LocalArchive

_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


class SourceError(HandlerError):
    """A source that cannot be fetched: bad URL, unknown ref, escaping path, broken archive."""


@dataclass(frozen=True)
class FetchedSource:
    """A source on disk: ``root`` is the checkout, ``directory`` the requested sub-directory."""

    root: Path
    directory: Path
    #: The resolved commit for git sources, "" for archives.
    commit: str = ""
    #: A printable description without credentials.
    description: str = ""


# --------------------------------------------------------------------------- git


@dataclass(frozen=True)
class GitRemote:
    """A git URL with its credentials taken out (see the module docstring)."""

    url: str
    env: Mapping[str, str]
    secrets: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        return self.url


def split_credentials(url: str) -> GitRemote:
    """Split ``https://user:token@host/repo`` into a bare URL and a scoped auth header env."""
    url = url.strip()
    if not url:
        raise SourceError("git source has no url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.password is None:
        # ssh://git@host, git://, file:// and plain paths carry no secret we can move.
        return GitRemote(url=url, env={})
    user = unquote(parts.username or "")
    password = unquote(parts.password)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    if ":" in host:  # IPv6 literal
        netloc = f"[{host}]" + (f":{parts.port}" if parts.port else "")
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    origin = f"{parts.scheme}://{netloc}/"
    env = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"http.{origin}.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }
    secrets = tuple(
        s for s in (password, quote(password, safe=""), basic, url, f"{user}:{password}") if len(s) >= 3
    )
    return GitRemote(url=bare, env=env, secrets=secrets)


def _git_env(remote: GitRemote) -> dict[str, str]:
    return {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/true",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_LFS_SKIP_SMUDGE": "1",
        **remote.env,
    }


def _empty_dir(path: Path) -> None:
    """Make ``path`` an empty directory."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def _inside(base: Path, candidate: Path) -> bool:
    try:
        candidate.resolve().relative_to(base.resolve())
    except ValueError:
        return False
    return True


def resolve_subpath(root: Path, sub: str, *, what: str = "path") -> Path:
    """``root/sub`` if it stays inside ``root`` (symlinks resolved) and is a directory."""
    sub = (sub or "").strip()
    rel = PurePosixPath(sub)
    if rel.is_absolute() or ".." in rel.parts:
        raise SourceError(f"{what} {sub!r} must be relative and stay inside the source", path=sub)
    target = root / rel if sub and sub != "." else root
    if not _inside(root, target):
        raise SourceError(f"{what} {sub!r} leads outside the source (symlink)", path=sub)
    if not target.is_dir():
        raise SourceError(f"{what} {sub!r} is not a directory in the source", path=sub)
    return target


async def clone_git(
    source: GitSource,
    dest: Path,
    *,
    processes: ProcessRunner,
    secrets: SecretRegistry,
    log: JobLog,
) -> FetchedSource:
    """Clone ``source`` into ``dest`` (created; must not exist or be empty)."""
    remote = split_credentials(source.url)
    secrets.register(*remote.secrets)
    env = _git_env(remote)
    ref = source.ref.strip()
    await anyio.to_thread.run_sync(_empty_dir, dest)
    log.info("cloning git source", url=remote.display, ref=ref or "(default branch)")

    async def git(*args: str, check: bool = True, cwd: Path | None = dest) -> int:
        result = await processes.run(["git", *args], env=env, cwd=cwd, check=check)
        return result.returncode

    async def reset_dest() -> None:
        await anyio.to_thread.run_sync(_empty_dir, dest)

    shallow = False
    if ref and _SHA_RE.match(ref):
        await git("init", "--quiet", str(dest), cwd=None)
        await git("remote", "add", "origin", remote.url)
        if await git("fetch", "--quiet", "--depth", "1", "origin", ref, check=False) == 0:
            await git("checkout", "--quiet", "--detach", "FETCH_HEAD")
            shallow = True
        else:
            log.info("shallow fetch of the commit refused by the server; fetching the full history")
            await reset_dest()
    else:
        argv = ["clone", "--quiet", "--depth", "1", "--single-branch"]
        if ref:
            argv += ["--branch", ref]
        if await git(*argv, remote.url, str(dest), check=False, cwd=None) == 0:
            shallow = True
        else:
            log.info("shallow clone failed; trying a full clone", ref=ref)
            await reset_dest()

    if not shallow:
        if await git("clone", "--quiet", "--no-checkout", remote.url, str(dest), check=False, cwd=None) != 0:
            raise SourceError(f"cannot clone {remote.display}", url=remote.display)
        target = ref or "HEAD"
        if await git("checkout", "--quiet", "--detach", target, check=False) != 0:
            raise SourceError(f"ref {ref!r} not found in {remote.display}", url=remote.display, ref=ref)

    if source.recurse_submodules:
        log.info("updating submodules")
        code = await git("submodule", "update", "--init", "--recursive", "--depth", "1", check=False)
        if code != 0:
            await git("submodule", "update", "--init", "--recursive")

    head = await processes.run(["git", "rev-parse", "HEAD"], env=env, cwd=dest, capture_stdout=True)
    commit = (head.stdout or b"").decode().strip()
    directory = resolve_subpath(dest, source.path, what="git_source.path")
    log.info("git source ready", commit=commit, path=source.path or ".")
    return FetchedSource(
        root=dest, directory=directory, commit=commit, description=f"{remote.display}@{commit}"
    )


# --------------------------------------------------------------------------- local archives


def _check_member_name(name: str, archive: Path) -> None:
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or (rel.parts and rel.parts[0].endswith(":")):
        raise SourceError(f"archive {archive.name} has a member that escapes the destination: {name!r}")


def _unpack_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                _check_member_name(member.name, archive)
            # The "data" filter refuses links leading out, devices and absolute paths.
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise SourceError(f"archive {archive.name} refused: {exc}") from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"cannot read archive {archive.name}: {exc}") from exc


def _unpack_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_member_name(info.filename, archive)
            # zipfile writes symlink entries as plain files, so no link can lead out.
            zf.extractall(dest)  # noqa: S202 - every member name was checked above
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"cannot read archive {archive.name}: {exc}") from exc


def _copy_directory(src: Path, dest: Path) -> None:
    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if n in (".git", ".terraform")}

    shutil.copytree(src, dest, symlinks=True, ignore=ignore, dirs_exist_ok=True)
    for path in dest.rglob("*"):
        if path.is_symlink() and not _inside(dest, path):
            raise SourceError(f"{src} holds a symlink leading outside it: {path.relative_to(dest)}")


def _unpack(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if archive.is_dir():
        _copy_directory(archive, dest)
    elif archive.name.endswith((".tar.gz", ".tgz")):
        _unpack_tar(archive, dest)
    elif archive.name.endswith(".zip"):
        _unpack_zip(archive, dest)
    else:
        raise SourceError(
            f"local archive {archive} is neither a directory nor one of {', '.join(_ARCHIVE_SUFFIXES)}"
        )


async def unpack_local_archive(spec: LocalArchive | str, dest: Path, *, log: JobLog) -> FetchedSource:
    """Copy a directory, or unpack a .tar.gz/.tgz/.zip, from the runner's machine into ``dest``."""
    raw = spec.local_archive if isinstance(spec, LocalArchive) else spec
    if not raw or not raw.strip():
        raise SourceError("local_archive names no path")
    path = Path(raw.strip())
    log.info("unpacking local archive", path=str(path))
    directory = await anyio.to_thread.run_sync(_unpack_local, path, dest)
    return FetchedSource(root=dest, directory=directory, description=str(path))


def _unpack_local(path: Path, dest: Path) -> Path:
    path = path.expanduser()
    if not path.exists():
        raise SourceError(f"local archive {path} does not exist", path=str(path))
    _unpack(path, dest)
    # An archive holding one top-level directory is the module itself (``tar czf m.tgz module/``).
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not path.is_dir():
        return entries[0]
    return dest


async def fetch_source(
    *,
    git: GitSource | None,
    local_archive: LocalArchive | None,
    dest: Path,
    processes: ProcessRunner,
    secrets: SecretRegistry,
    log: JobLog,
) -> FetchedSource:
    """The one entry point: ``local_archive`` wins when both are set (as in the reference)."""
    if local_archive is not None and local_archive.local_archive:
        return await unpack_local_archive(local_archive, dest, log=log)
    if git is not None and git.url:
        return await clone_git(git, dest, processes=processes, secrets=secrets, log=log)
    raise SourceError("the plan names no source: neither git_source.url nor local_archive is set")


async def fetch_job_source(
    ctx: JobContext,
    git: GitSource | None,
    local_archive: LocalArchive | None = None,
    *,
    dest_name: str = "source",
) -> FetchedSource:
    """:func:`fetch_source` into the job's workspace with the job's own runner, secrets and log.

    Every build and deploy fetches its source the same way; this keeps the wiring in one place.
    """
    return await fetch_source(
        git=git,
        local_archive=local_archive,
        dest=ctx.workspace / dest_name,
        processes=ctx.processes,
        secrets=ctx.secrets,
        log=ctx.log,
    )
