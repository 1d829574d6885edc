"""Store rows -> wire JSON, as the contract names and encodes them (docs/runner-api.md §1.2).

Zero values are left out like Go's ``omitzero``; durations stay integer nanoseconds; times
become RFC 3339; byte columns become standard base64. Everything a runner reads goes through
here, so the wire shape lives in one place.
"""

from __future__ import annotations

import json
from typing import Any

from controlplane.wire import b64std, dumps, rfc3339

Row = dict[str, Any]


def _compact(out: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in out.items() if v is not None and v != ""}


def settings(row: Row, base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["settings_id"],
        "created_at": rfc3339(row["settings_created_at"]),
        "updated_at": rfc3339(row["settings_updated_at"]),
        "org_id": row["org_id"],
        "runner_group_id": row["runner_group_id"],
        "runner_api_url": base_url,
    }
    out.update(row["settings"])
    out.setdefault("metadata", {})
    out.setdefault("aws_max_instance_lifetime", 604800)
    out.setdefault("platform", "")
    return out


def runner(row: Row, base_url: str) -> dict[str, Any]:
    group = _compact(
        {
            "id": row["runner_group_id"],
            "created_at": rfc3339(row["group_created_at"]),
            "updated_at": rfc3339(row["group_updated_at"]),
            "org_id": row["org_id"],
            "owner_id": row["org_id"],
            "owner_type": "orgs",
            "type": row["group_type"],
            "platform": row["group_platform"],
        }
    )
    group["settings"] = settings(row, base_url)
    out = _compact(
        {
            "id": row["id"],
            "created_at": rfc3339(row["created_at"]),
            "updated_at": rfc3339(row["updated_at"]),
            "org_id": row["org_id"],
            "status": row["status"],
            "status_description": row["status_description"],
            "runner_group_id": row["runner_group_id"],
            "name": row["name"],
            "display_name": row["display_name"],
        }
    )
    out["runner_group"] = group
    return out


def heartbeat(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["created_at"]),
        "runner_id": row["runner_id"],
        "alive_time": row["alive_time"],
        "version": row["version"],
        "started_at": rfc3339(row["created_at"] - row["alive_time"]),
        "process": row["process"],
    }


def health_check(row: Row) -> dict[str, Any]:
    codes = {
        "active": 0,
        "pending": 200,
        "provisioning": 201,
        "deprovisioned": 300,
        "deprovisioning": 301,
        "error": 400,
    }
    return {
        "id": row["id"],
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["created_at"]),
        "runner_id": row["runner_id"],
        "status": row["status"],
        "status_code": codes.get(row["status"], 500),
        "process": row["process"],
    }


def log_stream_of_job(row: Row, base_url: str) -> dict[str, Any]:
    return _compact(
        {
            "id": row["log_stream_id"],
            "created_at": rfc3339(row["ls_created_at"]),
            "updated_at": rfc3339(row["ls_updated_at"]),
            "org_id": row["org_id"],
            "owner_id": row["ls_owner_id"],
            "owner_type": row["ls_owner_type"],
            "open": bool(row["ls_open"]),
            "write_token": row["ls_write_token"],
            "runner_api_url": base_url,
        }
    )


def log_stream(row: Row, base_url: str) -> dict[str, Any]:
    out = _compact(
        {
            "id": row["id"],
            "created_at": rfc3339(row["created_at"]),
            "updated_at": rfc3339(row["updated_at"]),
            "org_id": row["org_id"],
            "owner_id": row["owner_id"],
            "owner_type": row["owner_type"],
            "runner_api_url": base_url,
        }
    )
    out["open"] = bool(row["open"])
    out["attrs"] = row["attrs"] or {}
    out["record_count"] = row["record_count"]
    return out


def execution(row: Row) -> dict[str, Any]:
    out = _compact(
        {
            "id": row["id"],
            "created_at": rfc3339(row["created_at"]),
            "updated_at": rfc3339(row["updated_at"]),
            "org_id": row["org_id"],
            "runner_job_id": row["job_id"],
            "status": row["status"],
        }
    )
    if row["metadata"]:
        out["metadata"] = json.loads(row["metadata"])
    history = row.get("status_history")
    if history is not None:
        out["status_history"] = [{"status": h["status"], "at": rfc3339(h["at"])} for h in history]
    result_row = row.get("result")
    if result_row is not None:
        out["result"] = result(result_row)
    outputs_row = row.get("outputs")
    if outputs_row is not None:
        out["outputs"] = outputs(outputs_row, parsed=True)
    return out


