"""The ``helm`` binary for one job: its private homes, its environment, and the calls we make.

Every job gets its own ``HELM_CACHE_HOME``, ``HELM_CONFIG_HOME`` and ``HELM_DATA_HOME`` under the
workspace (no state shared between jobs or with a user's ``~/.config/helm``), a registry config and
a repository config there (mode 0600: the only place credentials go; never argv), and only the
environment helm needs (the process runner adds PATH, HOME, LANG, TMPDIR): the kubeconfig, the
homes, and the storage driver.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runner.sdk import HandlerError, JobLog, ProcessResult, ProcessRunner

#: The plan's ``storage_driver`` -> ``HELM_DRIVER``. ``nuon`` is not here: its records are staged
#: through helm's secret driver (handlers/helm/nuon.py).
DRIVERS = {
    "": "secret",
    "secret": "secret",
    "secrets": "secret",
    "configmap": "configmap",
    "configmaps": "configmap",
}


class HelmFailed(HandlerError):
    """helm exited non-zero; the message is helm's own error line."""


def write_private(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` with mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(data)
    return path


def registry_config(auths: Mapping[str, tuple[str, str]]) -> bytes:
    """A docker-style ``config.json`` (``HELM_REGISTRY_CONFIG``) for ``{host: (user, password)}``."""
    entries = {
        host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        for host, (user, password) in auths.items()
    }
    return json.dumps({"auths": entries}).encode()


def helm_env(
    home: Path, *, kubeconfig: Path | None, driver: str, kube_cache: Path | None = None
) -> dict[str, str]:
    """Create the job's helm homes under ``home`` and return the child environment.

    ``kube_cache`` (``KUBECACHEDIR``): client-go's discovery cache, shared by the runner's jobs in
    the tools dir. It holds each API server's list of resources (no credentials, nothing of a
    release), and without it every helm run starts with a full discovery, which was most of the
    difference to a bare ``helm`` that keeps ``~/.kube/cache``.
    """
    for sub in ("cache", "config", "data"):
        (home / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    registry = home / "config" / "registry" / "config.json"
    if not registry.exists():
        write_private(registry, registry_config({}))
    repositories = home / "config" / "repositories.yaml"
    if not repositories.exists():
        write_private(repositories, b"apiVersion: v1\nrepositories: []\n")
    env = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "HELM_REGISTRY_CONFIG": str(registry),
        "HELM_REPOSITORY_CONFIG": str(repositories),
        "HELM_REPOSITORY_CACHE": str(home / "cache" / "repository"),
        "HELM_DRIVER": driver,
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    if kube_cache is not None:
        kube_cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        env["KUBECACHEDIR"] = str(kube_cache)
    return env


def error_line(result: ProcessResult) -> str:
    """helm's ``Error: ...`` line from the stderr tail, else the tail's last line."""
    for line in reversed(result.stderr_tail):
        if line.startswith("Error:"):
            return line.removeprefix("Error:").strip()
    return result.stderr_tail[-1].strip() if result.stderr_tail else f"exit code {result.returncode}"


def not_found(result: ProcessResult) -> bool:
    return result.returncode != 0 and "release: not found" in " ".join(result.stderr_tail)


class Helm:
    """One job's helm: the binary, its environment, its process runner."""

    def __init__(self, binary: Path, env: Mapping[str, str], processes: ProcessRunner, log: JobLog) -> None:
        self.binary = binary
        self.env = dict(env)
        self._processes = processes
        self._log = log

    async def run(
        self,
        args: Sequence[str],
        *,
        capture: bool = False,
        check: bool = True,
        grace_period: float | None = None,
    ) -> ProcessResult:
        result = await self._processes.run(
            [str(self.binary), *args],
            env=self.env,
            capture_stdout=capture,
            check=False,
            grace_period=grace_period,
        )
        if check and result.returncode != 0:
            raise HelmFailed(
                f"helm {args[0]}: {error_line(result)}",
                exit_code=result.returncode,
                command=f"helm {args[0]}",
            )
        return result

    async def json(self, args: Sequence[str]) -> Any:
        result = await self.run([*args, "-o", "json"], capture=True)
        try:
            return json.loads(result.stdout or b"null")
        except ValueError:
            raise HelmFailed(f"helm {args[0]}: its JSON output did not parse") from None

    async def history(self, name: str, namespace: str) -> list[dict[str, Any]]:
        """The release's revisions, oldest first; [] when there is no release."""
        result = await self.run(
            ["history", name, "--namespace", namespace, "--max", "256", "-o", "json"],
            capture=True,
            check=False,
        )
        if not_found(result):
            return []
        if result.returncode != 0:
            raise HelmFailed(f"helm history: {error_line(result)}")
        data = json.loads(result.stdout or b"[]")
        return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []

    async def status(self, name: str, namespace: str) -> dict[str, Any] | None:
        result = await self.run(
            ["status", name, "--namespace", namespace, "-o", "json"], capture=True, check=False
        )
        if not_found(result):
            return None
        if result.returncode != 0:
            raise HelmFailed(f"helm status: {error_line(result)}")
        data = json.loads(result.stdout or b"null")
        return data if isinstance(data, dict) else None
