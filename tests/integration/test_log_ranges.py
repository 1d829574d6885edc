"""Log ranges stored once (docs/runner-api.md §5.7, issue 11): ``X-Byoc-Log-Range``.

While the control plane is stopped (SIGSTOP) the kernel still accepts the runner's log POST;
the runner times out and resends, and on SIGCONT both requests are processed. The range header
lets the control plane store each record once and in order. These tests post to the real
embedded control plane over 127.0.0.1, and check the runner side numbers its frames through
retries, splits and the spool.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runner.logs.export import RANGE_HEADER
from runner.logs.otlp import INFO, encode_record, export_request, resource_bytes
from runner.logs.spool import SpoolFile, SpoolHeader
from runner.redact import Redactor
from tests.integration.test_log_pipeline import control_plane, open_job, pipeline, stored_logs, submit_job

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def frames(numbers: Sequence[int]) -> list[bytes]:
    return [encode_record(1_700_000_000_000_000_000 + n, INFO, f"line {n}", b"") for n in numbers]


def body(numbers: Sequence[int]) -> bytes:
    return export_request(resource_bytes({"service.name": "runner"}), frames(numbers))


async def post(
    client: httpx.AsyncClient, url: str, token: str, numbers: Sequence[int], log_range: str | None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-protobuf"}
    if log_range is not None:
        headers[RANGE_HEADER] = log_range
    return await client.post(url, content=body(numbers), headers=headers)


async def test_a_range_is_stored_once_and_a_stale_one_after_a_newer_one_not_at_all(tmp_path: Path) -> None:
    async with control_plane(tmp_path / "cp") as cp:
        job = await submit_job(cp)
        url = f"{cp.url}/v1/log-streams/{job['log_stream_id']}/logs"
        token = cp.credentials.runner_token
        async with httpx.AsyncClient(timeout=10) as client:
            answers: list[Any] = []
            for numbers, log_range in [
                (range(1, 11), "w1:1-10"),
                (range(1, 11), "w1:1-10"),  # the resend of a request the server buffered
                (range(11, 21), "w1:11-20"),
                (range(1, 11), "w1:1-10"),  # stale: arrives after a newer range
                (range(6, 16), "w1:6-15"),  # re-batched from the spool: all already stored
                (range(16, 26), "w1:16-25"),  # overlaps the stored end: only 21..25 are new
                (range(31, 36), "w1:31-35"),  # a gap (records lost on the runner) is fine
                (range(1, 4), "w2:1-3"),  # another writer (a new stream) has its own numbers
                (range(90, 93), None),  # no header: stored as sent
                (range(90, 93), "w1:bogus"),  # malformed: stored as sent, never refused
            ]:
                response = await post(client, url, token, numbers, log_range)
                answers.append(response.status_code)
        records = await stored_logs(cp, job["log_stream_id"])

    assert answers == [201] * 10
    bodies = [r["body"] for r in records]
    expected = [f"line {n}" for n in [*range(1, 26), *range(31, 36), 1, 2, 3, 90, 91, 92, 90, 91, 92]]
    assert bodies == expected


async def test_concurrent_resends_of_one_range_store_it_once(tmp_path: Path) -> None:
    """What SIGCONT delivers: the buffered request and its resend, processed together."""
    async with control_plane(tmp_path / "cp") as cp:
        job = await submit_job(cp)
        url = f"{cp.url}/v1/log-streams/{job['log_stream_id']}/logs"
        token = cp.credentials.runner_token
        statuses: list[int] = []
        async with httpx.AsyncClient(timeout=10) as client:

            async def one() -> None:
                statuses.append((await post(client, url, token, range(1, 401), "w1:1-400")).status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(one)
        records = await stored_logs(cp, job["log_stream_id"])

    assert statuses == [201] * 4
    assert [r["body"] for r in records] == [f"line {n}" for n in range(1, 401)]


def test_the_spool_numbers_its_batches_and_never_takes_across_a_gap(tmp_path: Path) -> None:
    spool = SpoolFile.create(tmp_path / "k.1.spool", SpoolHeader(spool_key="k", log_stream_id="ls"))
    spool.append(frames(range(1, 6)), 1)
    spool.append(frames(range(6, 9)), 6)  # contiguous: one run
    spool.append(frames(range(20, 23)), 20)  # 9..19 lost: a new run
    spool.flush()
    taken, start, _ = spool.take(4, 1 << 20)
    assert len(taken) == 4
    assert spool.frame_at(start) == 1
    taken, start, _ = spool.take(100, 1 << 20)
    assert len(taken) == 4
    assert spool.frame_at(start) == 5
    taken, start, _ = spool.take(100, 1 << 20)
    assert len(taken) == 3
    assert spool.frame_at(start) == 20
    spool.rewind()  # an outage: everything is taken again, with the same numbers
    taken, start, _ = spool.take(2, 1 << 20)
    assert spool.frame_at(start) == 1
    spool.commit(_end(start, taken), 2)
    spool.rewind()
    taken, start, _ = spool.take(100, 1 << 20)
    assert len(taken) == 6
    assert spool.frame_at(start) == 3
    spool.close()
    adopted = SpoolFile.open_existing(tmp_path / "k.1.spool")  # another process: numbers unknown
    taken, start, _ = adopted.take(100, 1 << 20)
    assert taken
    assert adopted.frame_at(start) == 0
    adopted.close()


def _end(start: int, taken: list[bytes]) -> int:
    return start + sum(len(f) for f in taken)


async def test_a_batch_the_server_stored_but_answered_too_late_is_not_stored_twice(tmp_path: Path) -> None:
    """The SIGSTOP case in one process: a proxy forwards the first log POST at once (the server
    stores it) but holds its answer past the runner's ``post_timeout``; the runner spools and
    resends the batch, and the control plane skips the range it already has."""
    async with control_plane(tmp_path / "cp") as cp:
        creds = cp.credentials
        job = await submit_job(cp)
        upstream_port = int(cp.url.rsplit(":", 1)[1].split("/")[0])
        held = {"connections": 0}

        async def pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream, delay: float) -> None:
            try:
                async for chunk in source:
                    if delay:
                        await anyio.sleep(delay)
                        delay = 0
                    await sink.send(chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            finally:
                await sink.aclose()

        async def handle(client: anyio.abc.SocketStream) -> None:
            held["connections"] += 1
            delay = 2.0 if held["connections"] == 1 else 0.0
            async with (
                client,
                await anyio.connect_tcp("127.0.0.1", upstream_port) as upstream,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(pipe, client, upstream, 0.0)
                tg.start_soon(pipe, upstream, client, delay)

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        proxy_port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as proxy:
            proxy.start_soon(listener.serve, handle)
            async with pipeline(
                f"http://127.0.0.1:{proxy_port}",
                creds.runner_id,
                creds.runner_token,
                tmp_path / "spool",
                post_timeout=0.5,
                batch_max_records=50,
            ) as logs:
                stream = open_job(logs, job, write_token=None, secrets=Redactor())
                for n in range(1, 201):
                    stream.logger.info(f"line {n}")
                report = await stream.close(deadline=anyio.current_time() + 30)
            proxy.cancel_scope.cancel()
        await anyio.sleep(2.5)  # the held answer's request was stored long ago; be sure
        records = await stored_logs(cp, job["log_stream_id"])

    assert held["connections"] >= 2, "the runner never resent"
    assert report.delivered == 200
    assert report.lost == 0
    assert [r["body"] for r in records] == [f"line {n}" for n in range(1, 201)]
