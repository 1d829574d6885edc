"""Unit tests of the control plane's pieces: wire helpers, ids, OTLP decoding, submission rules,
the notifier, and the store's state machine run directly (in memory, no HTTP)."""

from __future__ import annotations

import base64
import gzip
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from controlplane.bodies import SubmitJobBody
from controlplane.db import Database
from controlplane.errors import BadRequest, Conflict, Locked, NotFound
from controlplane.ids import looks_like_id, new_id
from controlplane.notify import JobNotifier
from controlplane.options import Credentials
from controlplane.otlp import OTLPDecodeError, decode_logs, decompress
from controlplane.routes_operator import job_spec, plan_workspace_id
from controlplane.routes_terraform import lock_info
from controlplane.schema import MIGRATIONS
from controlplane.store import Store
from controlplane.wire import b64url_decode, parse_wait, rfc3339

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20", 20.0), ("2.5", 2.5), ("20s", 20.0), ("500ms", 0.5), ("1m30s", 90.0), ("1h", 3600.0), ("0", 0.0)],
)
def test_parse_wait_accepts_numbers_and_go_durations(text: str, seconds: float) -> None:
    assert parse_wait(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "-1", "abc", "5x", "nan", "inf", "s", "1s2", "--1s"])
def test_parse_wait_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_wait(text)


def test_rfc3339_has_microseconds_and_z() -> None:
    assert rfc3339(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456Z"
    assert rfc3339(None) is None


def test_b64url_decode_tolerates_missing_padding_and_refuses_std_alphabet() -> None:
    raw = b"\xfb\xff\xfe-data"
    encoded = base64.urlsafe_b64encode(raw).decode()
    assert b64url_decode(encoded) == raw
    assert b64url_decode(encoded.rstrip("=")) == raw
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(base64.b64encode(raw).decode())  # '+' and '/' are not base64url


def test_ids_have_the_contract_shape() -> None:
    ids = {new_id("job") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(looks_like_id(i) and i.startswith("job") for i in ids)
    with pytest.raises(ValueError, match="3 characters"):
        new_id("jobs")


def test_credentials_file_is_private(tmp_path: Path) -> None:
    creds = Credentials("http://127.0.0.1:1", "org", "run", "tokA", "tokR")
    path = tmp_path / "sub" / "credentials.json"
    creds.write(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Credentials.load(path) == creds


def _otlp(n: int) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    attrs = [
        KeyValue(key="s", value=AnyValue(string_value="x")),
        KeyValue(key="i", value=AnyValue(int_value=7)),
        KeyValue(key="b", value=AnyValue(bool_value=True)),
        KeyValue(key="d", value=AnyValue(double_value=1.5)),
        KeyValue(key="a", value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))),
        KeyValue(
            key="m",
            value=AnyValue(
                kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(string_value="v"))])
            ),
        ),
        KeyValue(key="y", value=AnyValue(bytes_value=b"\x00\x01")),
    ]
    records = [
        LogRecord(body=AnyValue(string_value=f"r{i}"), attributes=attrs, severity_text="DEBUG")
        for i in range(n)
    ]
    records.append(
        LogRecord(
            body=AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(int_value=1))]))
        )
    )
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="runner"))])
    message = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    )
    return bytes(message.SerializeToString())


def test_decode_logs_keeps_types_order_and_resource() -> None:
    records = decode_logs(_otlp(3))
    assert [r.body for r in records] == ["r0", "r1", "r2", '{"k":1}']
    assert records[0].attributes == '{"s":"x","i":7,"b":true,"d":1.5,"a":[1],"m":{"k":"v"},"y":"AAE="}'
    assert records[0].resource_attributes == '{"service.name":"runner"}'
    assert records[0].severity_text == "DEBUG"
    with pytest.raises(OTLPDecodeError):
        decode_logs(b"\xff\xff\xff\xff")


