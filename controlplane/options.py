"""Tunables of the control plane and the identity it hands out.

The defaults are the contract's (docs/runner-api.md §14.2, §14.3: 15 s offline, 1 minute restart grace);
tests shrink them through ``ControlPlaneOptions`` or the matching CLI flags.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True)
class ControlPlaneOptions:
    #: How often the monitor enforces timeouts and runner liveness, seconds.
    monitor_interval: float = 0.5
    #: A runner whose newest heartbeat is older than this is ``offline``, seconds.
    heartbeat_offline_after: float = 15.0
    #: Restart detection slack: a heartbeat whose ``started_at`` is later than an execution's
    #: ``created_at`` plus this cancels the execution (the contract's "+1m"), seconds.
    restart_grace: float = 60.0
    #: Largest request body accepted; bigger bodies answer 413.
    max_body_bytes: int = 10 * MIB
    #: Largest request line plus headers; a bigger head answers 431 (``controlplane.http_limits``).
    max_header_bytes: int = 64 * 1024
    #: Longest a jobs poll may be held (``wait``), seconds.
    long_poll_max: float = 60.0
    #: ``heart_beat_timeout`` of newly created runner settings, seconds.
    heart_beat_timeout: float = 5.0
    #: Create a terraform workspace named by a submitted plan when it does not exist.
    auto_create_workspaces: bool = True
    log_level: str = "warning"
    #: uvicorn HTTP implementation ("auto", "h11" or "httptools").
    http: str = "auto"


@dataclass(frozen=True)
class Credentials:
    api_url: str
    org_id: str
    runner_id: str
    admin_token: str
    runner_token: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Credentials:
        data = json.loads(text)
        return cls(
            **{k: str(data[k]) for k in ("api_url", "org_id", "runner_id", "admin_token", "runner_token")}
        )

    @classmethod
    def load(cls, path: Path) -> Credentials:
        return cls.from_json(path.read_text())

    def write(self, path: Path) -> None:
        """Write with mode 0600 from the start: the file holds bearer tokens."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.to_json())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)


CREDENTIALS_FILE = "credentials.json"
DATABASE_FILE = "controlplane.db"
