"""The control plane's state: identity, jobs, executions, logs and terraform, over SQLite.

Every public method is a coroutine that runs one short blocking function in the database's
worker (``Database.run``), so each call is one serialised unit: a multi-statement write is one
``BEGIN IMMEDIATE`` transaction and nothing can interleave with it. The state machines live in
the parts this class combines: the atomic claim, the execution transition check, "job status
follows the execution", retries (``store_jobs``), restart detection (``store_identity``) and the
monitor's timeouts (``store_monitor``). Jobs made available are announced to held polls through
``JobNotifier`` after their transaction commits.

Rows come back as plain dicts with the column names; ``controlplane.render`` shapes them for
the wire.
"""

from __future__ import annotations

from pathlib import Path

from controlplane.db import Database
from controlplane.store_actions import ActionWorkflowStore
from controlplane.store_apps import AppConfigStore
from controlplane.store_base import JobSpec, LogRecord, MonitorReport, Row
from controlplane.store_helm import HelmReleaseStore
from controlplane.store_identity import IdentityStore
from controlplane.store_jobs import JobStore
from controlplane.store_logs import LogStore
from controlplane.store_monitor import MonitorStore
from controlplane.store_terraform import TerraformStore


class Store(
    IdentityStore,
    JobStore,
    LogStore,
    TerraformStore,
    MonitorStore,
    AppConfigStore,
    HelmReleaseStore,
    ActionWorkflowStore,
):
    @classmethod
    def open(cls, path: Path | None) -> Store:
        """Open (and migrate) the database at ``path``; None means in memory."""
        return cls(Database(path))

    def close(self) -> None:
        self.notifier.close()
        self.db.close()


__all__ = ["JobSpec", "LogRecord", "MonitorReport", "Row", "Store"]
