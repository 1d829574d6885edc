"""The OpenAPI 3.1 document served at ``/oapi/v3`` and ``/openapi.json``.

Request schemas are generated from the pydantic bodies the routes validate with
(``controlplane.bodies``); response schemas are written here next to the operation table, and
a schemathesis run (tests/controlplane/test_schemathesis.py) checks every response against them.
Every error is ``Error``; every operation declares the error statuses it can answer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from controlplane import bodies
from runner.api.models import ExecutionStatus, JobGroup, JobStatus

S = dict[str, Any]

_TS: S = {"type": "string", "description": "RFC 3339 timestamp"}
_NS: S = {"type": "integer", "description": "duration in nanoseconds"}
_STR: S = {"type": "string"}
_INT: S = {"type": "integer"}
_BOOL: S = {"type": "boolean"}
_HSTORE: S = {"type": "object", "additionalProperties": {"type": ["string", "null"]}}
_B64: S = {"type": "string", "description": "standard base64"}


def _ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: S, required: list[str] | None = None) -> S:
    out: S = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


_TIMESTAMPS: S = {"id": _STR, "created_by_id": _STR, "created_at": _TS, "updated_at": _TS, "org_id": _STR}

RESPONSE_SCHEMAS: dict[str, S] = {
    "Error": _obj({"error": _STR, "description": _STR, "user_error": _BOOL}, ["error"]),
    "Settings": _obj(
        {
            **_TIMESTAMPS,
            "runner_group_id": _STR,
            "runner_api_url": _STR,
            "container_image_url": _STR,
            "container_image_tag": _STR,
            "sandbox_mode": _BOOL,
            "heart_beat_timeout": _NS,
            "otel_collector_config": _STR,
            "enable_sentry": _BOOL,
            "enable_metrics": _BOOL,
            "enable_logging": _BOOL,
            "logging_level": _STR,
            "groups": {"type": "array", "items": _STR},
            "metadata": _HSTORE,
            "aws_max_instance_lifetime": _INT,
            "aws_instance_type": _STR,
            "platform": _STR,
            "long_poll_jobs": _BOOL,
            "job_group_parallelism": {"type": ["object", "null"], "additionalProperties": _STR},
            "log_accept_encodings": {"type": "array", "items": _STR},
        },
        [
            "id",
            "heart_beat_timeout",
            "logging_level",
            "metadata",
            "groups",
            "enable_logging",
            "long_poll_jobs",
        ],
    ),
    "RunnerGroup": _obj(
        {
            **_TIMESTAMPS,
            "owner_id": _STR,
            "owner_type": _STR,
            "type": _STR,
            "platform": _STR,
            "settings": _ref("Settings"),
        },
        ["id", "settings"],
    ),
    "Runner": _obj(
        {
            **_TIMESTAMPS,
            "status": _STR,
            "status_description": _STR,
            "runner_group_id": _STR,
            "runner_group": _ref("RunnerGroup"),
            "name": _STR,
            "display_name": _STR,
            "token": _STR,
        },
        ["id", "status", "runner_group"],
    ),
    "HeartBeat": _obj(
        {
            **_TIMESTAMPS,
            "runner_id": _STR,
            "alive_time": _NS,
            "version": _STR,
            "started_at": _TS,
            "process": _STR,
        },
        ["id", "runner_id", "alive_time", "started_at", "process"],
    ),
    "HealthCheck": _obj(
        {**_TIMESTAMPS, "runner_id": _STR, "status": _STR, "status_code": _INT, "process": _STR},
        ["id", "runner_id", "status", "status_code", "process"],
    ),
    "JobLogStream": _obj(
        {
            **_TIMESTAMPS,
            "owner_id": _STR,
            "owner_type": _STR,
            "open": _BOOL,
            "write_token": _STR,
            "runner_api_url": _STR,
        },
        ["id", "open", "write_token", "runner_api_url"],
    ),
    "LogStream": _obj(
        {
            **_TIMESTAMPS,
            "owner_id": _STR,
            "owner_type": _STR,
            "open": _BOOL,
            "attrs": _HSTORE,
            "record_count": _INT,
            "runner_api_url": _STR,
        },
        ["id", "open", "record_count"],
    ),
    "Result": _obj(
        {
            **_TIMESTAMPS,
            "runner_job_execution_id": _STR,
            "success": _BOOL,
            "error_code": _INT,
            "error_metadata": _HSTORE,
            "contents": _STR,
            "contents_display": _B64,
            "contents_gzip": _B64,
            "contents_display_gzip": _B64,
        },
        ["id", "runner_job_execution_id", "success", "error_code"],
    ),
    "Outputs": _obj(
        {**_TIMESTAMPS, "runner_job_execution_id": _STR, "outputs_json": _B64, "outputs": {}},
        ["id", "runner_job_execution_id", "outputs_json"],
    ),
    "Execution": _obj(
        {
            **_TIMESTAMPS,
            "runner_job_id": _STR,
            "status": {"type": "string", "enum": [s.value for s in ExecutionStatus]},
            "metadata": _HSTORE,
            "status_history": {
                "type": "array",
                "items": _obj(
                    {"status": {"type": "string", "enum": [s.value for s in ExecutionStatus]}, "at": _TS},
                    ["status", "at"],
                ),
            },
            "result": _ref("Result"),
            "outputs": _ref("Outputs"),
        },
        ["id", "runner_job_id", "status"],
    ),
    "Job": _obj(
        {
            **_TIMESTAMPS,
            "runner_id": _STR,
            "owner_id": _STR,
            "owner_type": _STR,
            "log_stream_id": _STR,
            "log_stream": _ref("JobLogStream"),
            "queue_timeout": _NS,
            "available_timeout": _NS,
            "execution_timeout": _NS,
            "overall_timeout": _NS,
            "max_executions": _INT,
            "status": {"type": "string", "enum": [s.value for s in JobStatus]},
            "status_description": _STR,
            "type": _STR,
            "group": _STR,
            "operation": _STR,
            "executions": {"type": "array", "items": _ref("Execution")},
            "started_at": _TS,
            "finished_at": _TS,
            "metadata": _HSTORE,
            "execution_count": _INT,
            "final_runner_job_execution_id": _STR,
            "outputs_json": _B64,
            "execution_time": _NS,
            "outputs": {},
        },
        ["id", "runner_id", "log_stream_id", "log_stream", "status", "type", "group"],
    ),
    "LogRecord": _obj(
        {
            "seq": _INT,
            "timestamp": _TS,
            "time_unix_nano": _INT,
            "observed_time_unix_nano": _INT,
            "severity_text": _STR,
            "severity_number": _INT,
            "body": _STR,
            "attributes": {"type": "object"},
            "resource_attributes": {"type": "object"},
            "scope_name": _STR,
            "trace_id": _STR,
            "span_id": _STR,
        },
        ["seq", "timestamp", "severity_text", "severity_number", "body", "attributes", "resource_attributes"],
    ),
    "TerraformLockInfo": {
        "type": "object",
        "description": "terraform's LockInfo (keys matched case-insensitively)",
        "properties": {
            "ID": _STR,
            "Operation": _STR,
            "Info": _STR,
            "Who": _STR,
            "Version": {},
            "Created": _STR,
            "Path": _STR,
        },
    },
    "TerraformWorkspaceLock": _obj(
        {
            **_TIMESTAMPS,
            "workspace_id": _STR,
            "runner_job_id": _STR,
            "released_at": _TS,
            "lock": _obj(
                {k: _STR for k in ("id", "operation", "info", "who", "created", "path")} | {"version": {}}
            ),
        },
        ["id", "workspace_id", "lock"],
    ),
    "TerraformWorkspace": _obj(
        {
            **_TIMESTAMPS,
            "owner_id": _STR,
            "owner_type": _STR,
            "lock_history": {"type": ["array", "null"], "items": _ref("TerraformWorkspaceLock")},
        },
        ["id", "lock_history"],
    ),
    "TerraformStateRevision": _obj(
        {
            "id": _STR,
            "created_at": _TS,
            "org_id": _STR,
            "terraform_workspace_id": _STR,
            "runner_job_id": _STR,
            "revision": _INT,
            "size": _INT,
        },
        ["id", "revision"],
    ),
    "Message": _obj({"message": _STR}, ["message"]),
    "Org": _obj({"id": _STR, "name": _STR, "sandbox_mode": _BOOL}, ["id"]),
    "Status": _obj({"status": _STR}, ["status"]),
    "Version": _obj({"version": _STR, "git_ref": _STR}, ["version"]),
}

REQUEST_MODELS: list[type[BaseModel]] = [
    bodies.HeartBeatBody,
    bodies.HealthCheckBody,
    bodies.JobStatusBody,
    bodies.ExecutionStatusBody,
    bodies.ResultBody,
    bodies.OutputsBody,
    bodies.SubmitJobBody,
    bodies.SettingsPatchBody,
    bodies.CreateWorkspaceBody,
    bodies.CreateRunnerBody,
]

_ERROR_TEXT = {
    400: "invalid request (malformed JSON, wrong types, bad parameters)",
    401: "unknown or expired token",
    403: "the token may not do this",
    404: "unknown id",
    409: "conflict with the current state",
    413: "request body too large",
    415: "unsupported media type",
    423: "terraform workspace locked (body: the holder's lock info)",
}


def _json(schema: S) -> S:
    return {"application/json": {"schema": schema}}


def _path_param(name: str) -> S:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: S, description: str = "") -> S:
    out: S = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        out["description"] = description
    return out


def _operation(
    op_id: str,
    summary: str,
    ok: dict[int, S | None],
    *,
    params: list[S] | None = None,
    body: S | None = None,
    errors: tuple[int, ...] = (400, 401, 403, 404),
    public: bool = False,
) -> S:
    responses: S = {}
    for code, content in ok.items():
        responses[str(code)] = {"description": "success"} | ({"content": content} if content else {})
    for code in errors:
        if code == 423:
            responses["423"] = {"description": _ERROR_TEXT[423], "content": _json(_ref("TerraformLockInfo"))}
        else:
            responses[str(code)] = {"description": _ERROR_TEXT[code], "content": _json(_ref("Error"))}
    out: S = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = body
    if public:
        out["security"] = []
    return out


def _json_body(model: str, *, required: bool = True) -> S:
    return {"required": required, "content": _json(_ref(model))}


_TEXT: S = {"text/plain": {"schema": {"type": "string"}}}
_WRITE = (400, 401, 403, 404, 413)
_STATE_Q = [
    _query("workspace_id", {"type": "string"}, "terraform workspace id (required)"),
    _query("job_id", {"type": "string"}),
]


def _operations() -> dict[str, dict[str, S]]:
    rid, jid, eid, wid, lid = (
        _path_param("runner_id"),
        _path_param("job_id"),
        _path_param("execution_id"),
        _path_param("workspace_id"),
        _path_param("log_stream_id"),
    )
    groups = [g.value for g in JobGroup]
    statuses = [*(s.value for s in JobStatus), "any"]
    jobs_params = [
        rid,
        _query("group", {"type": "string", "enum": groups}),
        _query(
            "status", {"type": "string", "enum": statuses}, "default available; any/unknown/empty: no filter"
        ),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
        _query("offset", {"type": "integer", "minimum": 0}),
        _query("page", {"type": "integer", "minimum": 0}),
        _query(
            "wait",
            {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,3})?(ms|s)?$"},
            "long-poll: 20, 2.5, 20s, 500ms",
        ),
    ]
    jobs = _json({"type": "array", "items": _ref("Job")})
    executions_path = "/v1/runner-jobs/{job_id}/executions/{execution_id}"
    return {
        "/livez": {
            "get": _operation("livez", "liveness", {200: _json(_ref("Status"))}, errors=(), public=True)
        },
        "/readyz": {
            "get": _operation("readyz", "readiness", {200: _json(_ref("Status"))}, errors=(), public=True)
        },
        "/version": {
            "get": _operation("version", "version", {200: _json(_ref("Version"))}, errors=(), public=True)
        },
        "/v1/runners": {
            "get": _operation(
                "listRunners",
                "list runners (admin)",
                {200: _json({"type": "array", "items": _ref("Runner")})},
            ),
            "post": _operation(
                "createRunner",
                "create a runner with its own token (admin)",
                {201: _json(_ref("Runner"))},
                body=_json_body("CreateRunnerBody", required=False),
                errors=_WRITE,
            ),
        },
        "/v1/runners/{runner_id}": {
            "get": _operation("getRunner", "get runner", {200: _json(_ref("Runner"))}, params=[rid])
        },
        "/v1/runners/{runner_id}/settings": {
            "get": _operation(
                "getRunnerSettings", "runner settings", {200: _json(_ref("Settings"))}, params=[rid]
            ),
            "patch": _operation(
                "patchRunnerSettings",
                "change settings live (admin)",
                {200: _json(_ref("Settings"))},
                params=[rid],
                body=_json_body("SettingsPatchBody"),
                errors=_WRITE,
            ),
        },
        "/v1/runners/{runner_id}/heart-beats": {
            "post": _operation(
                "createHeartBeat",
                "heartbeat",
                {201: _json(_ref("HeartBeat"))},
                params=[rid],
                body=_json_body("HeartBeatBody"),
                errors=(*_WRITE, 409),  # 409: another process of this runner is alive (instance_id)
            )
        },
        "/v1/runners/{runner_id}/heart-beats/latest": {
            "get": _operation(
                "latestHeartBeat", "newest heartbeat", {200: _json(_ref("HeartBeat"))}, params=[rid]
            )
        },
        "/v1/runners/{runner_id}/health-checks": {
            "post": _operation(
                "createHealthCheck",
                "health check",
                {201: _json(_ref("HealthCheck"))},
                params=[rid],
                body=_json_body("HealthCheckBody", required=False),
                errors=_WRITE,
            )
        },
        "/v1/runners/{runner_id}/jobs": {
            "get": _operation(
                "listRunnerJobs",
                "jobs of a runner, oldest first (long-poll with wait)",
                {200: jobs},
                params=jobs_params,
            ),
            "post": _operation(
                "submitJob",
                "submit a job (admin)",
                {201: _json(_ref("Job"))},
                params=[rid],
                body=_json_body("SubmitJobBody"),
                errors=_WRITE,
            ),
        },
        "/v1/runners/{runner_id}/jobs/{job_id}": {
            "get": _operation(
                "getRunnerJobV2", "get a job of a runner", {200: _json(_ref("Job"))}, params=[rid, jid]
            )
        },
        "/v1/runners/{runner_id}/jobs/{job_id}/plan": {
            "get": _operation(
                "getRunnerJobPlanV2", "job plan (JSON as text)", {200: _TEXT}, params=[rid, jid]
            )
        },
        "/v1/runners/{runner_id}/traces": {
            "post": _operation(
                "writeTraces",
                "OTLP traces (dropped)",
                {200: _json(_STR)},
                params=[rid],
                body={"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
                errors=_WRITE,
            )
        },
        "/v1/runners/{runner_id}/metrics": {
            "post": _operation(
                "writeMetrics",
                "OTLP metrics (dropped)",
                {201: _json(_STR)},
                params=[rid],
                body={"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
                errors=_WRITE,
            )
        },
        "/v1/orgs/current": {
            "get": _operation("getCurrentOrg", "the caller's org", {200: _json(_ref("Org"))})
        },
        **_reference_operations(jid),
        "/v1/runner-jobs/{job_id}": {
            "get": _operation("getRunnerJob", "get a job", {200: _json(_ref("Job"))}, params=[jid]),
            "patch": _operation(
                "updateRunnerJob",
                "set job status (deprecated; shut-down jobs)",
                {200: _json({"type": "object"})},
                params=[jid],
                body=_json_body("JobStatusBody"),
                errors=(*_WRITE, 409),
            ),
        },
        "/v1/runner-jobs/{job_id}/plan": {
            "get": _operation("getRunnerJobPlan", "job plan (JSON as text)", {200: _TEXT}, params=[jid])
        },
        "/v1/runner-jobs/{job_id}/cancel": {
            "post": _operation(
                "cancelRunnerJob",
                "cancel a job (admin)",
                {200: _json(_ref("Job"))},
                params=[jid],
                body={"required": False, "content": _json({"type": "object"})},
                errors=(*_WRITE, 409),
            )
        },
        "/v1/runner-jobs/{job_id}/executions": {
            "get": _operation(
                "listExecutions",
                "executions, newest first",
                {200: _json({"type": "array", "items": _ref("Execution")})},
                params=[jid],
            ),
            "post": _operation(
                "createExecution",
                "claim the job (atomic; 409 unless available)",
                {201: _json(_ref("Execution"))},
                params=[jid],
                body={"required": False, "content": _json({"type": "object"})},
                errors=(*_WRITE, 409),
            ),
        },
        executions_path: {
            "get": _operation(
                "getExecution",
                "one execution with result and outputs",
                {200: _json(_ref("Execution"))},
                params=[jid, eid],
            ),
            "patch": _operation(
                "updateExecution",
                "execution status (legal transitions only)",
                {200: _json(_ref("Execution"))},
                params=[jid, eid],
                body=_json_body("ExecutionStatusBody"),
                errors=(*_WRITE, 409),
            ),
        },
        executions_path + "/result": {
            "post": _operation(
                "createExecutionResult",
                "store the result (201 null)",
                {201: _json({"type": "null"})},
                params=[jid, eid],
                body=_json_body("ResultBody"),
                errors=_WRITE,
            ),
            "get": _operation(
                "getExecutionResult", "the stored result", {200: _json(_ref("Result"))}, params=[jid, eid]
            ),
        },
        executions_path + "/outputs": {
            "post": _operation(
                "createExecutionOutputs",
                "store outputs (second POST: 400 duplicate key)",
                {201: _json(_ref("Outputs"))},
                params=[jid, eid],
                body=_json_body("OutputsBody"),
                errors=_WRITE,
            )
        },
        "/v1/log-streams/{log_stream_id}": {
            "get": _operation("getLogStream", "log stream", {200: _json(_ref("LogStream"))}, params=[lid])
        },
        "/v1/log-streams/{log_stream_id}/logs": {
            "post": _operation(
                "writeLogs",
                "OTLP/HTTP protobuf ExportLogsServiceRequest",
                {201: _json(_STR)},
                params=[lid],
                body={
                    "required": True,
                    "content": {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}}},
                },
                errors=(*_WRITE, 415),
            ),
            "get": _operation(
                "readLogs",
                "records in order from offset",
                {200: _json({"type": "array", "items": _ref("LogRecord")})},
                params=[
                    lid,
                    _query("offset", {"type": "integer", "minimum": 0}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}),
                ],
            ),
        },
        "/v1/terraform-backend": {
            "get": _operation(
                "getTerraformState",
                "latest state (204 when none)",
                {200: {"application/json": {"schema": {}}}, 204: None},
                params=_STATE_Q,
            ),
            "post": _operation(
                "updateTerraformState",
                "write a state revision",
                {200: _TEXT},
                params=[*_STATE_Q, _query("ID", {"type": "string"}, "the lock id terraform holds")],
                body={"required": True, "content": _json({"type": "object"})},
                errors=(*_WRITE, 409),
            ),
            "delete": _operation("deleteTerraformState", "no-op", {200: _TEXT}, params=_STATE_Q),
        },
        "/v1/terraform-workspaces": {
            "get": _operation(
                "listTerraformWorkspaces",
                "workspaces of the org",
                {200: _json({"type": "array", "items": _ref("TerraformWorkspace")})},
                params=[
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _query("offset", {"type": "integer", "minimum": 0}),
                ],
            ),
            "post": _operation(
                "createTerraformWorkspace",
                "create a workspace",
                {201: _json(_ref("TerraformWorkspace"))},
                body=_json_body("CreateWorkspaceBody", required=False),
                errors=(*_WRITE, 409),
            ),
        },
        "/v1/terraform-workspaces/{workspace_id}": {
            "get": _operation(
                "getTerraformWorkspace", "a workspace", {200: _json(_ref("TerraformWorkspace"))}, params=[wid]
            ),
            "delete": _operation(
                "deleteTerraformWorkspace",
                "delete a workspace",
                {200: _json(_ref("TerraformWorkspace"))},
                params=[wid],
            ),
        },
        "/v1/terraform-workspaces/{workspace_id}/lock": {
            "post": _operation(
                "lockTerraformWorkspace",
                "take the lock (423 + holder when held)",
                {200: _TEXT},
                params=[wid, _query("job_id", {"type": "string"})],
                body={"required": True, "content": _json(_ref("TerraformLockInfo"))},
                errors=(*_WRITE, 423),
            )
        },
        "/v1/terraform-workspaces/{workspace_id}/unlock": {
            "post": _operation(
                "unlockTerraformWorkspace",
                "release the lock (409 + holder on a wrong ID; empty body forces)",
                {200: _TEXT},
                params=[wid, _query("job_id", {"type": "string"})],
                body={"required": False, "content": _json(_ref("TerraformLockInfo"))},
                errors=(*_WRITE, 409),
            )
        },
        "/v1/terraform-workspaces/{workspace_id}/state-json": {
            "post": _operation(
                "updateTerraformStateJSON",
                "store terraform show -json",
                {200: _json(_ref("Message"))},
                params=[wid, _query("job_id", {"type": "string"})],
                body={"required": True, "content": _json({})},
                errors=_WRITE,
            ),
            "get": _operation(
                "getTerraformStateJSON",
                "the latest state JSON document, decoded (204 when none; ours)",
                {200: {"application/json": {"schema": {}}}, 204: None},
                params=[wid],
            ),
        },
        "/v1/terraform-workspaces/{workspace_id}/state-json/{state_id}": {
            "get": _operation(
                "getTerraformStateJSONByID",
                "one state JSON document, decoded from either wire form",
                {200: {"application/json": {"schema": {}}}},
                params=[wid, _path_param("state_id")],
            ),
        },
        "/v1/terraform-workspaces/{workspace_id}/state-json/{state_id}/resources": {
            "get": _operation(
                "getTerraformStateJSONResources",
                "the resource addresses of one state JSON document, sorted (null when none)",
                {200: _json({"type": ["array", "null"], "items": {"type": "string"}})},
                params=[wid, _path_param("state_id")],
            ),
        },
        "/v1/terraform-workspaces/{workspace_id}/states": {
            "delete": _operation(
                "deleteTerraformStateJSON", "delete state JSON", {200: _json(_ref("Message"))}, params=[wid]
            ),
            "get": _operation(
                "listTerraformStates",
                "state revisions, newest first",
                {200: _json({"type": "array", "items": _ref("TerraformStateRevision")})},
                params=[wid],
            ),
        },
    }


_OBJECT: S = {"type": "object"}
_RELEASE: S = {"type": "object", "description": "Helm release/v1.Release JSON plus labels"}
_RELEASES: S = {"type": "array", "items": _RELEASE}


def _reference_operations(jid: S) -> dict[str, dict[str, S]]:
    """App configs, helm release storage and action workflows (docs/runner-api.md §8, §9)."""
    app = [_path_param("app_id"), _path_param("app_config_id")]
    helm = [_path_param("helm_chart_id"), _path_param("namespace")]
    key = [*helm, _path_param("key")]
    install = _path_param("install_id")
    return {
        "/v1/apps/{app_id}/config/{app_config_id}": {
            "get": _operation("getAppConfig", "an app config, by its id", {200: _json(_OBJECT)}, params=app),
            "put": _operation(
                "putAppConfig",
                "store an app config (ours, admin)",
                {200: _json(_OBJECT)},
                params=app,
                body={"required": True, "content": _json(_OBJECT)},
                errors=_WRITE,
            ),
        },
        "/v1/runner-jobs/{job_id}/app-config": {
            "post": _operation(
                "attachAppConfig",
                "store an app config under the ids the job's plan names (ours, admin)",
                {201: _json(_OBJECT)},
                params=[jid],
                body={"required": True, "content": _json(_OBJECT)},
                errors=_WRITE,
            )
        },
        "/v1/helm-releases/{helm_chart_id}/releases/{namespace}": {
            "get": _operation(
                "getHelmReleases", "every release of the chart", {200: _json(_RELEASES)}, params=helm
            )
        },
        "/v1/helm-releases/{helm_chart_id}/releases/{namespace}/query": {
            "get": _operation(
                "queryHelmReleases",
                "releases matching the labels (404 when none)",
                {200: _json(_RELEASES)},
                params=[
                    *helm,
                    *(
                        _query(name, _STR)
                        for name in ("name", "owner", "status", "version", "createdAt", "modifiedAt")
                    ),
                ],
            )
        },
        "/v1/helm-releases/{helm_chart_id}/releases/{namespace}/{key}": {
            "get": _operation("getHelmRelease", "one release", {200: _json(_RELEASE)}, params=key),
            "post": _operation(
                "createHelmRelease",
                "store a release (409 when it exists)",
                {201: _json(_OBJECT)},
                params=key,
                body={"required": True, "content": _json(_RELEASE)},
                errors=(*_WRITE, 409),
            ),
            "put": _operation(
                "updateHelmRelease",
                "replace a release (404 when missing)",
                {200: _json({"type": "null"})},
                params=key,
                body={"required": True, "content": _json(_RELEASE)},
                errors=_WRITE,
            ),
            "delete": _operation(
                "deleteHelmRelease", "delete a release", {200: _json({"type": "null"})}, params=key
            ),
        },
        "/v1/installs/{install_id}/action-workflows/runs": {
            "post": _operation(
                "createInstallActionWorkflowRun",
                "a run of a config, one pending step per config step (ours, admin)",
                {201: _json(_OBJECT)},
                params=[install],
                body={"required": True, "content": _json(_OBJECT)},
                errors=_WRITE,
            )
        },
        "/v1/installs/{install_id}/action-workflows/runs/{run_id}": {
            "get": _operation(
                "getInstallActionWorkflowRun",
                "a run with its steps and config",
                {200: _json(_OBJECT)},
                params=[install, _path_param("run_id")],
            )
        },
        "/v1/action-workflows/configs": {
            "post": _operation(
                "createActionWorkflowConfig",
                "an action workflow config (ours, admin)",
                {201: _json(_OBJECT)},
                body={"required": True, "content": _json(_OBJECT)},
                errors=_WRITE,
            )
        },
        "/v1/action-workflows/configs/{config_id}": {
            "get": _operation(
                "getActionWorkflowConfig",
                "an action workflow config (timeout in ns)",
                {200: _json(_OBJECT)},
                params=[_path_param("config_id")],
            )
        },
        "/v1/installs/{install_id}/action-workflow-runs/{workflow_run_id}/steps/{step_id}": {
            "put": _operation(
                "updateInstallActionWorkflowRunStep",
                "a step's status and duration (found by step id alone)",
                {200: _json(_OBJECT)},
                params=[install, _path_param("workflow_run_id"), _path_param("step_id")],
                body={"required": True, "content": _json(_OBJECT)},
                errors=_WRITE,
            )
        },
    }


def _request_schemas() -> dict[str, S]:
    out: dict[str, S] = {}
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def openapi_document(version: str) -> S:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "byoc-runner embedded control plane",
            "version": version,
            "description": "The runner API (docs/runner-api.md) and an operator API, over SQLite.",
        },
        "security": [{"bearerAuth": []}, {"tokenQuery": []}],
        "paths": _operations(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
            },
            "schemas": {**RESPONSE_SCHEMAS, **_request_schemas()},
        },
    }
