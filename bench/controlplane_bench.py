"""Control plane throughput and long-poll latency, against a live server on loopback.

Starts ``python -m controlplane`` (a real process with a WAL database in a temp dir), then
drives it from this process with an async httpx client at a fixed concurrency:

* jobs list, claim and execution PATCH: requests per second;
* a whole noop job as a runner does it (list, claim, plan, 4 PATCHes, outputs, result, logs,
  job get): jobs per second and requests per second;
* long-poll wake-up: a poll is held, a job is submitted; time from the submit request being
  sent to the held poll's answer, p50/p99.

Bounded in count and time; prints figures and ratios against the targets (DESIGN.md §6).

    python bench/controlplane_bench.py [--concurrency 8] [--requests 2000] [--wakeups 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.controlplane import ControlPlaneProcess  # noqa: E402

TARGET_RPS = 800.0
TARGET_WAKE_P50_MS = 20.0
TARGET_WAKE_P99_MS = 100.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run_concurrently(count: int, concurrency: int, op: Callable[[int], Awaitable[None]]) -> float:
    """Run ``op(i)`` for i in range(count) with ``concurrency`` workers; returns seconds taken."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await op(index)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds a process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check(response: httpx.Response, *expected: int) -> httpx.Response:
    if response.status_code not in expected:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response


