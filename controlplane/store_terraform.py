"""Terraform workspaces, state history, locks (423/409 with the holder) and state JSON."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from controlplane.errors import Conflict, Locked, NotFound
from controlplane.ids import new_id
from controlplane.store_base import (
    STATE_HISTORY,
    Row,
    StoreBase,
)
from controlplane.wire import now_ns


class TerraformStore(StoreBase):
    # ================================================================ terraform

    def _workspace(self, workspace_id: str, org_id: str) -> Row:
        row = self._one(
            "SELECT * FROM terraform_workspaces WHERE id = ? AND org_id = ?", (workspace_id, org_id)
        )
        if row is None:
            raise NotFound(f"terraform workspace {workspace_id} not found")
        return row

    def _workspace_detail(self, workspace_id: str, org_id: str) -> Row:
        row = self._workspace(workspace_id, org_id)
        row["lock_history"] = self._all(
            "SELECT * FROM terraform_locks WHERE workspace_id = ? ORDER BY created_at DESC, rowid"
            " DESC LIMIT 20",
            (workspace_id,),
        )
        return row

    async def create_workspace(
        self, org_id: str, workspace_id: str | None, owner_id: str, owner_type: str
    ) -> Row:
        def create() -> Row:
            now = now_ns()
            wid = workspace_id or new_id("tfw")
            with self.db.transaction() as conn:
                try:
                    conn.execute(
                        "INSERT INTO terraform_workspaces (id, org_id, owner_id, owner_type,"
                        " created_at, updated_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (wid, org_id, owner_id, owner_type, now, now),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"terraform workspace {wid} already exists") from None
            return self._workspace_detail(wid, org_id)

        return await self._run(create)

    async def get_workspace(self, workspace_id: str, org_id: str) -> Row:
        return await self._run(self._workspace_detail, workspace_id, org_id)

    async def list_workspaces(self, org_id: str, limit: int, offset: int) -> list[Row]:
        def query() -> list[Row]:
            ids = [
                r["id"]
                for r in self.conn.execute(
                    "SELECT id FROM terraform_workspaces WHERE org_id = ? ORDER BY created_at, rowid"
                    " LIMIT ? OFFSET ?",
                    (org_id, limit, offset),
                )
            ]
            return [self._workspace_detail(i, org_id) for i in ids]

        return await self._run(query)

    async def delete_workspace(self, workspace_id: str, org_id: str) -> Row:
        def delete() -> Row:
            with self.db.transaction() as conn:
                row = self._workspace_detail(workspace_id, org_id)
                for table, col in (
                    ("terraform_states", "workspace_id"),
                    ("terraform_state_json", "workspace_id"),
                    ("terraform_locks", "workspace_id"),
                    ("terraform_workspaces", "id"),
                ):
                    conn.execute(f"DELETE FROM {table} WHERE {col} = ?", (workspace_id,))  # noqa: S608
            return row

        return await self._run(delete)

    def _held_lock(self, workspace_id: str) -> Row | None:
        return self._one(
            "SELECT * FROM terraform_locks WHERE workspace_id = ? AND released_at IS NULL", (workspace_id,)
        )

    async def get_state(self, workspace_id: str, org_id: str) -> bytes | None:
        def query() -> bytes | None:
            self._workspace(workspace_id, org_id)
            row = self._one(
                "SELECT contents FROM terraform_states WHERE workspace_id = ? ORDER BY revision DESC LIMIT 1",
                (workspace_id,),
            )
            return None if row is None else bytes(row["contents"])

        return await self._run(query)

    async def list_states(self, workspace_id: str, org_id: str) -> list[Row]:
        def query() -> list[Row]:
            self._workspace(workspace_id, org_id)
            return self._all(
                "SELECT id, workspace_id, org_id, revision, runner_job_id, lock_id, created_at,"
                " length(contents) AS size"
                " FROM terraform_states WHERE workspace_id = ? ORDER BY revision DESC",
                (workspace_id,),
            )

        return await self._run(query)

    async def put_state(
        self, workspace_id: str, org_id: str, contents: bytes, *, job_id: str | None, lock_id: str | None
    ) -> int:
        """Append a state revision; refused (409) when the workspace is locked by someone else."""

        def put() -> int:
            now = now_ns()
            with self.db.transaction() as conn:
                self._workspace(workspace_id, org_id)
                held = self._held_lock(workspace_id)
                if held is not None and held["lock_id"] != (lock_id or ""):
                    raise Conflict(
                        "the workspace is locked by another holder", body=json.loads(held["lock_info"])
                    )
                latest = self._all(
                    "SELECT COALESCE(MAX(revision), 0) AS r FROM terraform_states WHERE workspace_id = ?",
                    (workspace_id,),
                )
                revision = int(latest[0]["r"]) + 1
                conn.execute(
                    "INSERT INTO terraform_states (id, workspace_id, org_id, revision, contents,"
                    " runner_job_id,"
                    " lock_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (new_id("tfs"), workspace_id, org_id, revision, contents, job_id, lock_id, now),
                )
                conn.execute(
                    "DELETE FROM terraform_states WHERE workspace_id = ? AND revision <= ?",
                    (workspace_id, revision - STATE_HISTORY),
                )
            return revision

        return await self._run(put)

    async def lock(self, workspace_id: str, org_id: str, info: dict[str, Any], *, job_id: str | None) -> None:
        """Take the workspace lock; 423 with the holder's lock info when someone else holds it."""

        def lock() -> None:
            now = now_ns()
            with self.db.transaction() as conn:
                self._workspace(workspace_id, org_id)
                held = self._held_lock(workspace_id)
                lock_id = str(info.get("ID") or "")
                if held is not None:
                    if lock_id and held["lock_id"] == lock_id:
                        return
                    raise Locked("the workspace is already locked", body=json.loads(held["lock_info"]))
                conn.execute(
                    "INSERT INTO terraform_locks (id, workspace_id, org_id, lock_id, lock_info,"
                    " runner_job_id,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (new_id("tfl"), workspace_id, org_id, lock_id, json.dumps(info), job_id, now),
                )

        await self._run(lock)

    async def unlock(self, workspace_id: str, org_id: str, lock_id: str | None) -> None:
        """Release the lock; with a lock id it must be the holder's (409 otherwise), without
        one it is a force unlock."""

        def unlock() -> None:
            with self.db.transaction() as conn:
                self._workspace(workspace_id, org_id)
                held = self._held_lock(workspace_id)
                if held is None:
                    return
                if lock_id and held["lock_id"] != lock_id:
                    raise Conflict("the lock is held by another holder", body=json.loads(held["lock_info"]))
                conn.execute(
                    "UPDATE terraform_locks SET released_at = ? WHERE id = ?", (now_ns(), held["id"])
                )

        await self._run(unlock)

    async def put_state_json(
        self, workspace_id: str, org_id: str, contents: bytes, *, job_id: str | None
    ) -> None:
        def put() -> None:
            now = now_ns()
            with self.db.transaction() as conn:
                self._workspace(workspace_id, org_id)
                conn.execute(
                    "INSERT INTO terraform_state_json (workspace_id, id, org_id, contents,"
                    " runner_job_id, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workspace_id) DO UPDATE SET"
                    " contents = excluded.contents, runner_job_id = excluded.runner_job_id,"
                    " updated_at = excluded.updated_at",
                    (workspace_id, new_id("tfs"), org_id, contents, job_id, now, now),
                )

        await self._run(put)

    async def get_state_json(self, workspace_id: str, org_id: str) -> bytes | None:
        """The stored body of the workspace's state-json, in the form it was posted."""
        row = await self.get_state_json_row(workspace_id, org_id)
        return None if row is None else bytes(row["contents"])

    async def get_state_json_row(
        self, workspace_id: str, org_id: str, state_id: str | None = None
    ) -> Row | None:
        """The state-json row (``state_id``: that one only), or None."""

        def query() -> Row | None:
            self._workspace(workspace_id, org_id)
            if state_id is None:
                return self._one("SELECT * FROM terraform_state_json WHERE workspace_id = ?", (workspace_id,))
            return self._one(
                "SELECT * FROM terraform_state_json WHERE workspace_id = ? AND id = ?",
                (workspace_id, state_id),
            )

        return await self._run(query)

    async def delete_state_json(self, workspace_id: str, org_id: str) -> None:
        def delete() -> None:
            with self.db.transaction() as conn:
                self._workspace(workspace_id, org_id)
                conn.execute("DELETE FROM terraform_state_json WHERE workspace_id = ?", (workspace_id,))

        await self._run(delete)
