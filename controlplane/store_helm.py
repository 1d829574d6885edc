"""Helm release storage for the helm "nuon" storage driver (docs/runner-api.md §9).

One row per (helm chart, key) with the columns Helm queries by (name, owner, status, version)
and the release JSON as posted. Differences from the reference server, all of which the driver
expects (``pkg/helm/driver/nuon_driver.go``): a missing release is 404 (the reference answers
500), a duplicate is 409 (400), an update of a missing release is 404 (200, nothing updated), a
query that matches nothing is 404, which the driver turns into ``ErrReleaseNotFound`` as Helm's
own drivers return it (the reference answers ``200 []``), and an unknown query label is 400
(500).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from controlplane.errors import Conflict, NotFound
from controlplane.store_base import Row, StoreBase
from controlplane.wire import now_ns

#: Query keys the driver sends -> the column they filter on (``createdAt``/``modifiedAt`` compare
#: the release's labels of those names).
QUERY_COLUMNS = {"name": "name", "owner": "owner", "status": "status", "version": "version"}
QUERY_LABELS = frozenset({"createdAt", "modifiedAt"})


class HelmReleaseStore(StoreBase):
    async def create_helm_release(
        self, org_id: str, chart_id: str, namespace: str, key: str, release: dict[str, Any], body: str
    ) -> Row:
        def create() -> Row:
            now = now_ns()
            try:
                with self.db.transaction() as conn:
                    conn.execute(
                        "INSERT INTO helm_releases (helm_chart_id, key, org_id, namespace, name, version,"
                        " status, owner, type, body, labels, created_at, updated_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, 'helm', 'helm.sh/release.v1', ?, ?, ?, ?)",
                        (
                            chart_id,
                            key,
                            org_id,
                            namespace,
                            *_columns(release),
                            body,
                            _labels(release),
                            now,
                            now,
                        ),
                    )
            except sqlite3.IntegrityError:
                raise Conflict(f"helm release {key} already exists") from None
            return self._release_row(org_id, chart_id, namespace, key)

        return await self._run(create)

    async def update_helm_release(
        self, org_id: str, chart_id: str, namespace: str, key: str, release: dict[str, Any], body: str
    ) -> None:
        def update() -> None:
            with self.db.transaction() as conn:
                done = conn.execute(
                    "UPDATE helm_releases SET name = ?, version = ?, status = ?, owner = 'helm', body = ?,"
                    " updated_at = ? WHERE helm_chart_id = ? AND namespace = ? AND key = ? AND org_id = ?",
                    (*_columns(release), body, now_ns(), chart_id, namespace, key, org_id),
                )
                if done.rowcount == 0:
                    raise NotFound(f"helm release {key} not found")

        await self._run(update)

    async def delete_helm_release(self, org_id: str, chart_id: str, namespace: str, key: str) -> None:
        def delete() -> None:
            with self.db.transaction() as conn:
                done = conn.execute(
                    "DELETE FROM helm_releases"
                    " WHERE helm_chart_id = ? AND namespace = ? AND key = ? AND org_id = ?",
                    (chart_id, namespace, key, org_id),
                )
                if done.rowcount == 0:
                    raise NotFound(f"helm release {key} not found")

        await self._run(delete)

    async def get_helm_release(self, org_id: str, chart_id: str, namespace: str, key: str) -> Row:
        return await self._run(self._release_row, org_id, chart_id, namespace, key)

    async def list_helm_releases(
        self, org_id: str, chart_id: str, namespace: str, filters: dict[str, str] | None = None
    ) -> list[Row]:
        def query() -> list[Row]:
            sql = "SELECT * FROM helm_releases WHERE helm_chart_id = ? AND namespace = ? AND org_id = ?"
            args: list[Any] = [chart_id, namespace, org_id]
            for name, value in (filters or {}).items():
                if name in QUERY_COLUMNS:
                    sql += f" AND {QUERY_COLUMNS[name]} = ?"
                    args.append(int(value) if name == "version" and value.lstrip("-").isdigit() else value)
            rows = self._all(sql + " ORDER BY version, key", args)
            labels = {k: v for k, v in (filters or {}).items() if k in QUERY_LABELS}
            return [r for r in rows if all(json.loads(r["labels"]).get(k) == v for k, v in labels.items())]

        return await self._run(query)

    def _release_row(self, org_id: str, chart_id: str, namespace: str, key: str) -> Row:
        row = self._one(
            "SELECT * FROM helm_releases"
            " WHERE helm_chart_id = ? AND namespace = ? AND key = ? AND org_id = ?",
            (chart_id, namespace, key, org_id),
        )
        if row is None:
            raise NotFound(f"helm release {key} not found")
        return row


def _columns(release: dict[str, Any]) -> tuple[str, int, str]:
    info = release.get("info") if isinstance(release.get("info"), dict) else {}
    version = release.get("version")
    return (
        str(release.get("name") or ""),
        version if isinstance(version, int) and not isinstance(version, bool) else 0,
        str((info or {}).get("status") or ""),
    )


def _labels(release: dict[str, Any]) -> str:
    labels = release.get("labels")
    return json.dumps({str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {})