def test_decode_logs_attribute_sets_interleaved_and_changing() -> None:
    """The attribute cache (the previous record's set, then a cache by content) never hands one
    record another's attributes: stdout/stderr interleaved, a set with one value changed, none."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

    def kv(stream: str, step: int) -> list[KeyValue]:
        return [
            KeyValue(key="stream", value=AnyValue(string_value=stream)),
            KeyValue(key="step", value=AnyValue(int_value=step)),
        ]

    sets = [
        kv("stdout", 1),
        kv("stderr", 1),
        kv("stdout", 1),
        [],
        kv("stdout", 2),
        kv("stdout", 2),
        kv("stderr", 1),
    ]
    message = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord(attributes=a) for a in sets])])
        ]
    )
    decoded = decode_logs(message.SerializeToString())
    assert [r.attributes for r in decoded] == [
        '{"stream":"stdout","step":1}',
        '{"stream":"stderr","step":1}',
        '{"stream":"stdout","step":1}',
        "{}",
        '{"stream":"stdout","step":2}',
        '{"stream":"stdout","step":2}',
        '{"stream":"stderr","step":1}',
    ]


def test_decode_logs_clamps_unsigned_times_to_int64() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

    record = LogRecord(time_unix_nano=2**64 - 1, observed_time_unix_nano=2**63)
    message = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])]
    )
    (decoded,) = decode_logs(message.SerializeToString())
    assert decoded.time_unix_nano == 2**63 - 1
    assert decoded.observed_time_unix_nano == 2**63 - 1
    assert decoded.body == ""


def test_decompress_gzip_deflate_and_bombs() -> None:
    import zlib

    data = b"x" * 1000
    assert decompress(gzip.compress(data), "gzip", 10_000) == data
    assert decompress(zlib.compress(data), "deflate", 10_000) == data
    assert decompress(data, None, 10_000) == data
    with pytest.raises(OverflowError):
        decompress(gzip.compress(b"\x00" * 100_000), "gzip", 1000)
    with pytest.raises(OTLPDecodeError):
        decompress(b"not gzip", "gzip", 1000)
    with pytest.raises(OTLPDecodeError):
        decompress(data, "br", 1000)


def test_lock_info_folds_keys_and_checks_types() -> None:
    assert lock_info({"id": "a", "OPERATION": "op", "version": 1, "extra": 2}) == {
        "ID": "a",
        "Operation": "op",
        "Version": 1,
    }
    with pytest.raises(BadRequest):
        lock_info([1])
    with pytest.raises(BadRequest):
        lock_info({"ID": 5})


@pytest.mark.parametrize(
    ("plan", "workspace"),
    [
        ({"terraform_backend": {"WorkspaceID": "tfw1"}}, "tfw1"),
        ({"terraform": {"Terraform_Backend": {"workspaceid": "tfw2"}}}, "tfw2"),
        ({"TERRAFORM": {"terraform_backend": {"WorkspaceID": ""}}}, None),
        ({"terraform": None}, None),
        ({}, None),
    ],
)
def test_plan_workspace_id_is_found_case_insensitively(plan: dict[str, Any], workspace: str | None) -> None:
    assert plan_workspace_id(plan) == workspace


def test_job_spec_defaults_follow_the_contract() -> None:
    spec = job_spec(SubmitJobBody.model_validate({"type": "oci-sync"}), "run1")
    assert spec.group == "sync"
    assert spec.operation == "exec"
    assert spec.execution_timeout == 15 * 60 * 10**9
    assert spec.available_timeout == 30 * 10**9
    assert spec.max_executions == 1
    assert spec.owner_type == "install_deploys"
    assert spec.owner_id.startswith("dpl")
    health = job_spec(SubmitJobBody.model_validate({"type": "health-check"}), "run1")
    assert health.group == "operations"
    assert health.owner_id == "run1"
    with pytest.raises(BadRequest, match="unknown job type"):
        job_spec(SubmitJobBody.model_validate({"type": "mystery"}), "run1")
    with pytest.raises(BadRequest, match="invalid job type"):
        job_spec(SubmitJobBody.model_validate({"type": "Bad Type"}), "run1")
    with pytest.raises(BadRequest, match="workspace"):
        job_spec(
            SubmitJobBody.model_validate(
                {"type": "noop", "plan": {"terraform_backend": {"WorkspaceID": "a/b"}}}
            ),
            "r",
        )


def test_notifier_wakes_group_and_any_waiters_and_releases_on_close() -> None:
    async def main() -> None:
        notifier = JobNotifier()
        build, anything, other = (
            notifier.event("r1", "build"),
            notifier.event("r1", ""),
            notifier.event("r2", "build"),
        )
        notifier.notify("r1", "build")
        assert build.is_set()
        assert anything.is_set()
        assert not other.is_set()
        assert not notifier.event("r1", "build").is_set()  # a fresh event after a wake-up
        notifier.close()
        assert other.is_set()
        assert notifier.event("r3", "x").is_set()

    anyio.run(main)


# ------------------------------------------------------------------ the store, directly


async def _store_with_job(**overrides: Any) -> tuple[Store, str, str]:
    store = Store.open(None)
    creds, created = await store.bootstrap("http://x", 5 * 10**9)
    assert created
    body = {"type": "noop", **overrides}
    row = await store.submit_job(
        creds.runner_id,
        job_spec(SubmitJobBody.model_validate(body), creds.runner_id),
        auto_create_workspaces=True,
    )
    return store, creds.runner_id, row["id"]


def test_store_claim_is_atomic_among_concurrent_tasks() -> None:
    async def main() -> None:
        store, runner_id, job_id = await _store_with_job()
        outcomes: list[str] = []

        async def claim() -> None:
            try:
                await store.claim(job_id, None, runner_scope=runner_id)
                outcomes.append("won")
            except Conflict:
                outcomes.append("conflict")

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(claim)
        assert sorted(outcomes) == ["conflict"] * 19 + ["won"]
        store.close()

    anyio.run(main)


def test_store_checks_transitions_and_scopes() -> None:
    async def main() -> None:
        store, runner_id, job_id = await _store_with_job()
        execution = await store.claim(job_id, "runner:1", runner_scope=None)
        with pytest.raises(NotFound):
            await store.update_execution(job_id, execution["id"], "in-progress", runner_scope="run-other")
        with pytest.raises(Conflict, match="pending -> cleaning-up"):
            await store.update_execution(job_id, execution["id"], "cleaning-up", runner_scope=runner_id)
        await store.update_execution(job_id, execution["id"], "in-progress", runner_scope=runner_id)
        await store.update_execution(job_id, execution["id"], "finished", runner_scope=runner_id)
        job = await store.get_job(job_id, runner_scope=runner_id)
        assert job["status"] == "finished"
        with pytest.raises(NotFound):
            await store.get_job(job_id, runner_scope="run-other")
        store.close()

    anyio.run(main)


def test_store_terraform_lock_conflict_carries_the_holder() -> None:
    async def main() -> None:
        store, _runner_id, _job_id = await _store_with_job()
        creds, _ = await store.bootstrap("http://x", 1)
        await store.create_workspace(creds.org_id, "tfw1", "", "")
        await store.lock("tfw1", creds.org_id, {"ID": "a", "Who": "me"}, job_id=None)
        with pytest.raises(Locked) as locked:
            await store.lock("tfw1", creds.org_id, {"ID": "b"}, job_id=None)
        assert locked.value.payload() == {"ID": "a", "Who": "me"}
        with pytest.raises(NotFound):
            await store.lock("tfw1", "org-other", {"ID": "b"}, job_id=None)
        store.close()

    anyio.run(main)


def test_database_migrations_run_once_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "cp.db"
    first = Database(path)
    assert first.schema_version() == len(MIGRATIONS)
    first.conn.execute("INSERT INTO meta (key, value) VALUES ('probe', '1')")
    first.close()
    second = Database(path)
    assert second.schema_version() == len(MIGRATIONS)
    assert second.conn.execute("SELECT value FROM meta WHERE key = 'probe'").fetchone() == {"value": "1"}
    assert second.conn.execute("PRAGMA journal_mode").fetchone()["journal_mode"] == "wal"
    with pytest.raises(sqlite3.IntegrityError):
        second.conn.execute("INSERT INTO meta (key, value) VALUES ('probe', '2')")
    second.close()


def test_expired_and_unknown_tokens_have_no_principal() -> None:
    async def main() -> None:
        store = Store.open(None)
        creds, _ = await store.bootstrap("http://x", 10**9)
        assert (await store.principal(creds.admin_token)) is not None
        assert (await store.principal("tokunknown")) is None
        store.db.conn.execute(
            "INSERT INTO tokens (token, id, kind, org_id, runner_id, created_at, expires_at)"
            " VALUES ('tokexpired', 'tokx', 'runner', ?, ?, 0, 1)",
            (creds.org_id, creds.runner_id),
        )
        assert (await store.principal("tokexpired")) is None
        store.close()

    anyio.run(main)


@pytest.mark.integration
def test_serve_in_process_gives_url_credentials_store_and_shuts_down(tmp_path: Path) -> None:
    import httpx

    from controlplane.server import serve

    async def main() -> None:
        async with serve(tmp_path, quiet=True) as running:
            assert running.url.startswith("http://127.0.0.1:")
            assert running.credentials.api_url == running.url
            assert Credentials.load(tmp_path / "credentials.json") == running.credentials
            async with httpx.AsyncClient(base_url=running.url) as client:
                response = await client.get(
                    f"/v1/runners/{running.credentials.runner_id}",
                    headers={"Authorization": f"Bearer {running.credentials.runner_token}"},
                )
                assert response.status_code == 200
            assert (await running.store.job_status_counts()) == {}
            await running.shutdown()
            with pytest.raises(httpx.TransportError):
                async with httpx.AsyncClient(base_url=running.url) as client:
                    await client.get("/livez")

    anyio.run(main)


def test_an_unexpected_error_still_answers_the_error_shape() -> None:
    import httpx
    from starlette.requests import Request
    from starlette.routing import Route

    from controlplane.app import create_app

    async def boom(request: Request) -> Any:
        raise RuntimeError("unexpected")

    async def main() -> None:
        store = Store.open(None)
        app = create_app(store)
        app.router.routes.append(Route("/boom", boom))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            response = await client.get("/boom")
        assert response.status_code == 500
        expected = {"error": "internal error", "description": "RuntimeError", "user_error": False}
        assert response.json() == expected
        store.close()

    anyio.run(main)


def test_jobs_cli_finds_credentials_in_the_state_dir_or_its_controlplane_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane.cli import _target

    for name in ("RUNNER_API_URL", "RUNNER_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    inner = Credentials("http://127.0.0.1:1", "org", "runinner", "tokadmin", "tokrunner")
    inner.write(tmp_path / "controlplane" / "credentials.json")
    assert _target(None, None, tmp_path, None).runner_id == "runinner"
    monkeypatch.setenv("RUNNER_STATE_DIR", str(tmp_path))
    assert _target(None, None, None, None).token == "tokadmin"
    outer = Credentials("http://127.0.0.1:2", "org", "runouter", "tokadmin2", "tokrunner2")
    outer.write(tmp_path / "credentials.json")
    assert _target(None, None, tmp_path, None).runner_id == "runouter"  # an explicit dir: its own file first
    assert _target(None, None, None, None).runner_id == "runinner"  # default: controlplane/ first
    assert _target("http://elsewhere", "tokx", None, "runx").api == "http://elsewhere"


def test_checkpoint_runs_on_its_own_connection_while_a_call_holds_the_database(tmp_path: Path) -> None:
    """A WAL checkpoint no longer takes the connection's lock: it completes while a call is running
    (here: the lock held), folds every committed frame into the file, and closes with the store."""
    db = Database(tmp_path / "cp.db")
    db.conn.execute("CREATE TABLE t (x INTEGER)")
    db.conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(2000)])

    async def main() -> None:
        async with db._lock:  # a call in progress on the main connection
            with anyio.fail_after(10):
                await db.checkpoint()

    anyio.run(main)
    raw = sqlite3.connect(tmp_path / "cp.db")
    busy, frames, folded = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, frames == folded, frames > 0) == (0, True, True)
    assert raw.execute("SELECT count(*) FROM t").fetchone() == (2000,)
    raw.close()
    checkpointer = db._checkpointer
    assert checkpointer is not None
    db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        checkpointer.execute("SELECT 1")
