"""Which terraform a job runs, and where that binary comes from.

The reference runner downloads terraform from releases.hashicorp.com on every job, which needs
egress and time. Here the version a job asks for is looked up, in order:

1. the per-version cache ``<tools_dir>/terraform/<version>/terraform`` (filled once, never
   downloaded again);
2. a ``terraform`` on PATH whose ``terraform version -json`` reports that version;
3. a download from ``terraform_mirror_url`` laid out like releases.hashicorp.com
   (``<mirror>/<v>/terraform_<v>_<os>_<arch>.zip`` and ``terraform_<v>_SHA256SUMS``), verified
   by SHA256, unpacked next to the cache entry and renamed into place atomically, under a file
   lock so concurrent jobs download it once.

A job that names no version uses the runner's configured default, else whatever ``terraform``
is on PATH. When nothing fits, the error says which version was wanted and every place looked.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from handlers.common.toolcache import download_verified, file_lock, install_executable, machine_arch
from runner.sdk import (
    APIRequestFailed,
    APIUnreachable,
    HandlerError,
    JobContext,
    JobLog,
    ProcessRunner,
    TerraformSettings,
)

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.\-]+)?$")


class BinaryNotFound(HandlerError):
    """The requested terraform version is nowhere to be had."""


class ChecksumMismatch(BinaryNotFound):
    """A downloaded archive does not match the mirror's SHA256SUMS: refused, nothing cached."""


@dataclass(frozen=True)
class VersionRequest:
    """The version a job wants (None: any terraform on PATH) and where that choice came from."""

    version: str | None
    origin: str


@dataclass(frozen=True)
class TerraformBinary:
    path: Path
    version: str | None
    #: "cache", "path" or "mirror".
    source: str


def normalize_version(raw: str | None) -> str | None:
    """``v1.7.5`` -> ``1.7.5``; empty -> None; anything not an exact version -> HandlerError."""
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        return None
    if text[0] in "vV":
        text = text[1:]
    if not _VERSION_RE.match(text):
        raise BinaryNotFound(f"terraform version {raw!r} is not an exact version like 1.11.4", version=raw)
    return text


def platform_suffix() -> str:
    """``linux_amd64`` style, as the release archives are named."""
    return f"{platform.system().lower()}_{machine_arch()}"


# --------------------------------------------------------------------------- which version


def _version_from_app_config(config: dict[str, Any], *, sandbox: bool, component_id: str) -> str:
    if sandbox:
        section = config.get("sandbox")
        return str(section.get("terraform_version") or "") if isinstance(section, dict) else ""
    connections = config.get("component_config_connections")
    if not isinstance(connections, list):
        return ""
    for item in connections:
        if not isinstance(item, dict):
            continue
        if component_id and item.get("component_id") not in (component_id, None):
            continue
        module = item.get("terraform_module")
        if isinstance(module, dict) and module.get("version"):
            return str(module["version"])
    return ""


async def requested_version(
    ctx: JobContext,
    *,
    app_id: str,
    app_config_id: str,
    plan_version: str,
    sandbox: bool,
    component_id: str = "",
) -> VersionRequest:
    """The job's terraform version: app config, else the plan's field, else config, else PATH."""
    if app_id and app_config_id:
        try:
            app_config = await ctx.api.app_config(app_id, app_config_id)
        except (APIRequestFailed, APIUnreachable) as exc:
            ctx.log.warning("app config not readable; falling back to the default terraform", error=str(exc))
        else:
            found = _version_from_app_config(app_config, sandbox=sandbox, component_id=component_id)
            if found:
                key = "sandbox.terraform_version" if sandbox else "terraform_module.version"
                return VersionRequest(normalize_version(found), f"app config {key}")
    if plan_version.strip():
        return VersionRequest(normalize_version(plan_version), "plan terraform_version")
    configured = ctx.handler_settings(TerraformSettings).version
    if configured:
        return VersionRequest(normalize_version(configured), "runner config terraform_version")
    return VersionRequest(None, "terraform on PATH (no version requested)")


# --------------------------------------------------------------------------- where from


async def _path_version(path: str, processes: ProcessRunner) -> str | None:
    result = await processes.run([path, "version", "-json"], capture_stdout=True, check=False)
    if result.returncode != 0 or not result.stdout:
        return None
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        return None
    value = data.get("terraform_version") if isinstance(data, dict) else None
    return str(value) if value else None


