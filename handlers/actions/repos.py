"""Each step's git source, cloned once per job.

Steps of one workflow usually share a repository; the reference clones it again for every step
(deleting the previous checkout). Here a repository (url, ref, submodules) is cloned on first use
through ``handlers.sources`` (credentials out of argv and ``.git/config``, submodules, shallow
where possible) into ``<root>/<repository name>``, and later steps reuse the checkout; each step
still gets its own ``path`` inside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from handlers.sources import FetchedSource, clone_git, resolve_subpath
from runner.sdk import JobLog, ProcessRunner, SecretRegistry
from runner.sdk.plans import GitSource

#: Names in the root the runner itself uses.
_RESERVED = frozenset({"tmp", ".home", "kubeconfig"})


def repo_dir_name(url: str) -> str:
    """``https://host/org/app.git`` -> ``app`` (the reference's directory name), made safe."""
    path = urlsplit(url).path if "://" in url else url
    name = PurePosixPath(path.rstrip("/")).name
    name = name.removesuffix(".git")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "repo"


@dataclass
class RepoCache:
    root: Path
    _clones: dict[tuple[str, str, bool], FetchedSource] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set)

    def _directory(self, url: str) -> Path:
        base = repo_dir_name(url)
        name, n = base, 1
        while name in self._names or name in _RESERVED or name.endswith(".nuon-outputs.json"):
            n += 1
            name = f"{base}-{n}"
        self._names.add(name)
        return self.root / name

    async def checkout(
        self, source: GitSource, *, processes: ProcessRunner, secrets: SecretRegistry, log: JobLog
    ) -> tuple[Path, Path]:
        """The checkout's root and the step's ``path`` in it, cloning on first use."""
        key = (source.url.strip(), source.ref.strip(), source.recurse_submodules)
        fetched = self._clones.get(key)
        if fetched is None:
            dest = self._directory(key[0])
            fetched = await clone_git(source, dest, processes=processes, secrets=secrets, log=log)
            self._clones[key] = fetched
        else:
            log.info("reusing the checkout of an earlier step", commit=fetched.commit)
        return fetched.root, resolve_subpath(fetched.root, source.path, what="git_source.path")
