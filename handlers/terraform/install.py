"""Installing what a saved plan needs without ``terraform init``.

Applying a saved plan takes the configuration and the backend settings from the plan file;
``init`` would only install the providers of the plan's dependency lock file and the remote
modules. It costs a terraform start (about 60 ms of Go initialisation before any work), a
backend round trip, and a read of every provider package to check its hashes (seconds for the
big cloud providers).

When every module is local and the runner's shared plugin cache already holds every locked
provider for this platform (the plan job's ``init`` put them there), the runner does what
``init`` would: it writes the plan's lock file and links each provider package from the cache
into ``.terraform/providers``, the layout ``init`` creates with a plugin cache. Terraform still
checks each package against the lock file's hashes when it starts the provider, so a wrong link
fails before the state is touched; the apply job then runs ``init`` and applies again
(``operations``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from handlers.terraform.planfile import LOCK_FILE, PlanNeeds

_ADDRESS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*/[A-Za-z0-9_\-]+/[A-Za-z0-9_\-]+$")
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.\-+]*$")


def install_without_init(module_dir: Path, needs: PlanNeeds, plugin_cache: Path, platform: str) -> str:
    """Install what ``needs`` lists from the plugin cache. Returns "" when done; otherwise why
    ``init`` must run, and nothing has been changed."""
    if needs.unknown:
        return needs.unknown
    if needs.remote_modules:
        return "remote modules to install: " + ", ".join(needs.remote_modules)
    lock_path = module_dir / LOCK_FILE
    if lock_path.exists() and lock_path.read_bytes() != needs.lock_file:
        return "the module's dependency lock file differs from the plan's"
    links: list[tuple[Path, Path]] = []
    for address, version in sorted(needs.providers.items()):
        if not _ADDRESS_RE.match(address) or not _VERSION_RE.match(version) or ".." in address + version:
            return f"provider {address} {version!r} is not an address the runner links"
        package = plugin_cache / address / version / platform
        if not package.is_dir() or not any(package.iterdir()):
            return f"provider {address} {version} is not in the plugin cache"
        links.append((module_dir / ".terraform" / "providers" / address / version / platform, package))
    for link, package in links:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(package, target_is_directory=True)
    if not lock_path.exists():
        lock_path.write_bytes(needs.lock_file)
    return ""


def refused_linked_providers(
    *, init_skipped: bool, state_stored: bool, error_summaries: Sequence[str]
) -> bool:
    """Whether a failed apply is terraform refusing the provider packages linked without init,
    before it stored any state: then running init and applying again is safe."""
    if not init_skipped or state_stored:
        return False
    return any(".terraform/providers" in text or "dependency lock file" in text for text in error_summaries)
