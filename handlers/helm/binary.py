"""Which helm a job runs, and where that binary comes from.

Mirrors handlers/terraform/binary.py. The version a job wants comes from, in order: the app config
(``helm.helm_version`` of the component's config connection, ours), the plan
(``helm.helm_version``, ours, for ``runner exec``), ``RUNNER_HELM_VERSION``; none of them: the
``helm`` on PATH, whatever its version. A wanted version is looked up:

1. in the per-version cache ``<tools_dir>/helm/<version>/helm``, whose SHA256 was recorded when it
   was filled (``helm.json``); a binary whose size or mtime changed since is hashed again and
   refused (and replaced) when the hash differs, so a corrupted cache never runs;
2. as a ``helm`` on PATH reporting that version (``helm version``): copied into the cache with
   its hash recorded, so later jobs do not depend on PATH;
3. from ``RUNNER_HELM_MIRROR_URL`` laid out like get.helm.sh
   (``helm-v<V>-<os>-<arch>.tar.gz`` and ``.sha256sum``): verified against the mirror's SHA256,
   unpacked and renamed into place, under a file lock so concurrent jobs download it once.

When nothing fits, the error names the version, where the request came from and every place looked.
"""

from __future__ import annotations

import platform
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from handlers.common.toolcache import (
    download_verified,
    file_lock,
    install_executable,
    machine_arch,
    record_sha256,
    sha256_file,
    verify_recorded,
)
from handlers.helm.settings import HelmSettings
from runner.sdk import APIRequestFailed, APIUnreachable, HandlerError, JobContext, JobLog, ProcessRunner

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.\-]+)?$")


class HelmNotFound(HandlerError):
    """The requested helm version is nowhere to be had."""


class HelmChecksumMismatch(HelmNotFound):
    """A download or a cached binary does not match its recorded SHA256: refused."""


@dataclass(frozen=True)
class VersionRequest:
    version: str | None
    origin: str


@dataclass(frozen=True)
class HelmBinary:
    path: Path
    version: str | None
    #: "cache", "path" (copied into the cache), "mirror", or "path-unpinned" (no version asked).
    source: str


def normalize_version(raw: str | None) -> str | None:
    """``v3.17.2`` -> ``3.17.2``; empty -> None; anything else than an exact version -> error."""
    text = (raw or "").strip()
    if not text:
        return None
    if text[0] in "vV":
        text = text[1:]
    if not _VERSION_RE.match(text):
        raise HelmNotFound(f"helm version {raw!r} is not an exact version like 3.17.2", version=raw)
    return text


def platform_suffix() -> str:
    """``linux-amd64``, as get.helm.sh names its archives."""
    return f"{platform.system().lower()}-{machine_arch()}"


def version_from_app_config(config: dict[str, Any], component_id: str) -> str:
    """``helm.helm_version`` of the component's config connection (ours; the reference pins none)."""
    connections = config.get("component_config_connections")
    if not isinstance(connections, list):
        return ""
    for item in connections:
        if not isinstance(item, dict):
            continue
        if component_id and item.get("component_id") not in (component_id, None):
            continue
        for key in ("helm", "helm_chart"):
            section = item.get(key)
            if isinstance(section, dict) and section.get("helm_version"):
                return str(section["helm_version"])
    return ""


async def requested_version(
    ctx: JobContext, *, app_id: str, app_config_id: str, component_id: str, plan_version: str
) -> VersionRequest:
    """The job's helm version: app config, else the plan, else RUNNER_HELM_VERSION, else PATH."""
    if app_id and app_config_id:
        try:
            config = await ctx.api.app_config(app_id, app_config_id)
        except (APIRequestFailed, APIUnreachable) as exc:
            ctx.log.warning("app config not readable; falling back to the default helm", error=str(exc))
        else:
            found = version_from_app_config(config, component_id)
            if found:
                return VersionRequest(normalize_version(found), "app config helm.helm_version")
    if plan_version.strip():
        return VersionRequest(normalize_version(plan_version), "plan helm.helm_version")
    configured = ctx.handler_settings(HelmSettings).version
    if configured:
        return VersionRequest(normalize_version(configured), "RUNNER_HELM_VERSION")
    return VersionRequest(None, "helm on PATH (no version requested)")


# --------------------------------------------------------------------------- the cache
# (the lock, the download check and the hash records: handlers/common/toolcache.py)


def verify_cached(binary: Path) -> bool:
    """True when the cached binary is the one recorded; re-hashes only when size or mtime moved."""
    return verify_recorded(binary)


