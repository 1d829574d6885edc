"""HTTP clients for the runner API, compared in the same run (issue 17: "if the HTTP stack is the
limit, compare a tuned httpx transport with another well-kept client ... and choose").

The embedded control plane runs as its own process on loopback (``python -m controlplane``, as
``runner_bench.py`` starts it); this process plays the runner and drives a noop job's API calls
as the runner sends them (9 requests: list, claim, PATCH initializing, PATCH in-progress, outputs,
PATCH cleaning-up, an OTLP log batch, result, PATCH finished; the runner's headers and bodies),
with ``--held-polls`` long-polls held on the same client the whole time (the runner's pollers
share its pool), at concurrency 1 and 8. Variants, interleaved round by round
(the order rotates each round):

* ``httpx-now``: one ``httpx.AsyncClient`` configured as RunnerClient was before issue 17's
  tuning (limits 64/32, default SSL context with the certifi bundle, env proxies);
* ``httpx-lanes``: one client per concurrent caller (each caller's pool holds 1 connection);
* ``httpx-pool1``: a free list of single-connection clients, one checked out per request (what
  RunnerClient can do without knowing its callers);
* ``aiohttp``: one ``aiohttp.ClientSession`` (TCPConnector limit 64), asyncio only;
* ``httpx-aiohttp``: one ``httpx.AsyncClient`` whose transport is that aiohttp session (httpx's
  request/response models kept, httpcore/h11 replaced);
* ``runnerclient``: ``RunnerClient.request`` of this checkout (whatever it does now: since
  issue 17, a single-connection client checked out per request, as ``httpx-pool1``, plus its
  retry wrapper).

Prints requests/s, this process's CPU per request (user+sys; the "runner" side), the control
plane's CPU per request, ratios against ``httpx-now``, and the load average. Asserts nothing.

    python3 bench/http_client_bench.py [--jobs 150] [--rounds 3] [--held-polls 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from controlplane_bench import _otlp_body, cpu_seconds  # noqa: E402

from runner import __version__  # noqa: E402
from runner.api.client import CLIENT_VERSION_HEADER, RunnerClient  # noqa: E402
from tests.support.controlplane import ControlPlaneProcess  # noqa: E402

#: Issue 17's noop throughput target: the API calls alone must leave room for it.
TARGET_JOBS_PER_S = 60
REQUESTS_PER_JOB = 9
VARIANTS = ("httpx-now", "httpx-lanes", "httpx-pool1", "aiohttp", "httpx-aiohttp", "runnerclient")

Reply = tuple[int, bytes]


def runner_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        CLIENT_VERSION_HEADER: f"runner:{__version__}",
        "User-Agent": f"byoc-runner/{__version__}",
    }


class Driver:
    """One client configuration: ``request(lane, ...)`` -> (status, body)."""

    async def request(
        self,
        lane: int,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class HttpxShared(Driver):
    """httpx-now: RunnerClient's client before the tuning."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url,
            headers=runner_headers(token),
            timeout=httpx.Timeout(10.0, connect=5.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def request(self, lane: int, method: str, path: str, **kw: Any) -> Reply:
        r = await _httpx_call(self.http, method, path, **kw)
        return r.status_code, r.content

    async def aclose(self) -> None:
        await self.http.aclose()


def _tuned_client(url: str, token: str) -> httpx.AsyncClient:
    """A client whose pool holds one connection; no SSL context for an http:// URL without proxies."""
    plain = url.startswith("http://") and not urllib.request.getproxies()
    return httpx.AsyncClient(
        base_url=url,
        headers=runner_headers(token),
        timeout=httpx.Timeout(10.0, connect=5.0),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        verify=not plain,
    )


class HttpxLanes(Driver):
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.clients: dict[int, httpx.AsyncClient] = {}

    async def request(self, lane: int, method: str, path: str, **kw: Any) -> Reply:
        client = self.clients.get(lane)
        if client is None:
            client = self.clients[lane] = _tuned_client(self.url, self.token)
        r = await _httpx_call(client, method, path, **kw)
        return r.status_code, r.content

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()


class HttpxPool1(Driver):
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.free: list[httpx.AsyncClient] = []
        self.all: list[httpx.AsyncClient] = []

    async def request(self, lane: int, method: str, path: str, **kw: Any) -> Reply:
        if self.free:
            client = self.free.pop()
        else:
            client = _tuned_client(self.url, self.token)
            self.all.append(client)
        try:
            r = await _httpx_call(client, method, path, **kw)
        finally:
            self.free.append(client)
        return r.status_code, r.content

    async def aclose(self) -> None:
        for client in self.all:
            await client.aclose()


class Aiohttp(Driver):
    def __init__(self, url: str, token: str) -> None:
        import aiohttp

        self.aiohttp = aiohttp
        self.session = aiohttp.ClientSession(
            base_url=url,
            headers=runner_headers(token),
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=0, ssl=False),
            timeout=aiohttp.ClientTimeout(total=30.0, connect=5.0),
        )

    async def request(
        self,
        lane: int,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        async with self.session.request(
            method,
            path,
            json=json_body,
            data=content,
            headers=headers,
            params=params,
            timeout=self.aiohttp.ClientTimeout(total=timeout, connect=5.0),
        ) as r:
            return r.status, await r.read()

    async def aclose(self) -> None:
        await self.session.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's client API over an aiohttp session: what keeping ``httpx.Response`` (and the
    tests' ``httpx.MockTransport`` seam) while swapping httpcore for aiohttp would cost."""

    def __init__(self) -> None:
        import aiohttp

        self.aiohttp = aiohttp
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=0, ssl=False),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        async with self.session.request(
            request.method,
            str(request.url),
            headers=request.headers.multi_items(),
            data=await request.aread(),
            allow_redirects=False,
            timeout=self.aiohttp.ClientTimeout(total=timeout.get("read"), connect=timeout.get("connect")),
        ) as r:
            body = await r.read()
            return httpx.Response(r.status, headers=list(r.raw_headers), content=body)

    async def aclose(self) -> None:
        await self.session.close()


