"""The push credentials: one private registry auth file, read by docker and podman alike.

Both read the ``{"auths": {"host": {"auth": base64(user:password)}}}`` format: docker as
``<--config dir>/config.json``, podman as ``--authfile``. Writing it directly instead of running
``docker login`` keeps the password out of argv and off the network until the push, and the file
lives in a 0700 directory of the job's workspace, removed with it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from handlers.oci.auth import Credentials


def write_auth_file(directory: Path, registry: str, credentials: Credentials | None) -> Path:
    """``directory/config.json`` with the credentials of ``registry`` (empty ``auths`` without)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    auths = {}
    if credentials is not None:
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        auths[registry] = {"auth": token}
    path = directory / "config.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps({"auths": auths}))
    return path