def job(row: Row, base_url: str, *, detail: bool = False) -> dict[str, Any]:
    out = _compact(
        {
            "id": row["id"],
            "created_at": rfc3339(row["created_at"]),
            "updated_at": rfc3339(row["updated_at"]),
            "org_id": row["org_id"],
            "runner_id": row["runner_id"],
            "owner_id": row["owner_id"],
            "owner_type": row["owner_type"],
            "log_stream_id": row["log_stream_id"],
            "queue_timeout": row["queue_timeout"],
            "available_timeout": row["available_timeout"],
            "execution_timeout": row["execution_timeout"],
            "overall_timeout": row["overall_timeout"],
            "max_executions": row["max_executions"],
            "status": row["status"],
            "status_description": row["status_description"],
            "type": row["type"],
            "group": row["grp"],
            "operation": row["operation"],
            "started_at": rfc3339(row["started_at"]),
            "finished_at": rfc3339(row["finished_at"]),
        }
    )
    out["log_stream"] = log_stream_of_job(row, base_url)
    if row["metadata"]:
        out["metadata"] = json.loads(row["metadata"])
    if row["started_at"] is not None and row["finished_at"] is not None:
        out["execution_time"] = row["finished_at"] - row["started_at"]
    if detail:
        out["executions"] = [execution(e) for e in row.get("executions", [])]
        if row["execution_count"]:
            out["execution_count"] = row["execution_count"]
        final = row.get("final_execution")
        if final is not None:
            out["final_runner_job_execution_id"] = final["id"]
            out["outputs_json"] = b64std(final["outputs_json"])
            out["outputs"] = _parse_outputs(final["outputs_json"])
    return out


#: Encoded list entries by job version (id, update time, status, attempts, log stream update time
#: and state) and base URL: a polling runner reads the same available jobs over and over, and
#: rendering them is most of a poll's cost.
_JOB_JSON: dict[tuple[Any, ...], bytes] = {}
_JOB_JSON_MAX = 4096


def job_list_json(rows: list[Row], base_url: str) -> bytes:
    """The JSON array of list entries (``job`` without detail), encoded once per job version."""
    parts = []
    for row in rows:
        key = (
            row["id"],
            row["updated_at"],
            row["status"],
            row["attempts"],
            row["ls_updated_at"],
            row["ls_open"],
            base_url,
        )
        encoded = _JOB_JSON.get(key)
        if encoded is None:
            if len(_JOB_JSON) >= _JOB_JSON_MAX:
                _JOB_JSON.clear()
            encoded = _JOB_JSON[key] = dumps(job(row, base_url))
        parts.append(encoded)
    return b"[" + b",".join(parts) + b"]"


def _parse_outputs(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def result(row: Row) -> dict[str, Any]:
    out = _compact(
        {
            "id": row["id"],
            "created_at": rfc3339(row["created_at"]),
            "updated_at": rfc3339(row["updated_at"]),
            "org_id": row["org_id"],
            "runner_job_execution_id": row["execution_id"],
            "contents": row["contents"],
            "contents_display": b64std(row["contents_display"]),
            "contents_gzip": b64std(row["contents_gzip"]),
            "contents_display_gzip": b64std(row["contents_display_gzip"]),
        }
    )
    out["success"] = bool(row["success"])
    out["error_code"] = row["error_code"]
    if row["error_metadata"]:
        out["error_metadata"] = row["error_metadata"]
    return out


def outputs(row: Row, *, parsed: bool = False) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
        "org_id": row["org_id"],
        "runner_job_execution_id": row["execution_id"],
        "outputs_json": b64std(row["outputs_json"]),
    }
    if parsed:
        out["outputs"] = _parse_outputs(row["outputs_json"])
    return out


def log_record(row: Row) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "timestamp": rfc3339(row["time_unix_nano"] or row["observed_time_unix_nano"]),
        "time_unix_nano": row["time_unix_nano"],
        "observed_time_unix_nano": row["observed_time_unix_nano"],
        "severity_text": row["severity_text"],
        "severity_number": row["severity_number"],
        "body": row["body"],
        "attributes": json.loads(row["attributes"]),
        "resource_attributes": json.loads(row["resource_attributes"]),
        "scope_name": row["scope_name"],
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
    }


_LOCK_KEYS = ("ID", "Operation", "Info", "Who", "Version", "Created", "Path")


def terraform_lock(row: Row) -> dict[str, Any]:
    info = json.loads(row["lock_info"])
    out = _compact(
        {
            "id": row["id"],
            "created_at": rfc3339(row["created_at"]),
            "updated_at": rfc3339(row["released_at"] or row["created_at"]),
            "org_id": row["org_id"],
            "workspace_id": row["workspace_id"],
            "runner_job_id": row["runner_job_id"],
            "released_at": rfc3339(row["released_at"]),
        }
    )
    out["lock"] = {key.lower(): info.get(key, "") for key in _LOCK_KEYS}
    return out


def workspace(row: Row) -> dict[str, Any]:
    out = _compact(
        {
            "id": row["id"],
            "created_at": rfc3339(row["created_at"]),
            "updated_at": rfc3339(row["updated_at"]),
            "org_id": row["org_id"],
            "owner_id": row["owner_id"],
            "owner_type": row["owner_type"],
        }
    )
    history = row.get("lock_history")
    out["lock_history"] = [terraform_lock(lock) for lock in history] if history else None
    return out


def state_revision(row: Row) -> dict[str, Any]:
    return _compact(
        {
            "id": row["id"],
            "created_at": rfc3339(row["created_at"]),
            "org_id": row["org_id"],
            "terraform_workspace_id": row["workspace_id"],
            "runner_job_id": row["runner_job_id"],
            "revision": row["revision"],
            "size": row["size"],
        }
    )