class HttpxOverAiohttp(HttpxShared):
    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url,
            headers=runner_headers(token),
            timeout=httpx.Timeout(10.0, connect=5.0),
            transport=AiohttpTransport(),
        )


class RunnerClientDriver(Driver):
    def __init__(self, url: str, token: str, runner_id: str) -> None:
        self.client = RunnerClient(url, token, runner_id)

    async def request(
        self,
        lane: int,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        r = await self.client.request(
            method, path, json=json_body, content=content, headers=headers, params=params, timeout=timeout
        )
        return r.status_code, r.content

    async def aclose(self) -> None:
        await self.client.aclose()


async def _httpx_call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> httpx.Response:
    return await client.request(
        method,
        path,
        json=json_body,
        content=content,
        headers=headers,
        params=params,
        timeout=httpx.Timeout(timeout, connect=5.0),
    )


def make_driver(name: str, cp: ControlPlaneProcess) -> Driver:
    token = cp.runner_token
    if name == "httpx-now":
        return HttpxShared(cp.url, token)
    if name == "httpx-lanes":
        return HttpxLanes(cp.url, token)
    if name == "httpx-pool1":
        return HttpxPool1(cp.url, token)
    if name == "aiohttp":
        return Aiohttp(cp.url, token)
    if name == "httpx-aiohttp":
        return HttpxOverAiohttp(cp.url, token)
    return RunnerClientDriver(cp.url, token, cp.runner_id)


def expect(reply: Reply, *codes: int, what: str) -> bytes:
    if reply[0] not in codes:
        raise RuntimeError(f"{what}: HTTP {reply[0]}: {reply[1][:300]!r}")
    return reply[1]


class Bench:
    def __init__(self, cp: ControlPlaneProcess, jobs: int, held_polls: int) -> None:
        self.cp = cp
        self.rid = cp.runner_id
        self.jobs = jobs
        self.held_polls = held_polls
        self.log_body = _otlp_body()
        self.server_pid = cp.proc.pid if cp.proc else 0
        self.admin = httpx.AsyncClient(
            base_url=cp.url, headers={"Authorization": f"Bearer {cp.admin_token}"}, timeout=30
        )

    async def submit(self, count: int) -> list[dict[str, Any]]:
        async def one() -> dict[str, Any]:
            r = await self.admin.post(
                f"/v1/runners/{self.rid}/jobs", json={"type": "noop", "available_timeout": 3600 * 10**9}
            )
            if r.status_code != 201:
                raise RuntimeError(f"submit: {r.status_code} {r.text}")
            job: dict[str, Any] = r.json()
            return job

        out: list[dict[str, Any]] = []
        for start in range(0, count, 8):
            out += await asyncio.gather(*(one() for _ in range(min(8, count - start))))
        return out

    async def job_cycle(self, d: Driver, lane: int, job: dict[str, Any]) -> None:
        """A noop job's calls, in the order ``runner exec --type noop`` sends them (recorded at
        RunnerClient.request): list, claim, PATCH initializing, PATCH in-progress, outputs,
        PATCH cleaning-up, the job's OTLP log batch, result, PATCH finished."""
        job_id = job["id"]
        expect(
            await d.request(
                lane,
                "GET",
                f"/v1/runners/{self.rid}/jobs",
                params={"group": "operations", "status": "available", "limit": "10", "offset": "0"},
            ),
            200,
            what="list",
        )
        execution = json.loads(
            expect(
                await d.request(lane, "POST", f"/v1/runner-jobs/{job_id}/executions", json_body={}),
                201,
                what="claim",
            )
        )
        base = f"/v1/runner-jobs/{job_id}/executions/{execution['id']}"
        for status in ("initializing", "in-progress"):
            expect(await d.request(lane, "PATCH", base, json_body={"status": status}), 200, what=status)
        expect(
            await d.request(lane, "POST", base + "/outputs", json_body={"outputs": {}}), 201, what="outputs"
        )
        expect(await d.request(lane, "PATCH", base, json_body={"status": "cleaning-up"}), 200, what="cleanup")
        expect(
            await d.request(
                lane,
                "POST",
                f"/v1/log-streams/{job['log_stream_id']}/logs",
                content=self.log_body,
                headers={"Content-Type": "application/x-protobuf"},
            ),
            200,
            201,
            what="logs",
        )
        expect(
            await d.request(lane, "POST", base + "/result", json_body={"success": True, "error_code": 0}),
            201,
            what="result",
        )
        expect(await d.request(lane, "PATCH", base, json_body={"status": "finished"}), 200, what="finished")

    async def hold_poll(self, d: Driver, lane: int) -> None:
        """A poller of an empty group: a long-poll held on the same client, again and again."""
        while True:
            await d.request(
                lane,
                "GET",
                f"/v1/runners/{self.rid}/jobs",
                params={"group": "sync", "status": "available", "limit": "10", "offset": "0", "wait": "20s"},
                timeout=30.0,
            )

    async def segment(self, name: str, concurrency: int) -> dict[str, float]:
        jobs = await self.submit(self.jobs)
        d = make_driver(name, self.cp)
        holders = [asyncio.ensure_future(self.hold_poll(d, 1000 + i)) for i in range(self.held_polls)]
        try:
            # Warm up: the connections every lane uses (not timed).
            await asyncio.gather(
                *(self.job_cycle(d, lane, job) for lane, job in enumerate(jobs[:concurrency]))
            )
            todo = iter(jobs[concurrency:])
            count = len(jobs) - concurrency

            async def worker(lane: int) -> None:
                for job in todo:
                    await self.job_cycle(d, lane, job)

            await asyncio.sleep(0.05)
            cpu0, server0 = time.process_time(), cpu_seconds(self.server_pid)
            started = time.perf_counter()
            await asyncio.gather(*(worker(lane) for lane in range(concurrency)))
            elapsed = time.perf_counter() - started
            cpu, server = time.process_time() - cpu0, cpu_seconds(self.server_pid) - server0
        finally:
            for holder in holders:
                holder.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
            await d.aclose()
        requests = count * REQUESTS_PER_JOB
        return {
            "rps": requests / elapsed,
            "cpu_us": cpu / requests * 1e6,
            "server_us": server / requests * 1e6,
        }

    async def run(self, rounds: int, concurrencies: list[int], variants: list[str]) -> None:
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        try:
            for r in range(rounds):
                order = variants[r % len(variants) :] + variants[: r % len(variants)]
                print(f"round {r + 1}/{rounds}, order {', '.join(order)}, load {loadavg()}", flush=True)
                for concurrency in concurrencies:
                    for name in order:
                        figures = await self.segment(name, concurrency)
                        results.setdefault((name, concurrency), []).append(figures)
                        print(
                            f"  c{concurrency} {name:<13} {figures['rps']:7.1f} req/s, "
                            f"client {figures['cpu_us']:5.0f} us CPU/req, "
                            f"server {figures['server_us']:5.0f} us CPU/req",
                            flush=True,
                        )
        finally:
            await self.admin.aclose()
        report(results, concurrencies, variants)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(
    results: dict[tuple[str, int], list[dict[str, float]]], concurrencies: list[int], variants: list[str]
) -> None:
    print(f"\nmedians over rounds ({REQUESTS_PER_JOB} requests per noop job; load {loadavg()})")
    for concurrency in concurrencies:
        base = results.get(("httpx-now", concurrency))
        base_rps = statistics.median(f["rps"] for f in base) if base else 0.0
        base_cpu = statistics.median(f["cpu_us"] for f in base) if base else 0.0
        for name in variants:
            figures = results[(name, concurrency)]
            rps = statistics.median(f["rps"] for f in figures)
            cpu = statistics.median(f["cpu_us"] for f in figures)
            server = statistics.median(f["server_us"] for f in figures)
            ratio = (
                f"  x{rps / base_rps:.2f} req/s, x{cpu / base_cpu:.2f} client CPU vs httpx-now"
                if base_rps and base_cpu
                else ""
            )
            jobs = rps / REQUESTS_PER_JOB
            print(
                f"  c{concurrency} {name:<13} {rps:7.1f} req/s ({jobs:5.1f} noop jobs/s of API calls; target "
                f">= {TARGET_JOBS_PER_S} jobs/s, ratio {jobs / TARGET_JOBS_PER_S:.2f}), "
                f"client {cpu:5.0f} us CPU/req, server {server:5.0f} us CPU/req{ratio}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=150, help="noop job cycles per segment")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--held-polls", type=int, default=1, help="long-polls held on the client meanwhile")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="http-client-bench-") as tmp:
        cp = ControlPlaneProcess(Path(tmp), long_poll_max=30)
        cp.start()
        print(
            f"control plane pid {cp.proc.pid if cp.proc else '?'} at {cp.url}; {os.cpu_count()} cpus; "
            f"httpx {httpx.__version__}; held polls {args.held_polls}; {args.jobs} jobs per segment; "
            f"load {loadavg()}",
            flush=True,
        )
        try:
            asyncio.run(
                Bench(cp, args.jobs, args.held_polls).run(args.rounds, args.concurrency, args.variants)
            )
        finally:
            cp.stop()


if __name__ == "__main__":
    main()
