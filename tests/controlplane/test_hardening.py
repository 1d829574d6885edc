"""Control-plane hardening (issue 11, finding 5), against a real ``python -m controlplane``:

* tokens are stored as hashes and never printed; ``credentials.json`` (0600) has them, and a
  restart keeps them working; a database from before hashing is upgraded in place;
* a request line or headers over the limit answer 431 at once, with either HTTP parser;
* a gzip body that does not decompress completely answers 400 and stores nothing.
"""

from __future__ import annotations

import gzip
import socket
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from controlplane.options import CREDENTIALS_FILE, DATABASE_FILE, Credentials
from controlplane.store import Store
from tests.controlplane.test_contract import _otlp_body
from tests.support.controlplane import ControlPlaneProcess

pytestmark = pytest.mark.integration


def _state_bytes(state_dir: Path) -> bytes:
    """Every byte the control plane keeps, except the credentials file."""
    return b"".join(
        p.read_bytes() for p in sorted(state_dir.iterdir()) if p.is_file() and p.name != CREDENTIALS_FILE
    )


def test_tokens_are_hashed_never_printed_and_survive_a_restart(
    control_plane_factory: Callable[..., ControlPlaneProcess],
) -> None:
    cp = control_plane_factory()
    creds = cp.credentials
    path = cp.state_dir / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with cp.runner_http() as runner:
        assert runner.get(f"/v1/runners/{creds.runner_id}/settings").status_code == 200
    cp.operator().submit(type="noop")
    job = cp.operator().submit(type="noop")
    cp.stop()  # checkpoints the WAL into the database file
    stored = _state_bytes(cp.state_dir)
    for token in (creds.runner_token, creds.admin_token):
        assert token.encode() not in stored
    # A log stream's write token is part of its job (runner-api.md: the runner reads it from the
    # job), so it is kept as issued; its row in ``tokens`` is a hash like the others.
    assert job["log_stream"]["write_token"]
    assert creds.runner_token not in cp.log_tail(1000)
    assert creds.admin_token not in cp.log_tail(1000)
    assert str(path) in cp.log_tail(1000)

    cp.start()
    assert Credentials.load(path) == creds
    with cp.runner_http() as runner:
        assert runner.get(f"/v1/runners/{creds.runner_id}/settings").status_code == 200
    with cp.runner_http(token="tok" + "0" * 23) as stranger:
        assert stranger.get(f"/v1/runners/{creds.runner_id}/settings").status_code == 401


def test_lost_credentials_file_issues_new_tokens_and_revokes_the_old(
    control_plane_factory: Callable[..., ControlPlaneProcess],
) -> None:
    cp = control_plane_factory()
    old = cp.credentials
    cp.stop()
    (cp.state_dir / CREDENTIALS_FILE).unlink()
    cp._credentials = None
    cp.start()
    new = cp.credentials
    assert (new.org_id, new.runner_id) == (old.org_id, old.runner_id)
    assert new.runner_token != old.runner_token
    with cp.runner_http(token=old.runner_token) as runner:
        assert runner.get(f"/v1/runners/{old.runner_id}/settings").status_code == 401
    with cp.runner_http() as runner:
        assert runner.get(f"/v1/runners/{new.runner_id}/settings").status_code == 200


@pytest.mark.unit
def test_a_database_with_plain_tokens_is_upgraded_in_place(tmp_path: Path) -> None:
    async def main() -> Credentials:
        store = Store.open(tmp_path / DATABASE_FILE)
        creds, _ = await store.bootstrap("http://x", 10**9)
        # What an older version stored: plain tokens in ``tokens`` and in ``meta``.
        conn = store.db.conn
        conn.execute("DELETE FROM tokens")
        conn.execute(
            "INSERT INTO tokens (token, id, kind, org_id, created_at) VALUES (?, 'tok1', 'admin', ?, 0)",
            (creds.admin_token, creds.org_id),
        )
        conn.execute(
            "INSERT INTO tokens (token, id, kind, org_id, runner_id, created_at)"
            " VALUES (?, 'tok2', 'runner', ?, ?, 0)",
            (creds.runner_token, creds.org_id, creds.runner_id),
        )
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("admin_token", creds.admin_token), ("runner_token", creds.runner_token)],
        )
        store.close()

        store = Store.open(tmp_path / DATABASE_FILE)
        again, created = await store.bootstrap("http://x", 10**9, None)
        assert not created
        assert again == creds
        assert (await store.principal(creds.runner_token)) is not None
        rows = store.db.conn.execute("SELECT token FROM tokens").fetchall()
        assert all(row["token"].startswith("sha256:") for row in rows)
        keys = {row["key"] for row in store.db.conn.execute("SELECT key FROM meta")}
        assert not keys & {"admin_token", "runner_token"}
        store.close()
        return creds

    creds = anyio.run(main)
    raw = sqlite3.connect(tmp_path / DATABASE_FILE)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(DATABASE_FILE))
    assert creds.runner_token.encode() not in stored, "not even in a free page"
    assert creds.admin_token.encode() not in stored