def _install_copy(source: Path, target: Path) -> None:
    """Copy ``source`` next to ``target``, rename into place, record its hash."""
    with source.open("rb") as src:
        install_executable(src, target, prefix=".helm-")
    record_sha256(target, sha256_file(target))


def _install_from_tgz(archive: Path, target: Path) -> None:
    """Unpack ``<os>-<arch>/helm`` of a checked archive next to ``target``; record its hash."""
    member_name = f"{platform_suffix()}/helm"
    with tarfile.open(archive, "r:gz") as tgz:
        try:
            member = tgz.extractfile(member_name)
        except KeyError:
            member = None
        if member is None:
            raise HelmNotFound(f"{archive.name} holds no {member_name}")
        install_executable(member, target, prefix=".helm-")
    record_sha256(target, sha256_file(target))


async def path_version(path: str, processes: ProcessRunner) -> str | None:
    result = await processes.run(
        [path, "version", "--template", "{{.Version}}"], capture_stdout=True, check=False
    )
    if result.returncode != 0 or not result.stdout:
        return None
    try:
        return normalize_version(result.stdout.decode().strip())
    except HelmNotFound:
        return None


async def _download(version: str, mirror_url: str, target: Path, *, log: JobLog) -> None:
    base = mirror_url.rstrip("/")
    filename = f"helm-v{version}-{platform_suffix()}.tar.gz"
    url = f"{base}/{filename}"
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0), follow_redirects=True) as http:
        sums = await http.get(url + ".sha256sum")
        if sums.status_code != 200:
            raise HelmNotFound(f"{url}.sha256sum answered HTTP {sums.status_code}")
        expected = (sums.text.split() or [""])[0].lower()
        log.info("downloading helm", version=version, url=url)

        def mismatch(actual: str) -> HelmChecksumMismatch:
            return HelmChecksumMismatch(
                f"helm {version} from {url} has SHA256 {actual}, the mirror says {expected}: refused",
                version=version,
            )

        await download_verified(
            http,
            url,
            expected,
            target,
            suffix=".tgz",
            install=_install_from_tgz,
            unavailable=HelmNotFound,
            mismatch=mismatch,
        )


async def resolve_helm(
    request: VersionRequest,
    *,
    tools_dir: Path,
    mirror_url: str | None,
    processes: ProcessRunner,
    log: JobLog,
) -> HelmBinary:
    """Find (or fetch) the helm binary for ``request``; see the module docstring."""
    on_path = shutil.which("helm")
    version = request.version
    if version is None:
        if on_path:
            log.info("using the helm on PATH", path=on_path, reason=request.origin)
            return HelmBinary(Path(on_path), None, "path-unpinned")
        raise HelmNotFound(
            "no helm version was requested (app config, plan, RUNNER_HELM_VERSION) "
            "and there is no helm on PATH"
        )
    cache_dir = tools_dir / "helm" / version
    cached = cache_dir / "helm"
    if cached.is_file() and await anyio.to_thread.run_sync(verify_cached, cached):
        log.info("helm from the cache", version=version, path=str(cached), reason=request.origin)
        return HelmBinary(cached, version, "cache")
    cache_dir.mkdir(parents=True, exist_ok=True)
    looked: list[str] = []
    async with file_lock(tools_dir / "helm" / f"{version}.lock"):
        if cached.is_file():
            if await anyio.to_thread.run_sync(verify_cached, cached):
                return HelmBinary(cached, version, "cache")  # another job filled it meanwhile
            log.warning("cached helm does not match its recorded SHA256: replacing it", path=str(cached))
            cached.unlink(missing_ok=True)
        looked.append(f"the cache ({cached}): absent")
        if on_path:
            found = await path_version(on_path, processes)
            if found == version:
                await anyio.to_thread.run_sync(_install_copy, Path(on_path), cached)
                log.info(
                    "helm from PATH, now cached", version=version, path=str(cached), reason=request.origin
                )
                return HelmBinary(cached, version, "path")
            looked.append(f"PATH ({on_path}): version {found or 'unknown'}")
        else:
            looked.append("PATH: no helm")
        if not mirror_url:
            looked.append("mirror: none configured (RUNNER_HELM_MIRROR_URL)")
        else:
            try:
                await _download(version, mirror_url, cached, log=log)
            except HelmChecksumMismatch:
                raise
            except (HelmNotFound, httpx.HTTPError, tarfile.TarError) as exc:
                looked.append(f"mirror ({mirror_url}): {exc}")
            else:
                log.info("helm downloaded and verified", version=version, path=str(cached))
                return HelmBinary(cached, version, "mirror")
    raise HelmNotFound(
        f"helm {version} ({request.origin}) not found; looked in " + "; ".join(looked), version=version
    )
