"""Runner benchmarks: pickup latency, noop throughput, idle footprint, a million log lines.

Everything runs on loopback: the embedded control plane (``python -m controlplane``) and
``runner run`` as separate processes, as in production. Prints figures and the targets of
DESIGN.md §6; it asserts nothing.

    python bench/runner_bench.py                 # everything (about 3 minutes)
    python bench/runner_bench.py --only pickup   # pickup | throughput | idle | lines
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controlplane.operator import OperatorClient  # noqa: E402
from tests.support.controlplane import ControlPlaneProcess  # noqa: E402

TERMINAL = ("finished", "failed", "timed-out", "cancelled", "not-attempted")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def control_plane(workdir: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """The control plane as its own process: (url, credentials, state dir)."""
    with ControlPlaneProcess(workdir / "cp") as process:
        yield process.url, asdict(process.credentials), process.state_dir


@contextmanager
def runner(url: str, creds: dict[str, str], workdir: Path, **env: str) -> Iterator[psutil.Process]:
    health = free_port()
    state = Path(tempfile.mkdtemp(dir=workdir, prefix="runner-"))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    full_env.update(
        {
            "RUNNER_ID": creds["runner_id"],
            "RUNNER_API_URL": url,
            "RUNNER_API_TOKEN": creds["runner_token"],
            "RUNNER_STATE_DIR": str(state),
            "RUNNER_HEALTH_ADDR": f"127.0.0.1:{health}",
            "RUNNER_LOG_LEVEL": "WARN",
            "RUNNER_SETTINGS_REFRESH_INTERVAL": "1",
        }
    )
    full_env.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{health}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield psutil.Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def pickup(op: OperatorClient, n: int) -> list[float]:
    """Job created -> execution created, one job at a time (server timestamps, same clock)."""
    latencies = []
    for _ in range(n):
        job = op.submit("noop")
        op.wait_job(job["id"], TERMINAL, timeout=30)
        execution = op.executions(job["id"])[0]
        latencies.append(ts(execution["created_at"]) - ts(job["created_at"]))
        time.sleep(0.05)
    return latencies


def bench_pickup(workdir: Path) -> None:
    with control_plane(workdir) as (url, creds, _):
        op = OperatorClient(url, creds["admin_token"], runner_id=creds["runner_id"])
        for mode, long_poll in (("long-poll", True), ("plain polling (1 s)", False)):
            op.patch_settings(long_poll_jobs=long_poll)
            with runner(url, creds, workdir, RUNNER_GROUPS="operations"):
                pickup(op, 3)  # warm up
                values = pickup(op, 40 if long_poll else 15)
            p50, p99 = pct(values, 0.5) * 1000, pct(values, 0.99) * 1000
            target = "  (target p50 <= 20 ms, p99 <= 100 ms)" if long_poll else ""
            print(
                f"pickup latency, {mode}: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(values)} jobs{target}"
            )
        op.close()


def bench_throughput(workdir: Path, jobs: int) -> None:
    with control_plane(workdir) as (url, creds, _):
        op = OperatorClient(url, creds["admin_token"], runner_id=creds["runner_id"])
        for concurrency in (1, 8):
            with runner(
                url,
                creds,
                workdir,
                RUNNER_GROUPS="operations",
                RUNNER_CONCURRENCY=f"operations={concurrency}",
                RUNNER_MAX_CONCURRENCY="8",
            ):
                pickup(op, 2)
                started = time.monotonic()
                ids = [op.submit("noop")["id"] for _ in range(jobs)]
                for job_id in ids:
                    op.wait_job(job_id, TERMINAL, timeout=300)
                elapsed = time.monotonic() - started
            target = "  (target >= 50 jobs/s)" if concurrency == 8 else ""
            print(
                f"noop throughput, concurrency {concurrency}: {jobs / elapsed:.1f} jobs/s "
                f"({jobs} jobs in {elapsed:.1f} s, control plane on the same cores){target}"
            )
        op.close()


def bench_idle(workdir: Path, seconds: float) -> None:
    with control_plane(workdir) as (url, creds, _), runner(url, creds, workdir) as proc:
        time.sleep(3)
        cpu0 = sum(proc.cpu_times()[:2])
        time.sleep(seconds)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        rss = proc.memory_info().rss / 2**20
        print(
            f"idle runner over {seconds:.0f} s: RSS {rss:.1f} MB, CPU {100 * cpu / seconds:.2f} % of a core "
            "(target <= 60 MB, <= 1 %)"
        )


def bench_lines(workdir: Path, lines: int) -> None:
    with control_plane(workdir) as (url, creds, state):
        op = OperatorClient(url, creds["admin_token"], runner_id=creds["runner_id"])
        with runner(
            url,
            creds,
            workdir,
            RUNNER_GROUPS="actions",
            RUNNER_HANDLERS="actions-workflow=tests.support.handlers:ScriptHandler",
        ) as proc:
            peak = 0.0
            job = op.submit(
                "actions-workflow", plan={"argv": ["seq", "1", str(lines)]}, execution_timeout_s=600
            )
            started = time.monotonic()
            while True:
                peak = max(peak, proc.memory_info().rss / 2**20)
                status = op.get_job(job["id"])["status"]
                if status in TERMINAL:
                    break
                time.sleep(0.2)
            elapsed = time.monotonic() - started
        db = sqlite3.connect(state / "controlplane.db") if (state / "controlplane.db").exists() else None
        stored = -1
        if db is None:
            for candidate in state.glob("*.db"):
                db = sqlite3.connect(candidate)
        if db is not None:
            stream = op.get_job(job["id"])["log_stream_id"]
            stored = db.execute(
                "SELECT count(*) FROM log_records WHERE stream_id = ? AND body GLOB '[0-9]*'", (stream,)
            ).fetchone()[0]
        lost = lines - stored
        print(
            f"{lines} log lines: job {status} in {elapsed:.1f} s, {stored / elapsed:,.0f} lines/s delivered, "
            f"{lost} lost, runner peak RSS {peak:.0f} MB (target every line, >= 50,000 lines/s, < 150 MB)"
        )
        op.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["pickup", "throughput", "idle", "lines"])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "pickup"):
            bench_pickup(workdir)
        if args.only in (None, "throughput"):
            bench_throughput(workdir, args.jobs)
        if args.only in (None, "idle"):
            bench_idle(workdir, args.idle_seconds)
        if args.only in (None, "lines"):
            bench_lines(workdir, args.lines)


if __name__ == "__main__":
    main()
