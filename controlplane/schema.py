"""The SQLite schema as an ordered list of migrations.

Each migration runs once, inside one transaction, and is recorded in ``schema_migrations``; a new
version of the control plane appends migrations and never edits old ones, so a state directory
written by an older version opens and upgrades in place.

Times are integer nanoseconds since the epoch (UTC); durations are integer nanoseconds, as on
the wire. Jobs are never deleted, so ``rowid`` order is creation order (the jobs list is oldest
first and breaks ``created_at`` ties by ``rowid``).
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL);
        CREATE TABLE runner_groups (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, type TEXT NOT NULL, platform TEXT NOT NULL,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE runner_group_settings (
            id TEXT PRIMARY KEY, runner_group_id TEXT NOT NULL UNIQUE, org_id TEXT NOT NULL,
            settings TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE runners (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, runner_group_id TEXT NOT NULL,
            name TEXT NOT NULL, display_name TEXT NOT NULL, status TEXT NOT NULL,
            status_description TEXT NOT NULL, last_heartbeat_at INTEGER,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE INDEX runners_status ON runners (status, last_heartbeat_at);
        CREATE TABLE tokens (
            token TEXT PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, org_id TEXT NOT NULL,
            runner_id TEXT, log_stream_id TEXT, created_at INTEGER NOT NULL, expires_at INTEGER);
        CREATE TABLE log_streams (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, runner_id TEXT, owner_id TEXT, owner_type TEXT,
            open INTEGER NOT NULL, attrs TEXT, write_token TEXT NOT NULL,
            record_count INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE log_records (
            stream_id TEXT NOT NULL, seq INTEGER NOT NULL, time_unix_nano INTEGER NOT NULL,
            observed_time_unix_nano INTEGER NOT NULL, severity_text TEXT NOT NULL,
            severity_number INTEGER NOT NULL, body TEXT NOT NULL, attributes TEXT NOT NULL,
            resource_attributes TEXT NOT NULL, scope_name TEXT NOT NULL, trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            PRIMARY KEY (stream_id, seq)) WITHOUT ROWID;
        CREATE TABLE runner_jobs (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, runner_id TEXT NOT NULL,
            owner_id TEXT NOT NULL, owner_type TEXT NOT NULL, log_stream_id TEXT NOT NULL,
            queue_timeout INTEGER NOT NULL, available_timeout INTEGER NOT NULL,
            execution_timeout INTEGER NOT NULL, overall_timeout INTEGER NOT NULL,
            max_executions INTEGER NOT NULL, status TEXT NOT NULL, status_description TEXT NOT NULL,
            type TEXT NOT NULL, grp TEXT NOT NULL, operation TEXT NOT NULL, metadata TEXT,
            execution_count INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
            current_execution_id TEXT, available_deadline INTEGER, overall_deadline INTEGER NOT NULL,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
            started_at INTEGER, finished_at INTEGER);
        CREATE INDEX runner_jobs_poll ON runner_jobs (runner_id, status, grp, created_at);
        CREATE INDEX runner_jobs_available ON runner_jobs (available_deadline) WHERE status = 'available';
        CREATE INDEX runner_jobs_open ON runner_jobs (overall_deadline)
            WHERE status IN ('queued', 'available', 'in-progress');
        CREATE TABLE runner_job_plans (
            job_id TEXT PRIMARY KEY, plan_json TEXT NOT NULL, created_at INTEGER NOT NULL);
        CREATE TABLE runner_job_executions (
            id TEXT PRIMARY KEY, job_id TEXT NOT NULL, org_id TEXT NOT NULL, runner_id TEXT NOT NULL,
            status TEXT NOT NULL, metadata TEXT, deadline INTEGER NOT NULL,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE INDEX executions_job ON runner_job_executions (job_id, created_at);
        CREATE INDEX executions_running ON runner_job_executions (deadline)
            WHERE status IN ('pending', 'initializing', 'in-progress', 'cleaning-up');
        CREATE INDEX executions_runner_running ON runner_job_executions (runner_id, created_at)
            WHERE status IN ('pending', 'initializing', 'in-progress', 'cleaning-up');
        CREATE TABLE execution_results (
            id TEXT PRIMARY KEY, execution_id TEXT NOT NULL UNIQUE, org_id TEXT NOT NULL,
            success INTEGER NOT NULL, error_code INTEGER NOT NULL, error_metadata TEXT,
            contents TEXT, contents_display BLOB, contents_gzip BLOB, contents_display_gzip BLOB,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE execution_outputs (
            id TEXT PRIMARY KEY, execution_id TEXT NOT NULL UNIQUE, org_id TEXT NOT NULL,
            outputs_json BLOB NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE heartbeats (
            id TEXT PRIMARY KEY, runner_id TEXT NOT NULL, alive_time INTEGER NOT NULL,
            version TEXT NOT NULL, process TEXT NOT NULL, created_at INTEGER NOT NULL);
        CREATE INDEX heartbeats_runner ON heartbeats (runner_id, created_at);
        CREATE TABLE health_checks (
            id TEXT PRIMARY KEY, runner_id TEXT NOT NULL, process TEXT NOT NULL, status TEXT NOT NULL,
            created_at INTEGER NOT NULL);
        CREATE TABLE terraform_workspaces (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, owner_id TEXT NOT NULL, owner_type TEXT NOT NULL,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE terraform_locks (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, org_id TEXT NOT NULL, lock_id TEXT NOT NULL,
            lock_info TEXT NOT NULL, runner_job_id TEXT, created_at INTEGER NOT NULL,
            released_at INTEGER);
        CREATE UNIQUE INDEX terraform_locks_held ON terraform_locks (workspace_id) WHERE released_at IS NULL;
        CREATE INDEX terraform_locks_history ON terraform_locks (workspace_id, created_at);
        CREATE TABLE terraform_states (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, org_id TEXT NOT NULL,
            revision INTEGER NOT NULL, contents BLOB NOT NULL, runner_job_id TEXT, lock_id TEXT,
            created_at INTEGER NOT NULL, UNIQUE (workspace_id, revision));
        CREATE TABLE terraform_state_json (
            workspace_id TEXT PRIMARY KEY, id TEXT NOT NULL, org_id TEXT NOT NULL, contents BLOB NOT NULL,
            runner_job_id TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        """,
    ),
    (
        2,
        "execution status history",
        """
        CREATE TABLE execution_status_events (
            execution_id TEXT NOT NULL, status TEXT NOT NULL, at INTEGER NOT NULL);
        CREATE INDEX execution_status_events_execution ON execution_status_events (execution_id);
        INSERT INTO execution_status_events (execution_id, status, at)
            SELECT id, status, updated_at FROM runner_job_executions;
        CREATE TRIGGER execution_status_created AFTER INSERT ON runner_job_executions BEGIN
            INSERT INTO execution_status_events (execution_id, status, at)
            VALUES (NEW.id, NEW.status, NEW.created_at);
        END;
        CREATE TRIGGER execution_status_changed AFTER UPDATE OF status ON runner_job_executions
            WHEN NEW.status != OLD.status BEGIN
            INSERT INTO execution_status_events (execution_id, status, at)
            VALUES (NEW.id, NEW.status, NEW.updated_at);
        END;
        """,
    ),
    (
        3,
        "runner process instance (duplicate runner processes, issue 11)",
        """
        ALTER TABLE runners ADD COLUMN instance_id TEXT NOT NULL DEFAULT '';
        ALTER TABLE heartbeats ADD COLUMN instance_id TEXT NOT NULL DEFAULT '';
        """,
    ),
    (
        4,
        "app configs, helm release storage, action workflows (issue 10; docs/runner-api.md §8, §9)",
        """
        CREATE TABLE app_configs (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, app_id TEXT NOT NULL, job_id TEXT,
            config TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE helm_releases (
            helm_chart_id TEXT NOT NULL, key TEXT NOT NULL, org_id TEXT NOT NULL,
            namespace TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,
            status TEXT NOT NULL, owner TEXT NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL,
            labels TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
            PRIMARY KEY (helm_chart_id, key));
        CREATE INDEX helm_releases_namespace ON helm_releases (helm_chart_id, namespace);
        CREATE TABLE action_workflow_configs (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, action_workflow_id TEXT NOT NULL,
            app_id TEXT NOT NULL, timeout INTEGER NOT NULL, config TEXT NOT NULL,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE action_workflow_runs (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, install_id TEXT NOT NULL,
            action_workflow_config_id TEXT NOT NULL, status TEXT NOT NULL, run_env_vars TEXT NOT NULL,
            trigger_type TEXT NOT NULL, runner_job_id TEXT,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE TABLE action_workflow_run_steps (
            id TEXT PRIMARY KEY, run_id TEXT NOT NULL, org_id TEXT NOT NULL, idx INTEGER NOT NULL,
            step_id TEXT NOT NULL, status TEXT NOT NULL, execution_duration INTEGER NOT NULL,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        CREATE INDEX action_workflow_run_steps_run ON action_workflow_run_steps (run_id, idx);
        """,
    ),
    (
        5,
        "log ranges stored once (X-Byoc-Log-Range, docs/runner-api.md §5.7; issue 11)",
        """
        CREATE TABLE log_stream_ranges (
            stream_id TEXT NOT NULL, writer TEXT NOT NULL, high INTEGER NOT NULL,
            PRIMARY KEY (stream_id, writer)) WITHOUT ROWID;
        """,
    ),
]