def _send_head(url: str, head_prefix: bytes, filler: int, *, chunk: int = 64 * 1024) -> tuple[bytes, int]:
    """Send a request head of ``filler`` extra bytes in chunks; (first response bytes, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head_prefix)
        try:
            while sent < filler:
                n = min(chunk, filler - sent)
                sock.sendall(b"a" * n)
                sent += n
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = b""
        try:
            while not response.endswith(b"}") and len(response) < 4096:
                part = sock.recv(4096)
                if not part:
                    break
                response += part
        except ConnectionResetError:
            pass
    return response, sent


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_oversized_request_line_and_headers_answer_431(
    control_plane_factory: Callable[..., ControlPlaneProcess], http: str
) -> None:
    cp = control_plane_factory(extra_args=("--http", http))
    # A 128 MB header (as in the probe): refused long before it is all sent.
    response, sent = _send_head(cp.url, b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ", 128 * 1024 * 1024)
    assert response.startswith(b"HTTP/1.1 431"), response[:200]
    assert sent < 64 * 1024 * 1024
    # A head just over the limit in one piece, and an over-long request line.
    response, _ = _send_head(cp.url, b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ", 70 * 1024, chunk=10**6)
    assert response.startswith(b"HTTP/1.1 431"), response[:200]
    response, _ = _send_head(cp.url, b"GET /livez?q=", 200 * 1024, chunk=10**6)
    assert response.startswith(b"HTTP/1.1 431"), response[:200]
    # Ordinary requests are untouched, also with a few KB of headers.
    assert httpx.get(cp.url + "/livez", headers={"X-Fine": "a" * 8000}).status_code == 200


def test_a_truncated_gzip_log_body_answers_400_and_stores_nothing(
    control_plane_factory: Callable[..., ControlPlaneProcess],
) -> None:
    cp = control_plane_factory()
    job = cp.operator().submit(type="noop")
    url = f"/v1/log-streams/{job['log_stream_id']}/logs"
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    whole = gzip.compress(_otlp_body([f"record {i} " + "x" * 200 for i in range(50)]))
    with cp.runner_http() as runner:
        cut = runner.post(url, content=whole[: len(whole) // 2], headers=headers)
        assert cut.status_code == 400, cut.text
        assert "truncated" in cut.text
        assert cp.operator().logs(job["log_stream_id"]) == []
        assert runner.post(url, content=whole, headers=headers).status_code == 201
    time.sleep(0.05)
    assert len(cp.operator().logs(job["log_stream_id"])) == 50


@pytest.mark.unit
def test_a_heartbeat_from_another_live_instance_is_refused_and_changes_nothing() -> None:
    from controlplane.errors import Conflict

    async def main() -> None:
        store = Store.open(None)
        creds, _ = await store.bootstrap("http://x", 5 * 10**9)
        runner = creds.runner_id
        await store.heartbeat(runner, 100 * 10**9, "v", "p", 60 * 10**9, instance_id="insA")
        with pytest.raises(Conflict, match="already running in another process"):
            await store.heartbeat(runner, 10**9, "v", "p", 60 * 10**9, instance_id="insB")
        assert (await store.get_runner(runner))["instance_id"] == "insA"
        # The first instance goes silent for longer than two periods: a restart, accepted.
        store.db.conn.execute(
            "UPDATE runners SET last_heartbeat_at = ? WHERE id = ?", (time.time_ns() - 12 * 10**9, runner)
        )
        await store.heartbeat(runner, 10**9, "v", "p", 60 * 10**9, instance_id="insB")
        assert (await store.get_runner(runner))["instance_id"] == "insB"
        # A runner that sends no instance id (the reference runner) is never refused.
        await store.heartbeat(runner, 10**9, "v", "p", 60 * 10**9)
        store.close()

    anyio.run(main)
