"""Versioned virtualenvs for process mode, and the atomic switch between them.

Layout under the venvs root::

    versions/<version>/     one virtualenv per installed version (bin/runner)
    current -> versions/<v> the version ``runner run`` starts from

A version counts as installed only once pip succeeded and the ``.installed`` marker is written
(a virtualenv cannot be moved: its scripts name its interpreter by absolute path), so a
half-installed version is never started, and is made again from scratch. ``switch`` replaces the ``current``
symlink with ``rename(2)`` over it: a start reads the old or the new target, never neither.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from runner.mng.policy import check_version

MARKER = ".installed"


class InstallError(Exception):
    """pip could not install a version; the message carries the tail of its output."""


@dataclass(frozen=True)
class VenvStore:
    root: Path
    #: The distribution to install (``<package>==<version>``).
    package: str = "byoc-runner"
    #: Extra pip arguments: an index (``--index-url``), or ``--no-index --find-links DIR``.
    pip_args: Sequence[str] = ()
    #: Make virtualenvs that see the interpreter's packages (an offline host with the
    #: dependencies installed system-wide; also what the tests use).
    system_site_packages: bool = False
    python: str = field(default_factory=lambda: sys.executable)
    install_timeout: float = 600.0

    @property
    def current_link(self) -> Path:
        return self.root / "current"

    def path(self, version: str) -> Path:
        return self.root / "versions" / check_version(version)

    def runner_bin(self) -> Path:
        """The ``runner`` of the current version, through the symlink (read at each start)."""
        return self.current_link / "bin" / "runner"

    def installed(self, version: str) -> bool:
        path = self.path(version)
        return (path / MARKER).exists() and (path / "bin" / "runner").exists()

    def current(self) -> str | None:
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        return Path(target).name

    def switch(self, version: str) -> None:
        """Point ``current`` at ``version`` atomically."""
        target = Path("versions") / check_version(version)
        tmp = self.root / f".current.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, self.current_link)

    async def install(self, version: str) -> Path:
        """Install ``version`` into its own virtualenv (no-op when it is there already)."""
        path = self.path(version)
        if self.installed(version):
            return path
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        venv = [self.python, "-m", "venv"]
        if self.system_site_packages:
            # The interpreter's own pip is visible from such a venv and installs into it.
            venv += ["--system-site-packages", "--without-pip"]
        await self._run([*venv, str(path)], "creating the virtualenv")
        pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        pip += ["--no-input", *self.pip_args, f"{self.package}=={version}"]
        await self._run(pip, f"installing {self.package}=={version}")
        if not (path / "bin" / "runner").exists():
            raise InstallError(f"{self.package}=={version} installed no 'runner' command")
        (path / MARKER).write_text(version + "\n")
        return path

    async def _run(self, argv: list[str], what: str) -> None:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
        with anyio.move_on_after(self.install_timeout) as scope:
            result = await anyio.run_process(argv, check=False, env=env, stderr=subprocess.STDOUT)
        if scope.cancelled_caught:
            raise InstallError(f"{what}: timed out after {self.install_timeout:g}s")
        if result.returncode != 0:
            tail = "\n".join(result.stdout.decode(errors="replace").strip().splitlines()[-15:])
            raise InstallError(f"{what} failed (exit {result.returncode}): {tail}")

    def describe(self) -> str:
        return f"{self.root} ({self.package}, pip {shlex.join(self.pip_args) or 'defaults'})"
