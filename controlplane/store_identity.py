"""Identity and runners: the bootstrap org/runner/tokens, token lookup, settings, heartbeats
(with restart detection) and health checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from controlplane.auth import ADMIN, HASH_PREFIX, RUNNER, Principal, token_hash
from controlplane.errors import Conflict, NotFound
from controlplane.ids import new_id
from controlplane.logs import logger
from controlplane.options import Credentials
from controlplane.store_base import (
    _RUNNING_SQL,
    Row,
    StoreBase,
    default_settings,
)
from controlplane.wire import NS, now_ns


def duplicate_window(heartbeat_period_ns: int, offline_after_ns: int) -> int:
    """How recently the current runner process must have heartbeated for a heartbeat from
    another process to be refused: two heartbeat periods and a second (it is demonstrably alive
    on its own cadence), never longer than the offline limit. A runner killed with -9 and
    started again is therefore accepted within about two periods."""
    period = heartbeat_period_ns if heartbeat_period_ns > 0 else 5 * NS
    return min(2 * period + NS, offline_after_ns)


class IdentityStore(StoreBase):
    # ================================================================ identity

    async def bootstrap(
        self, api_url: str, heart_beat_timeout_ns: int, known: Credentials | None = None
    ) -> tuple[Credentials, bool]:
        """The org, runner and tokens of this control plane; created on first start.

        The database keeps only hashes of the tokens, so on a later start the tokens come from
        ``known`` (the ``credentials.json`` written at the first start). When that is missing or
        does not match, new admin and runner tokens are issued and the old ones stop working.
        Returns the credentials and whether tokens were issued now.
        """
        return await self._run(self._bootstrap, api_url, heart_beat_timeout_ns, known)

    def _bootstrap(
        self, api_url: str, heart_beat_timeout_ns: int, known: Credentials | None
    ) -> tuple[Credentials, bool]:
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
                admin_token = self._issue_admin_token(org_id)
                meta = {"org_id": org_id, "runner_id": runner_id}
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
                known = Credentials(api_url, org_id, runner_id, admin_token, runner_token)
                created = True
            else:
                known = self._upgrade_plain_tokens(meta, known)
                if not self._tokens_match(meta, known):
                    known = self._reissue_tokens(meta["org_id"], meta["runner_id"])
                    created = True
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('api_url', ?)", (api_url,))
        assert known is not None
        creds = Credentials(
            api_url=api_url,
            org_id=meta["org_id"],
            runner_id=meta["runner_id"],
            admin_token=known.admin_token,
            runner_token=known.runner_token,
        )
        return creds, created

    def _issue_admin_token(self, org_id: str) -> str:
        token = new_id("tok")
        self.conn.execute(
            "INSERT INTO tokens (token, id, kind, org_id, created_at) VALUES (?, ?, ?, ?, ?)",
            (token_hash(token), new_id("tok"), ADMIN, org_id, now_ns()),
        )
        return token

    def _upgrade_plain_tokens(self, meta: dict[str, str], known: Credentials | None) -> Credentials | None:
        """A database from before hashing: hash every stored token, drop the copies in ``meta``."""
        plain = self._all(
            "SELECT rowid AS rid, token FROM tokens WHERE token NOT LIKE ?", (HASH_PREFIX + "%",)
        )
        if plain or "admin_token" in meta:
            self.conn.execute("PRAGMA secure_delete = ON")  # no plain copy left in a free page
        for row in plain:
            self.conn.execute(
                "UPDATE tokens SET token = ? WHERE rowid = ?", (token_hash(row["token"]), row["rid"])
            )
        if "admin_token" in meta and "runner_token" in meta:
            if known is None:
                known = Credentials(
                    "", meta["org_id"], meta["runner_id"], meta["admin_token"], meta["runner_token"]
                )
            self.conn.execute("DELETE FROM meta WHERE key IN ('admin_token', 'runner_token')")
        return known

    def _tokens_match(self, meta: dict[str, str], known: Credentials | None) -> bool:
        if known is None or known.org_id != meta["org_id"] or known.runner_id != meta["runner_id"]:
            return False
        admin = self._one(
            "SELECT kind FROM tokens WHERE token = ? AND kind = ? AND org_id = ?",
            (token_hash(known.admin_token), ADMIN, meta["org_id"]),
        )
        runner = self._one(
            "SELECT kind FROM tokens WHERE token = ? AND kind = ? AND runner_id = ?",
            (token_hash(known.runner_token), RUNNER, meta["runner_id"]),
        )
        return admin is not None and runner is not None

    def _reissue_tokens(self, org_id: str, runner_id: str) -> Credentials:
        """New admin and default-runner tokens; the old ones (unknown to us now) stop working."""
        logger("controlplane").warning(
            "credentials.json is missing or does not match the database: issuing new admin and"
            " runner tokens (the old ones no longer work)",
            runner_id=runner_id,
        )
        self.conn.execute("DELETE FROM tokens WHERE kind = ? AND org_id = ?", (ADMIN, org_id))
        self.conn.execute("DELETE FROM tokens WHERE kind = ? AND runner_id = ?", (RUNNER, runner_id))
        self._tokens.clear()
        runner_token = new_id("tok")
        self.conn.execute(
            "INSERT INTO tokens (token, id, kind, org_id, runner_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (token_hash(runner_token), new_id("tok"), RUNNER, org_id, runner_id, now_ns()),
        )
        return Credentials("", org_id, runner_id, self._issue_admin_token(org_id), runner_token)

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
            (token_hash(token), new_id("tok"), RUNNER, org_id, runner_id, now),
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
                    (token_hash(token),),
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
        self,
        runner_id: str,
        alive_time: int,
        version: str,
        process: str,
        restart_grace_ns: int,
        *,
        instance_id: str = "",
        offline_after_ns: int = 15 * NS,
    ) -> tuple[Row, list[str]]:
        """Store a heartbeat, mark the runner active, and cancel executions a restart orphaned.

        A heartbeat's ``started_at`` (``created_at - alive_time``) later than an execution's
        ``created_at`` plus the grace means the runner process that ran it is gone
        (docs/runner-api.md §14.3). Returns the heartbeat row and the cancelled execution ids.

        ``instance_id`` (ours) names the runner process. A heartbeat from another instance
        while the current one is alive (it heartbeated within ``duplicate_window``) is a second
        process started with the same runner id: it answers 409 and changes nothing, so the
        first process keeps its running jobs (issue 11: it used to cancel them as "restarted").
        """
        return await self._run(
            self._heartbeat,
            runner_id,
            alive_time,
            version,
            process,
            restart_grace_ns,
            instance_id,
            offline_after_ns,
        )

    def _heartbeat(
        self,
        runner_id: str,
        alive_time: int,
        version: str,
        process: str,
        restart_grace_ns: int,
        instance_id: str = "",
        offline_after_ns: int = 15 * NS,
    ) -> tuple[Row, list[str]]:
        now = now_ns()
        started_at = now - alive_time
        cancelled: list[str] = []
        with self.db.transaction() as conn:
            runner = self._one(
                "SELECT status, last_heartbeat_at, instance_id FROM runners WHERE id = ?", (runner_id,)
            )
            if runner is None:
                raise NotFound(f"runner {runner_id} not found")
            current = runner["instance_id"]
            if instance_id and current and instance_id != current and runner["status"] == "active":
                silent = now - int(runner["last_heartbeat_at"] or 0)
                window = duplicate_window(self._heartbeat_period_ns(runner_id), offline_after_ns)
                if silent < window:
                    raise Conflict(
                        f"runner {runner_id} is already running in another process (instance"
                        f" {current}, last heartbeat {silent / NS:.1f}s ago); stop it before starting"
                        " another, or wait until it has been silent for"
                        f" {window / NS:.0f}s",
                        error="runner already running",
                    )
            if instance_id and instance_id != current:
                conn.execute("UPDATE runners SET instance_id = ? WHERE id = ?", (instance_id, runner_id))
            hb_id = new_id("hrt")
            conn.execute(
                "INSERT INTO heartbeats (id, runner_id, alive_time, version, process, instance_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (hb_id, runner_id, alive_time, version, process, instance_id, now),
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

    def _heartbeat_period_ns(self, runner_id: str) -> int:
        row = self._one(
            "SELECT s.settings FROM runners r JOIN runner_group_settings s"
            " ON s.runner_group_id = r.runner_group_id WHERE r.id = ?",
            (runner_id,),
        )
        try:
            return int(json.loads(row["settings"]).get("heart_beat_timeout") or 0) if row else 0
        except (ValueError, TypeError):
            return 0

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
