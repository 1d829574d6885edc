"""Job log throughput: 1,000,000 lines through JobLogger -> LogPipeline -> a real receiver on loopback.

The receiver is the embedded control plane (``python -m controlplane``) in its own process, as
in production: it decodes the OTLP protobuf and stores every record in SQLite. The runner side
(this process) has masking on (the runner token and the log stream's write token are
registered), the write token as credential, and the default pipeline settings. Prints:

* lines per second from the first line written to the last one acknowledged (close()
  returns), and the ratio to the target (60,000 lines/s, issue 17) and to the reference
  runner (batches of 25 every 5 s, i.e. 5 lines/s);
* lines lost: written minus stored, counted by the control plane;
* peak RSS of this process (the runner side) and records spooled on the way;
* with ``--source child`` (or ``both``), the same through a real child process whose stdout the
  runner's ProcessRunner turns into records line by line;
* with ``--receiver sink``, a receiver that only decodes and counts (no storage), to tell the
  runner's cost from the control plane's.

Usage: ``python bench/logs_bench.py [--lines N] [--source logger|child|both] [--receiver controlplane|sink]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import httpx  # noqa: E402

from runner import logging_setup  # noqa: E402
from runner.api.client import RunnerClient  # noqa: E402
from runner.logs import LogPipeline  # noqa: E402
from runner.redact import Redactor  # noqa: E402

TARGET_LINES_PER_S = 60_000  # issue 17
TARGET_RSS_MB = 100
REFERENCE_LINES_PER_S = 25 / 5.0
LINE = "module.app.aws_instance.web[{i}]: Still creating... [{s}s elapsed] id=i-0123456789abcdef0"

SINK = textwrap.dedent(
    """
    import gzip, json, sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    counts = {}

    async def write(request):
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportLogsServiceRequest.FromString(body)
        n = sum(len(s.log_records) for r in req.resource_logs for s in r.scope_logs)
        sid = request.path_params["sid"]
        counts[sid] = counts.get(sid, 0) + n
        return JSONResponse("ok", status_code=201)

    async def count(request):
        return Response(headers={"X-Nuon-Log-Count": str(counts.get(request.path_params["sid"], 0))})

    app = Starlette(routes=[
        Route("/v1/log-streams/{sid}/logs", write, methods=["POST"]),
        Route("/v1/log-streams/{sid}/logs", count, methods=["GET"]),
    ])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Receiver:
    """The receiving process, its URL and the credentials to use."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if kind == "controlplane":
            state = workdir / "cp"
            argv = [sys.executable, "-m", "controlplane", "--port", str(self.port), "--state-dir", str(state)]
        else:
            argv = [sys.executable, "-c", SINK, str(self.port)]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()
        if kind == "controlplane":
            creds = json.loads((workdir / "cp" / "credentials.json").read_text())
            self.runner_id: str = creds["runner_id"]
            self.runner_token: str = creds["runner_token"]
            self.admin_token: str = creds["admin_token"]
        else:
            self.runner_id, self.runner_token, self.admin_token = "run-bench", "runner-token-bench", "admin"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start")

    def new_stream(self) -> tuple[str, str | None, str]:
        """(log stream id, write token, job id) for one job."""
        if self.kind != "controlplane":
            n = time.monotonic_ns()
            return f"log-bench-{n}", None, f"job-bench-{n}"
        response = httpx.post(
            f"{self.url}/v1/runners/{self.runner_id}/jobs",
            json={"type": "noop"},
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        response.raise_for_status()
        job = response.json()
        return job["log_stream_id"], job["log_stream"]["write_token"], job["id"]

    def stored(self, log_stream_id: str) -> int:
        response = httpx.get(
            f"{self.url}/v1/log-streams/{log_stream_id}/logs",
            params={"limit": 1},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=60,
        )
        response.raise_for_status()
        return int(response.headers["X-Nuon-Log-Count"])

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class PeakRss:
    """Samples this process's RSS every 50 ms in a thread (the event loop may be busy)."""

    def __init__(self) -> None:
        self.peak = rss_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_kb())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kb())


