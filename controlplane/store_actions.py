"""Action workflow configs, install action workflow runs and their steps (docs/runner-api.md §8.2).

The runner of an ``actions-workflow`` job reads the run (its steps, in order, and env vars), the
run's config (the steps' commands and sources, the timeout) and reports each step's status with
a PUT. The real control plane creates configs from an app's synced configuration and runs from
triggers; ours has the operator create both (``create_action_config``, ``create_action_run``).
Like the reference, a step update finds the step by its id alone (the reference runner puts the
workflow id where the run id belongs).
"""

from __future__ import annotations

import json
from typing import Any

from controlplane.errors import NotFound
from controlplane.ids import new_id
from controlplane.store_base import Row, StoreBase
from controlplane.wire import now_ns

#: What a step's status may be (``InstallActionWorkflowRunStepStatus``).
STEP_STATUSES = frozenset({"pending", "in-progress", "finished", "timed-out", "error"})


class ActionWorkflowStore(StoreBase):
    async def create_action_config(self, org_id: str, config: dict[str, Any], config_id: str | None) -> Row:
        """``config``: ``{action_workflow_id?, app_id?, timeout (ns), steps: [{name, ...}]}``; step
        ids and indexes are assigned here."""

        def create() -> Row:
            now = now_ns()
            cid = config_id or new_id("awc")
            steps = [
                {**step, "id": step.get("id") or new_id("aws"), "idx": idx, "action_workflow_config_id": cid}
                for idx, step in enumerate(config.get("steps") or [])
            ]
            document = {**config, "steps": steps}
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO action_workflow_configs (id, org_id, action_workflow_id, app_id, timeout,"
                    " config, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cid,
                        org_id,
                        str(config.get("action_workflow_id") or new_id("acw")),
                        str(config.get("app_id") or ""),
                        int(config.get("timeout") or 0),
                        json.dumps(document),
                        now,
                        now,
                    ),
                )
            return self._config_row(cid, org_id)

        return await self._run(create)

    async def get_action_config(self, config_id: str, org_id: str) -> Row:
        return await self._run(self._config_row, config_id, org_id)

    async def create_action_run(
        self,
        org_id: str,
        install_id: str,
        config_id: str,
        run_env_vars: dict[str, str],
        runner_job_id: str | None,
        run_id: str | None,
    ) -> tuple[Row, list[Row], Row]:
        """A run of ``config_id`` with one pending step per config step, in the config's order."""

        def create() -> tuple[Row, list[Row], Row]:
            config = self._config_row(config_id, org_id)
            rid = run_id or new_id("iar")
            now = now_ns()
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO action_workflow_runs (id, org_id, install_id, action_workflow_config_id,"
                    " status, run_env_vars, trigger_type, runner_job_id, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, 'queued', ?, 'manual', ?, ?, ?)",
                    (rid, org_id, install_id, config_id, json.dumps(run_env_vars), runner_job_id, now, now),
                )
                for idx, step in enumerate(json.loads(config["config"]).get("steps") or []):
                    conn.execute(
                        "INSERT INTO action_workflow_run_steps (id, run_id, org_id, idx, step_id, status,"
                        " execution_duration, created_at, updated_at)"
                        " VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                        (new_id("ars"), rid, org_id, idx, step["id"], now, now),
                    )
            return self._run_rows(rid, org_id, install_id)

        return await self._run(create)

    async def get_action_run(self, run_id: str, org_id: str, install_id: str) -> tuple[Row, list[Row], Row]:
        return await self._run(self._run_rows, run_id, org_id, install_id)

    async def update_action_step(
        self, step_id: str, org_id: str, status: str, duration_ns: int | None
    ) -> Row:
        def update() -> Row:
            with self.db.transaction() as conn:
                done = conn.execute(
                    "UPDATE action_workflow_run_steps SET status = ?,"
                    " execution_duration = COALESCE(?, execution_duration), updated_at = ?"
                    " WHERE id = ? AND org_id = ?",
                    (status, duration_ns, now_ns(), step_id, org_id),
                )
                if done.rowcount == 0:
                    raise NotFound(f"install action workflow run step {step_id} not found")
            row = self._one("SELECT * FROM action_workflow_run_steps WHERE id = ?", (step_id,))
            assert row is not None
            return row

        return await self._run(update)

    def _config_row(self, config_id: str, org_id: str) -> Row:
        row = self._one(
            "SELECT * FROM action_workflow_configs WHERE id = ? AND org_id = ?", (config_id, org_id)
        )
        if row is None:
            raise NotFound(f"action workflow config {config_id} not found")
        return row

    def _run_rows(self, run_id: str, org_id: str, install_id: str) -> tuple[Row, list[Row], Row]:
        run = self._one(
            "SELECT * FROM action_workflow_runs WHERE id = ? AND org_id = ? AND install_id = ?",
            (run_id, org_id, install_id),
        )
        if run is None:
            raise NotFound(f"install action workflow run {run_id} not found")
        steps = self._all("SELECT * FROM action_workflow_run_steps WHERE run_id = ? ORDER BY idx", (run_id,))
        return run, steps, self._config_row(run["action_workflow_config_id"], org_id)
