"""Identity and runners: the bootstrap org/runner/tokens, token lookup, settings, heartbeats
(with restart detection) and health checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from controlplane.auth import ADMIN, RUNNER, Principal
from controlplane.errors import NotFound
from controlplane.ids import new_id
from controlplane.options import Credentials
from controlplane.store_base import (
    _RUNNING_SQL,
    Row,
    StoreBase,
    default_settings,
)
from controlplane.wire import now_ns


class IdentityStore(StoreBase):
    # ================================================================ identity

    async def bootstrap(self, api_url: str, heart_beat_timeout_ns: int) -> tuple[Credentials, bool]:
        """The org, runner and tokens of this control plane; created on first start.

        Returns the credentials and whether they were created now.
        """
        return await self._run(self._bootstrap, api_url, heart_beat_timeout_ns)

    def _bootstrap(self, api_url: str, heart_beat_timeout_ns: int) -> tuple[Credentials, bool]:
        meta = {row["key"]: row["value"] for row in self.conn.execute("SELECT key, value FROM meta")}
        created = False
        with self.db.transaction() as conn:
            if "org_id" not in meta:
                now = now_ns()
                org_id = new_id("org")
                conn.execute(
                    "INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)", (org_id, "local", now)
                )
                runner_id, runner_token = self._create_runner_tx(org_id, "default", heart_beat_timeout_ns)
                admin_token = new_id("tok")
                conn.execute(
                    "INSERT INTO tokens (token, id, kind, org_id, created_at) VALUES (?, ?, ?, ?, ?)",
                    (admin_token, new_id("tok"), ADMIN, org_id, now),
                )
                meta = {
                    "org_id": org_id,
                    "runner_id": runner_id,
                    "admin_token": admin_token,
                    "runner_token": runner_token,
                }
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
                created = True
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('api_url', ?)", (api_url,))
        creds = Credentials(
            api_url=api_url,
            org_id=meta["org_id"],
            runner_id=meta["runner_id"],
            admin_token=meta["admin_token"],
            runner_token=meta["runner_token"],
        )
        return creds, created

    def _create_runner_tx(self, org_id: str, name: str, heart_beat_timeout_ns: int) -> tuple[str, str]:
        conn = self.conn
        now = now_ns()
        group_id, settings_id, runner_id, token = new_id("rgr"), new_id("rgs"), new_id("run"), new_id("tok")
        conn.execute(
            "INSERT INTO runner_groups (id, org_id, type, platform, created_at, updated_at) "
            "VALUES (?, ?, 'org', 'local', ?, ?)",
            (group_id, org_id, now, now),
        )
        settings = default_settings(org_id, group_id, runner_id, heart_beat_timeout_ns)
        conn.execute(
            "INSERT INTO runner_group_settings (id, runner_group_id, org_id, settings, created_at,"
            " updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (settings_id, group_id, org_id, json.dumps(settings), now, now),
        )
        conn.execute(
            "INSERT INTO runners (id, org_id, runner_group_id, name, display_name, status,"
            " status_description,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 'waiting for the first"
            " heartbeat', ?, ?)",
            (runner_id, org_id, group_id, name, f"{name} runner", now, now),
        )
        conn.execute(
            "INSERT INTO tokens (token, id, kind, org_id, runner_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (token, new_id("tok"), RUNNER, org_id, runner_id, now),
        )
        return runner_id, token

    async def create_runner(self, org_id: str, name: str, heart_beat_timeout_ns: int) -> tuple[str, str]:
        """A further runner in the org, with its own group, settings and token."""

        def create() -> tuple[str, str]:
            with self.db.transaction():
                return self._create_runner_tx(org_id, name, heart_beat_timeout_ns)

        return await self._run(create)

    async def principal(self, token: str) -> Principal | None:
        """The principal of a token, or None when unknown or expired. Tokens never change, so
        known ones are cached; only expiry is re-checked."""
        cached = self._tokens.get(token)
        if cached is None:
            row = await self._run(
                lambda: self._one(
                    "SELECT kind, org_id, runner_id, log_stream_id, expires_at FROM tokens WHERE token = ?",
                    (token,),
                )
            )
            if row is None:
                return None
            cached = Principal(
                kind=row["kind"],
                org_id=row["org_id"],
                runner_id=row["runner_id"],
                log_stream_id=row["log_stream_id"],
                expires_at=row["expires_at"],
            )
            self._tokens[token] = cached
        if cached.expires_at is not None and cached.expires_at <= now_ns():
            return None
        return cached

    # ================================================================ runners

    _RUNNER_SQL = (
        "SELECT r.*, g.type AS group_type, g.platform AS group_platform, g.created_at AS group_created_at,"
        " g.updated_at AS group_updated_at, s.id AS settings_id, s.settings AS settings,"
        " s.created_at AS settings_created_at, s.updated_at AS settings_updated_at"
        " FROM runners r JOIN runner_groups g ON g.id = r.runner_group_id"
        " JOIN runner_group_settings s ON s.runner_group_id = g.id WHERE r.id = ?"
    )

    def _runner(self, runner_id: str) -> Row:
        row = self._one(self._RUNNER_SQL, (runner_id,))
        if row is None:
            raise NotFound(f"runner {runner_id} not found")
        row["settings"] = json.loads(row["settings"])
        return row

    async def get_runner(self, runner_id: str) -> Row:
        return await self._run(self._runner, runner_id)

    async def list_runners(self, org_id: str) -> list[Row]:
        def query() -> list[Row]:
            ids = [
                r["id"]
                for r in self.conn.execute(
                    "SELECT id FROM runners WHERE org_id = ? ORDER BY rowid", (org_id,)
                )
            ]
            return [self._runner(i) for i in ids]

        return await self._run(query)

    async def patch_settings(self, runner_id: str, fields: Mapping[str, Any]) -> Row:
        def patch() -> Row:
            with self.db.transaction() as conn:
                runner = self._runner(runner_id)
                settings = dict(runner["settings"])
                settings.update(fields)
                conn.execute(
                    "UPDATE runner_group_settings SET settings = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(settings), now_ns(), runner["settings_id"]),
                )
            return self._runner(runner_id)

        return await self._run(patch)

    async def heartbeat(
        self, runner_id: str, alive_time: int, version: str, process: str, restart_grace_ns: int
    ) -> tuple[Row, list[str]]:
        """Store a heartbeat, mark the runner active, and cancel executions a restart orphaned.

        A heartbeat's ``started_at`` (``created_at - alive_time``) later than an execution's
        ``created_at`` plus the grace means the runner process that ran it is gone
        (runner-api.md §6.3). Returns the heartbeat row and the cancelled execution ids.
        """
        return await self._run(self._heartbeat, runner_id, alive_time, version, process, restart_grace_ns)

    def _heartbeat(
        self, runner_id: str, alive_time: int, version: str, process: str, restart_grace_ns: int
    ) -> tuple[Row, list[str]]:
        now = now_ns()
        started_at = now - alive_time
        cancelled: list[str] = []
        with self.db.transaction() as conn:
            runner = self._one("SELECT status FROM runners WHERE id = ?", (runner_id,))
            if runner is None:
                raise NotFound(f"runner {runner_id} not found")
            hb_id = new_id("hrt")
            conn.execute(
                "INSERT INTO heartbeats (id, runner_id, alive_time, version, process, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (hb_id, runner_id, alive_time, version, process, now),
            )
            if runner["status"] != "active":
                conn.execute(
                    "UPDATE runners SET status = 'active', status_description = ?, last_heartbeat_at = ?,"
                    " updated_at = ? WHERE id = ?",
                    (f"status change {runner['status']} -> active on heartbeat", now, now, runner_id),
                )
            else:
                conn.execute("UPDATE runners SET last_heartbeat_at = ? WHERE id = ?", (now, runner_id))
            orphans = self._all(
                "SELECT id, job_id FROM runner_job_executions"  # noqa: S608 - _RUNNING_SQL is a constant
                f" WHERE runner_id = ? AND status IN {_RUNNING_SQL} AND created_at + ? < ?",
                (runner_id, restart_grace_ns, started_at),
            )
            for orphan in orphans:
                self._end_execution(
                    orphan["id"], orphan["job_id"], "cancelled", "cancelled", "runner restarted", now
                )
                cancelled.append(orphan["id"])
        row = {
            "id": hb_id,
            "runner_id": runner_id,
            "alive_time": alive_time,
            "version": version,
            "process": process,
            "created_at": now,
            "started_at": started_at,
        }
        return row, cancelled

    async def latest_heartbeat(self, runner_id: str) -> Row | None:
        return await self._run(
            lambda: self._one(
                "SELECT * FROM heartbeats WHERE runner_id = ? ORDER BY created_at DESC LIMIT 1", (runner_id,)
            )
        )

    async def health_check(self, runner_id: str, process: str) -> Row:
        def create() -> Row:
            now = now_ns()
            with self.db.transaction() as conn:
                runner = self._one("SELECT status FROM runners WHERE id = ?", (runner_id,))
                if runner is None:
                    raise NotFound(f"runner {runner_id} not found")
                hid = new_id("hlt")
                conn.execute(
                    "INSERT INTO health_checks (id, runner_id, process, status, created_at) VALUES"
                    " (?, ?, ?, ?, ?)",
                    (hid, runner_id, process, runner["status"], now),
                )
            return {
                "id": hid,
                "runner_id": runner_id,
                "process": process,
                "status": runner["status"],
                "created_at": now,
            }

        return await self._run(create)