async def run_once(
    receiver: Receiver, lines: int, source: str, spool_dir: Path, yield_every: int
) -> dict[str, Any]:
    log_stream_id, write_token, job_id = receiver.new_stream()
    client = RunnerClient(receiver.url, receiver.runner_token, receiver.runner_id, timeout=30)
    pipeline = LogPipeline(
        client,
        spool_dir,
        resource_attrs={"service.name": "runner", "runner.id": receiver.runner_id, "runner.version": "bench"},
    )
    runner_secrets = Redactor(receiver.runner_token)
    secrets = runner_secrets.child()
    secrets.register(write_token)
    cpu_before = receiver.cpu_seconds()
    own_before = _own_cpu()
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        stream = pipeline.open_job(
            log_stream_id=log_stream_id,
            write_token=write_token,
            attrs={
                "runner_job.id": job_id,
                "runner_job.type": "noop",
                "log_stream.id": log_stream_id,
                "runner_job_execution.id": "exe-bench",
            },
            redactor=secrets,
            spool_key=f"exe-bench-{source}",
        )
        log = stream.logger.bind(**{"runner_job_execution_step.name": "execute"})
        with PeakRss() as rss:
            started = time.perf_counter()
            if source == "logger":
                for i in range(lines):
                    log.info(LINE.format(i=i, s=i // 1000), stream="stdout")
                    if i % yield_every == 0:
                        await anyio.sleep(0)
            else:
                from runner.process import JobProcessRunner

                workspace = spool_dir / "workspace"
                workspace.mkdir(exist_ok=True)
                processes = JobProcessRunner(log, workspace=workspace, secrets=secrets)
                script = (
                    "import sys\nw = sys.stdout.write\n"
                    f"for i in range({lines}): w({LINE!r}.format(i=i, s=i // 1000) + '\\n')\n"
                )
                await processes.run([sys.executable, "-c", script])
            written = time.perf_counter()
            report = await stream.close(deadline=anyio.current_time() + 600)
            finished = time.perf_counter()
        tg.cancel_scope.cancel()
    await client.aclose()
    stored = receiver.stored(log_stream_id)
    expected = lines + (2 if source == "child" else 0)  # the ProcessRunner logs "$ argv" and the exit
    return {
        "source": source,
        "lines": lines,
        "seconds": finished - started,
        "write_seconds": written - started,
        "lines_per_s": lines / (finished - started),
        "delivered": report.delivered,
        "spooled_left": report.spooled,
        "lost": report.lost,
        "stored": stored,
        "missing": max(0, expected - stored),
        "peak_rss_mb": rss.peak / 1024,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "spooled_on_the_way": pipeline.metrics.spooled,
        "export_failures": pipeline.metrics.export_failures,
        "receiver_cpu_s": receiver.cpu_seconds() - cpu_before,
        "runner_cpu_s": _own_cpu() - own_before,
    }


def show(result: dict[str, Any]) -> None:
    rate = result["lines_per_s"]
    print(f"--- source={result['source']}: {result['lines']:,} lines")
    print(
        f"  wall {result['seconds']:.2f} s (writing {result['write_seconds']:.2f} s), "
        f"{rate:,.0f} lines/s (target >= {TARGET_LINES_PER_S:,}, ratio {rate / TARGET_LINES_PER_S:.2f}), "
        f"{rate / REFERENCE_LINES_PER_S:,.0f}x the reference runner"
    )
    print(
        f"  stored by the receiver {result['stored']:,}; missing {result['missing']:,}; "
        f"report delivered={result['delivered']:,} spooled={result['spooled_left']:,} lost={result['lost']:,}"
        " (target: 0 missing, 0 lost)"
    )
    print(
        f"  runner peak RSS {result['peak_rss_mb']:.1f} MB (ru_maxrss {result['max_rss_mb']:.1f} MB;"
        f" target <= {TARGET_RSS_MB}, ratio {result['peak_rss_mb'] / TARGET_RSS_MB:.2f});"
        f" records spooled on the way {result['spooled_on_the_way']:,};"
        f" failed POSTs {result['export_failures']}; receiver CPU {result['receiver_cpu_s']:.1f} s"
    )
    per_cpu = result["lines"] / max(result["runner_cpu_s"], 1e-9)
    print(
        f"  runner CPU {result['runner_cpu_s']:.1f} s = {per_cpu:,.0f} lines per runner CPU-second "
        f"(what one dedicated core would ship; {per_cpu / TARGET_LINES_PER_S:.2f}x target)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--source", choices=["logger", "child", "both"], default="logger")
    parser.add_argument("--receiver", choices=["controlplane", "sink"], default="controlplane")
    parser.add_argument(
        "--yield-every",
        type=int,
        default=500,
        help="logger source: lines between two yields to the event loop",
    )
    args = parser.parse_args()
    logging_setup.configure_logging("console", "WARNING", stream=sys.stderr)
    sources = ["logger", "child"] if args.source == "both" else [args.source]
    with tempfile.TemporaryDirectory(prefix="logs-bench-") as tmp:
        workdir = Path(tmp)
        receiver = Receiver(args.receiver, workdir)
        try:
            print(
                f"receiver: {args.receiver} at {receiver.url}; cpus: {os.cpu_count()};"
                f" load average: {os.getloadavg()[0]:.1f}"
            )
            for source in sources:
                spool_dir = workdir / f"spool-{source}"
                spool_dir.mkdir()
                show(anyio.run(run_once, receiver, args.lines, source, spool_dir, args.yield_every))
        finally:
            receiver.stop()


if __name__ == "__main__":
    main()
