"""App configs (docs/runner-api.md §8.1): stored by the operator, read by the runner's Fetch.

The real control plane builds an app config from an app's synced configuration; ours has no
apps, so the operator stores the document the runner should read, per app (``put_app_config``)
or for one job (``attach_app_config``: under the ``app_id``/``app_config_id`` its plan names).
Like the reference, reads look the config up by its id and ignore the app id in the path.
"""

from __future__ import annotations

import json
from typing import Any

from controlplane.errors import BadRequest, NotFound
from controlplane.store_base import Row, StoreBase
from controlplane.wire import now_ns


class AppConfigStore(StoreBase):
    def _put_app_config(
        self, org_id: str, app_id: str, config_id: str, config: dict[str, Any], job_id: str | None
    ) -> Row:
        now = now_ns()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO app_configs (id, org_id, app_id, job_id, config, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET app_id = excluded.app_id,"
                " job_id = excluded.job_id, config = excluded.config, updated_at = excluded.updated_at",
                (config_id, org_id, app_id, job_id, json.dumps(config), now, now),
            )
        row = self._one("SELECT * FROM app_configs WHERE id = ?", (config_id,))
        assert row is not None
        return row

    async def put_app_config(self, org_id: str, app_id: str, config_id: str, config: dict[str, Any]) -> Row:
        return await self._run(self._put_app_config, org_id, app_id, config_id, config, None)

    async def attach_app_config(self, job_id: str, config: dict[str, Any]) -> Row:
        """Store ``config`` under the app config its job's plan names (400 if it names none)."""

        def attach() -> Row:
            job = self._one("SELECT org_id FROM runner_jobs WHERE id = ?", (job_id,))
            plan = self._one("SELECT plan_json FROM runner_job_plans WHERE job_id = ?", (job_id,))
            if job is None:
                raise NotFound(f"runner job {job_id} not found")
            app_id, config_id = plan_app_config(plan["plan_json"] if plan else "")
            if not config_id:
                raise BadRequest(
                    f"the plan of job {job_id} names no app_config_id: nothing would read this config",
                    error="invalid request",
                )
            return self._put_app_config(job["org_id"], app_id, config_id, config, job_id)

        return await self._run(attach)

    async def get_app_config(self, config_id: str, org_id: str) -> Row:
        def query() -> Row:
            row = self._one("SELECT * FROM app_configs WHERE id = ? AND org_id = ?", (config_id, org_id))
            if row is None:
                raise NotFound(f"app config {config_id} not found")
            return row

        return await self._run(query)


def plan_app_config(plan_json: str) -> tuple[str, str]:
    """(app_id, app_config_id) named by a plan, keys matched case-insensitively like Go does."""
    try:
        plan = json.loads(plan_json) if plan_json else {}
    except ValueError:
        return "", ""
    if not isinstance(plan, dict):
        return "", ""
    folded = {str(k).lower().replace("_", ""): v for k, v in plan.items()}
    app_id, config_id = folded.get("appid"), folded.get("appconfigid")
    return (app_id if isinstance(app_id, str) else ""), (config_id if isinstance(config_id, str) else "")
