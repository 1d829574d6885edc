"""Serving the control plane: in-process (``serve``) for ``runner local``/``exec`` and tests, and
standalone through ``controlplane.cli``.

``serve`` binds the socket itself, so the port (and the ``api_url`` written to
``credentials.json``) is known before the first request, then runs uvicorn inside the caller's
event loop without touching signal handlers (the caller owns SIGINT/SIGTERM). The monitor runs
in the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from controlplane.app import VERSION, create_app
from controlplane.http_limits import limited_protocol
from controlplane.options import CREDENTIALS_FILE, DATABASE_FILE, ControlPlaneOptions, Credentials
from controlplane.store import Store
from controlplane.wire import seconds_to_ns

log = logging.getLogger("uvicorn.error")


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: whoever embeds us decides what a signal means.

    And a stop that does not wait out uvicorn's 0.1 s steps (``runner exec`` pays them on every
    run): ``stop()`` wakes the main loop at once instead of at its next 0.1 s tick, and
    ``shutdown`` looks for the connections' end every 5 ms where uvicorn (0.55) sleeps 0.1 s
    first and then polls every 0.1 s; otherwise it is uvicorn's ``Server.shutdown``: stop
    accepting, ask every connection to close once its response is out, wait for them and the
    tasks within ``timeout_graceful_shutdown`` (then cancel the tasks), the lifespan's shutdown.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._wake = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        self.should_exit = True
        self._wake.set()

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._wake.wait()
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        state = self.server_state
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while (state.connections or state.tasks) and not self.force_exit:  # noqa: ASYNC110 - no event to wait on
                    await asyncio.sleep(0.005)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            log.error("cancelling %d running task(s): graceful shutdown timed out", len(state.tasks))
            for task in state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()


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
        self._server.stop()
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


def announce(creds: Credentials, credentials_file: Path | None, *, created: bool) -> None:
    """Tell the operator how to use the control plane. Never the tokens: a terminal, a journal
    or a CI log is no place for them; they are in ``credentials.json`` (0600)."""
    where = f" (credentials in {credentials_file}, mode 0600)" if credentials_file else ""
    lines = [f"control plane ready at {creds.api_url} (runner {creds.runner_id}){where}"]
    if created and credentials_file is not None:
        lines += [
            "run a runner against it (runner_token from that file, through a secret store or a file):",
            f"  RUNNER_API_URL={creds.api_url} RUNNER_ID={creds.runner_id}"
            " RUNNER_API_TOKEN_FILE=<file holding the runner token> runner run",
            "submit a job:",
            f"  runner jobs --state-dir {credentials_file.parent} submit --type noop --wait",
        ]
    print("\n".join(lines), file=sys.stderr, flush=True)


def _known_credentials(path: Path | None) -> Credentials | None:
    """The credentials written at an earlier start, if readable (the database keeps only hashes)."""
    if path is None:
        return None
    try:
        return Credentials.load(path)
    except (OSError, ValueError, KeyError):
        return None


@contextlib.asynccontextmanager
async def serve(
    state_dir: Path | None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    options: ControlPlaneOptions | None = None,
    quiet: bool = False,
    credentials_dir: Path | None = None,
) -> AsyncIterator[RunningControlPlane]:
    """Run the control plane in the caller's event loop for the duration of the block.

    ``state_dir=None`` keeps everything in memory (and writes no credentials file unless
    ``credentials_dir`` is given). ``credentials.json`` goes to ``credentials_dir``, by default
    the state dir.
    """
    options = options or ControlPlaneOptions()
    store = await anyio.to_thread.run_sync(
        Store.open, None if state_dir is None else state_dir / DATABASE_FILE
    )
    sock = bind(host, port)
    try:
        url = _url(host, sock.getsockname()[1])
        credentials_dir = credentials_dir or state_dir
        credentials_file = None if credentials_dir is None else credentials_dir / CREDENTIALS_FILE
        creds, created = await store.bootstrap(
            url, seconds_to_ns(options.heart_beat_timeout), _known_credentials(credentials_file)
        )
        if credentials_file is not None:
            creds.write(credentials_file)
        config = uvicorn.Config(
            create_app(store, options),
            lifespan="on",
            log_level=options.log_level,
            log_config=None,  # leave the host process's logging alone (runner local/exec embed us)
            access_log=False,  # access logs would carry ?token= query strings
            http=limited_protocol(options.http, options.max_header_bytes),
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
                announce(creds, credentials_file, created=created)
            try:
                yield running
            finally:
                with anyio.CancelScope(shield=True):
                    await running.shutdown()
    finally:
        sock.close()
        store.close()