def _parse_sums(text: str, filename: str) -> str | None:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == filename:
            return parts[0].lower()
    return None


def _install_from_zip(archive: Path, target: Path) -> None:
    """Unpack the ``terraform`` member next to ``target`` and rename it into place."""
    with zipfile.ZipFile(archive) as zf:
        try:
            info = zf.getinfo("terraform")
        except KeyError:
            raise BinaryNotFound(f"{archive.name} holds no 'terraform' executable") from None
        with zf.open(info) as member:
            install_executable(member, target, prefix=".terraform-")


async def _download(
    version: str, mirror_url: str, target: Path, *, log: JobLog, timeout: float = 120.0
) -> None:
    base = mirror_url.rstrip("/")
    filename = f"terraform_{version}_{platform_suffix()}.zip"
    sums_url = f"{base}/{version}/terraform_{version}_SHA256SUMS"
    zip_url = f"{base}/{version}/{filename}"
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=True) as http:
        sums = await http.get(sums_url)
        if sums.status_code != 200:
            raise BinaryNotFound(f"{sums_url} answered HTTP {sums.status_code}")
        expected = _parse_sums(sums.text, filename)
        if not expected:
            raise BinaryNotFound(f"{sums_url} lists no checksum for {filename}")
        log.info("downloading terraform", version=version, url=zip_url)

        def mismatch(actual: str) -> ChecksumMismatch:
            return ChecksumMismatch(
                f"terraform {version} from {zip_url} has SHA256 {actual}, but the mirror's "
                f"SHA256SUMS says {expected}: refused",
                version=version,
                url=zip_url,
            )

        await download_verified(
            http,
            zip_url,
            expected,
            target,
            suffix=".zip",
            install=_install_from_zip,
            unavailable=BinaryNotFound,
            mismatch=mismatch,
        )


async def resolve_binary(
    request: VersionRequest,
    *,
    tools_dir: Path,
    mirror_url: str | None,
    processes: ProcessRunner,
    log: JobLog,
) -> TerraformBinary:
    """Find (or fetch) the terraform binary for ``request``; see the module docstring."""
    on_path = shutil.which("terraform")
    version = request.version
    if version is None:
        if on_path:
            log.info("using the terraform on PATH", path=on_path, reason=request.origin)
            return TerraformBinary(Path(on_path), None, "path")
        raise BinaryNotFound(
            "no terraform version was requested (app config, plan, RUNNER_TERRAFORM_VERSION) "
            "and there is no terraform on PATH"
        )

    cache_dir = tools_dir / "terraform" / version
    cached = cache_dir / "terraform"
    if cached.is_file() and os.access(cached, os.X_OK):
        log.info("terraform from the cache", version=version, path=str(cached), reason=request.origin)
        return TerraformBinary(cached, version, "cache")

    looked = [f"the cache ({cached}): absent"]
    if on_path:
        found = await _path_version(on_path, processes)
        if found == version:
            log.info("terraform from PATH", version=version, path=on_path, reason=request.origin)
            return TerraformBinary(Path(on_path), version, "path")
        looked.append(f"PATH ({on_path}): version {found or 'unknown'}")
    else:
        looked.append("PATH: no terraform")

    if not mirror_url:
        looked.append("mirror: none configured (RUNNER_TERRAFORM_MIRROR_URL)")
        raise BinaryNotFound(
            f"terraform {version} ({request.origin}) not found; looked in " + "; ".join(looked),
            version=version,
        )

    cache_dir.mkdir(parents=True, exist_ok=True)
    async with file_lock(tools_dir / "terraform" / f"{version}.lock"):
        if cached.is_file():  # another job fetched it while we waited
            return TerraformBinary(cached, version, "cache")
        try:
            await _download(version, mirror_url, cached, log=log)
        except ChecksumMismatch:
            raise
        except (BinaryNotFound, httpx.HTTPError, zipfile.BadZipFile) as exc:
            looked.append(f"mirror ({mirror_url}): {exc}")
            raise BinaryNotFound(
                f"terraform {version} ({request.origin}) not found; looked in " + "; ".join(looked),
                version=version,
            ) from exc
    log.info("terraform downloaded and verified", version=version, path=str(cached))
    return TerraformBinary(cached, version, "mirror")
