"""Serving the control plane: in-process (``serve``) for ``runner local``/``exec`` and tests, and
standalone through ``controlplane.cli``.

``serve`` binds the socket itself, so the port (and the ``api_url`` written to
``credentials.json``) is known before the first request, then runs uvicorn inside the caller's
event loop without touching signal handlers (the caller owns SIGINT/SIGTERM). The monitor runs
in the app's lifespan.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from controlplane.app import VERSION, create_app
from controlplane.options import CREDENTIALS_FILE, DATABASE_FILE, ControlPlaneOptions, Credentials
from controlplane.store import Store
from controlplane.wire import seconds_to_ns


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: whoever embeds us decides what a signal means."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningControlPlane:
    url: str
    credentials: Credentials
    store: Store
    state_dir: Path | None
    _server: Any = field(repr=False)
    _stopped: anyio.Event = field(default_factory=anyio.Event, repr=False)

    async def shutdown(self) -> None:
        """Release held polls, stop accepting, finish in-flight requests, stop the monitor."""
        self.store.notifier.close()
        self._server.should_exit = True
        await self._stopped.wait()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket. ``IPPROTO_TCP`` explicitly: asyncio only sets ``TCP_NODELAY`` on
    accepted sockets whose proto says TCP, and without it every keep-alive response waits 40 ms
    for a delayed ACK (Nagle)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - only for display
        shown = "127.0.0.1"
    return f"http://{shown}:{port}"


def announce(creds: Credentials, state_dir: Path | None, *, created: bool) -> None:
    """Tell the operator how to use the control plane; the tokens only on first start."""
    where = f" (saved to {state_dir / CREDENTIALS_FILE}, mode 0600)" if state_dir else ""
    if created:
        lines = [
            f"control plane ready at {creds.api_url}{where}",
            f"  org:           {creds.org_id}",
            f"  runner:        {creds.runner_id}",
            f"  runner token:  {creds.runner_token}",
            f"  admin token:   {creds.admin_token}",
            "run a runner against it:",
            f"  RUNNER_API_URL={creds.api_url} RUNNER_ID={creds.runner_id} RUNNER_API_TOKEN=<runner"
            " token> runner run",
            "submit a job:",
            f"  RUNNER_API_URL={creds.api_url} RUNNER_ADMIN_TOKEN=<admin token> runner jobs submit"
            " --type noop --wait",
        ]
    else:
        lines = [f"control plane ready at {creds.api_url} (runner {creds.runner_id}){where}"]
    print("\n".join(lines), file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def serve(
    state_dir: Path | None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    options: ControlPlaneOptions | None = None,
    quiet: bool = False,
) -> AsyncIterator[RunningControlPlane]:
    """Run the control plane in the caller's event loop for the duration of the block.

    ``state_dir=None`` keeps everything in memory (and writes no credentials file).
    """
    options = options or ControlPlaneOptions()
    store = await anyio.to_thread.run_sync(
        Store.open, None if state_dir is None else state_dir / DATABASE_FILE
    )
    sock = bind(host, port)
    try:
        url = _url(host, sock.getsockname()[1])
        creds, created = await store.bootstrap(url, seconds_to_ns(options.heart_beat_timeout))
        if state_dir is not None:
            creds.write(state_dir / CREDENTIALS_FILE)
        config = uvicorn.Config(
            create_app(store, options),
            lifespan="on",
            log_level=options.log_level,
            log_config=None,  # leave the host process's logging alone (runner local/exec embed us)
            access_log=False,  # access logs would carry ?token= query strings
            http=options.http,
            timeout_graceful_shutdown=3,
            timeout_keep_alive=30,
            server_header=False,
            headers=[("X-Nuon-API-Version", VERSION)],
        )
        server = _Server(config)
        running = RunningControlPlane(
            url=url, credentials=creds, store=store, state_dir=state_dir, _server=server
        )
        async with anyio.create_task_group() as tg:

            async def run_server() -> None:
                try:
                    await server.serve(sockets=[sock])
                finally:
                    running._stopped.set()

            tg.start_soon(run_server)
            while not server.started:
                if running._stopped.is_set():
                    raise RuntimeError("the control plane failed to start")
                await anyio.sleep(0.005)
            if not quiet:
                announce(creds, state_dir, created=created)
            try:
                yield running
            finally:
                with anyio.CancelScope(shield=True):
                    await running.shutdown()
    finally:
        sock.close()
        store.close()