class Bench:
    def __init__(self, cp: ControlPlaneProcess, concurrency: int, requests: int, wakeups: int) -> None:
        self.cp = cp
        self.concurrency = concurrency
        self.requests = requests
        self.wakeups = wakeups
        self.rid = cp.runner_id
        limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
        self.runner = httpx.AsyncClient(
            base_url=cp.url, headers={"Authorization": f"Bearer {cp.runner_token}"}, limits=limits, timeout=30
        )
        self.admin = httpx.AsyncClient(
            base_url=cp.url, headers={"Authorization": f"Bearer {cp.admin_token}"}, limits=limits, timeout=30
        )
        self.results: dict[str, Any] = {}
        self.server_pid = cp.proc.pid if cp.proc else 0
        self._cpu_mark = 0.0
        self._client_mark = 0.0

    def mark(self) -> None:
        self._cpu_mark = cpu_seconds(self.server_pid)
        self._client_mark = time.process_time()

    def client_cpu(self) -> float:
        return time.process_time() - self._client_mark

    def server_cpu(self) -> float:
        return cpu_seconds(self.server_pid) - self._cpu_mark

    async def submit(self, job_type: str = "noop", **body: Any) -> dict[str, Any]:
        response = await self.admin.post(f"/v1/runners/{self.rid}/jobs", json={"type": job_type, **body})
        job: dict[str, Any] = check(response, 201).json()
        return job

    async def submit_many(self, count: int, job_type: str) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = [{}] * count

        async def one(i: int) -> None:
            jobs[i] = await self.submit(job_type, plan={"i": i}, available_timeout=3600 * 10**9)

        await run_concurrently(count, self.concurrency, one)
        return jobs

    def report(self, name: str, count: int, seconds: float) -> None:
        rps = count / seconds
        cpu_us = self.server_cpu() / count * 1e6
        client_us = self.client_cpu() / count * 1e6
        capacity = 1e6 / cpu_us if cpu_us else 0.0
        self.results[name] = {
            "requests": count,
            "seconds": round(seconds, 3),
            "rps": round(rps, 1),
            "server_cpu_us_per_request": round(cpu_us),
            "server_capacity_rps_one_core": round(capacity),
            "client_cpu_us_per_request": round(client_us),
        }
        print(
            f"  {name:<22} {count:6d} requests in {seconds:6.2f}s = {rps:8.1f} req/s"
            f" ({rps / TARGET_RPS:.2f}x of"
            f" {TARGET_RPS:.0f}); server {cpu_us:5.0f} us CPU/request = {capacity:5.0f} req/s per core"
            f" ({capacity / TARGET_RPS:.2f}x); client {client_us:.0f} us"
        )

    async def bench_list(self) -> None:
        await self.submit_many(10, "noop-build")

        async def op(_: int) -> None:
            check(
                await self.runner.get(f"/v1/runners/{self.rid}/jobs", params={"group": "build", "limit": 10}),
                200,
            )

        self.mark()
        self.report(
            "jobs list (10 jobs)", self.requests, await run_concurrently(self.requests, self.concurrency, op)
        )

    async def bench_claim_and_patch(self) -> None:
        count = max(self.requests // 4, 50)
        jobs = await self.submit_many(count, "noop-deploy")
        executions: list[str] = [""] * count

        async def claim(i: int) -> None:
            response = await self.runner.post(f"/v1/runner-jobs/{jobs[i]['id']}/executions", json={})
            executions[i] = check(response, 201).json()["id"]

        self.mark()
        self.report("claim", count, await run_concurrently(count, self.concurrency, claim))
        statuses = ("initializing", "in-progress", "cleaning-up", "finished")

        async def patch(i: int) -> None:
            job, status = divmod(i, len(statuses))
            url = f"/v1/runner-jobs/{jobs[job]['id']}/executions/{executions[job]}"
            check(await self.runner.patch(url, json={"status": statuses[status]}), 200)

        # Each worker takes consecutive indexes, so one job's PATCHes stay in order.
        total = count * len(statuses)
        self.mark()
        seconds = await self._ordered_patches(jobs, executions, statuses)
        self.report("execution PATCH", total, seconds)

    async def _ordered_patches(
        self, jobs: list[dict[str, Any]], executions: list[str], statuses: tuple[str, ...]
    ) -> float:
        async def one_job(i: int) -> None:
            url = f"/v1/runner-jobs/{jobs[i]['id']}/executions/{executions[i]}"
            for status in statuses:
                check(await self.runner.patch(url, json={"status": status}), 200)

        return await run_concurrently(len(jobs), self.concurrency, one_job)

    async def bench_noop_jobs(self) -> None:
        count = max(self.requests // 10, 50)
        jobs = await self.submit_many(count, "noop")
        body = _otlp_body()
        requests_per_job = 11

        async def run_job(i: int) -> None:
            job_id = jobs[i]["id"]
            check(
                await self.runner.get(
                    f"/v1/runners/{self.rid}/jobs", params={"group": "operations", "limit": 10}
                ),
                200,
            )
            execution = check(
                await self.runner.post(f"/v1/runner-jobs/{job_id}/executions", json={}), 201
            ).json()
            base = f"/v1/runner-jobs/{job_id}/executions/{execution['id']}"
            check(await self.runner.get(f"/v1/runner-jobs/{job_id}/plan"), 200)
            check(await self.runner.patch(base, json={"status": "initializing"}), 200)
            check(await self.runner.patch(base, json={"status": "in-progress"}), 200)
            check(
                await self.runner.post(
                    f"/v1/log-streams/{jobs[i]['log_stream_id']}/logs",
                    content=body,
                    headers={"Content-Type": "application/x-protobuf"},
                ),
                201,
            )
            check(await self.runner.post(base + "/outputs", json={"outputs": {"i": i}}), 201)
            check(await self.runner.post(base + "/result", json={"success": True}), 201)
            check(await self.runner.patch(base, json={"status": "cleaning-up"}), 200)
            check(await self.runner.patch(base, json={"status": "finished"}), 200)
            check(await self.runner.get(f"/v1/runner-jobs/{job_id}"), 200)

        self.mark()
        seconds = await run_concurrently(count, self.concurrency, run_job)
        jobs_per_s = count / seconds
        cpu_ms = self.server_cpu() / count * 1000
        self.results["noop job cycle"] = {
            "jobs": count,
            "seconds": round(seconds, 3),
            "jobs_per_s": round(jobs_per_s, 1),
            "rps": round(jobs_per_s * requests_per_job, 1),
            "server_cpu_ms_per_job": round(cpu_ms, 2),
            "server_capacity_jobs_per_s_one_core": round(1000 / cpu_ms),
        }
        print(
            f"  {'noop job (11 requests)':<22} {count:6d} jobs     in {seconds:6.2f}s"
            f" = {jobs_per_s:8.1f} jobs/s = {jobs_per_s * requests_per_job:.0f} req/s"
            f" ({jobs_per_s / 50:.2f}x of the 50 jobs/s runner target);"
            f" server {cpu_ms:.2f} ms CPU/job = {1000 / cpu_ms:.0f} jobs/s per core"
        )

    async def bench_logs(self, batches: int = 100, batch: int = 1000) -> None:
        """OTLP log ingest: records per second into one stream, in batches like an exporter's."""
        job = await self.submit("noop")
        body = _otlp_body(batch)
        url = f"/v1/log-streams/{job['log_stream_id']}/logs"
        headers = {"Content-Type": "application/x-protobuf"}

        async def post(_: int) -> None:
            check(await self.runner.post(url, content=body, headers=headers), 201)

        self.mark()
        seconds = await run_concurrently(batches, 2, post)
        records = batches * batch
        cpu_us = self.server_cpu() / records * 1e6
        self.results["log ingest"] = {
            "records": records,
            "seconds": round(seconds, 3),
            "records_per_s": round(records / seconds),
            "server_cpu_us_per_record": round(cpu_us, 2),
        }
        print(
            f"  {'log ingest':<22} {records:6d} records in {seconds:6.2f}s"
            f" = {records / seconds:8.0f} records/s"
            f" ({records / seconds / 50_000:.2f}x of 50,000 lines/s); server {cpu_us:.1f} us CPU/record"
            f" = {1e6 / cpu_us:.0f} records/s per core"
        )

    async def bench_wakeup(self) -> None:
        from_send: list[float] = []
        from_reply: list[float] = []
        for _ in range(self.wakeups):
            answered = anyio.Event()
            stamps: dict[str, float] = {}

            async def hold(answered: anyio.Event = answered, stamps: dict[str, float] = stamps) -> None:
                response = await self.runner.get(
                    f"/v1/runners/{self.rid}/jobs", params={"group": "sync", "wait": "10s"}
                )
                stamps["answered"] = time.perf_counter()
                job = check(response, 200).json()
                if not job:
                    raise RuntimeError("the held poll answered without a job")
                await self.runner.post(f"/v1/runner-jobs/{job[0]['id']}/executions", json={})
                answered.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(hold)
                await anyio.sleep(0.02)  # let the poll reach the server and park
                stamps["sent"] = time.perf_counter()
                await self.submit("noop-sync")
                stamps["replied"] = time.perf_counter()
                await answered.wait()
            from_send.append((stamps["answered"] - stamps["sent"]) * 1000)
            from_reply.append((stamps["answered"] - stamps["replied"]) * 1000)
        p50, p99 = percentile(from_send, 50), percentile(from_send, 99)
        self.results["long-poll wake-up"] = {
            "samples": len(from_send),
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "after_submit_reply_p50_ms": round(percentile(from_reply, 50), 2),
        }
        print(
            f"  {'long-poll wake-up':<22} {len(from_send):6d} samples: submit sent -> poll answered"
            f" p50 {p50:.2f} ms ({p50 / TARGET_WAKE_P50_MS:.2f}x of {TARGET_WAKE_P50_MS:.0f} ms),"
            f" p99 {p99:.2f} ms ({p99 / TARGET_WAKE_P99_MS:.2f}x of {TARGET_WAKE_P99_MS:.0f} ms);"
            f" after the submit's reply p50 {percentile(from_reply, 50):.2f} ms"
        )

    async def run(self) -> dict[str, Any]:
        try:
            await self.bench_list()
            await self.bench_claim_and_patch()
            await self.bench_noop_jobs()
            await self.bench_logs()
            await self.bench_wakeup()
        finally:
            await self.runner.aclose()
            await self.admin.aclose()
        return self.results


def _otlp_body(lines: int = 20) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

    records = [
        LogRecord(time_unix_nano=time.time_ns(), body=AnyValue(string_value=f"line {i}"))
        for i in range(lines)
    ]
    message = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    )
    return bytes(message.SerializeToString())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests for the list bench (others scale)"
    )
    parser.add_argument("--wakeups", type=int, default=200)
    parser.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"])
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cp-bench-") as tmp:
        cp = ControlPlaneProcess(Path(tmp), extra_args=("--http", args.http), long_poll_max=30)
        started = time.perf_counter()
        cp.start()
        print(
            f"control plane up in {time.perf_counter() - started:.2f}s at {cp.url}"
            f" (pid {cp.proc.pid if cp.proc else '?'})"
        )
        print(f"concurrency {args.concurrency}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}")
        print(
            "req/s is wall-clock with this Python client on the same cores;"
            " CPU/request is the server's own cost"
        )
        try:
            results = anyio.run(Bench(cp, args.concurrency, args.requests, args.wakeups).run)
        finally:
            cp.stop()
    if args.json:
        print(json.dumps(results, indent=2))
    rps = [v["rps"] for k, v in results.items() if "server_capacity_rps_one_core" in v]
    capacity = [
        v["server_capacity_rps_one_core"] for v in results.values() if "server_capacity_rps_one_core" in v
    ]
    if rps:
        print(
            f"simple requests: median {statistics.median(rps):.0f} req/s measured, server capacity median"
            f" {statistics.median(capacity):.0f} req/s per core (target {TARGET_RPS:.0f})"
        )


if __name__ == "__main__":
    main()
