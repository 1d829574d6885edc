"""A loopback HTTP proxy that gives terraform's ``http`` backend access to the runner API
without ever giving terraform the runner's token.

The reference runner puts ``?token=<runner token>`` into the backend URLs, so the token lands in
``.terraform/``, in plan files stored by the control plane, and in any error terraform prints.
Here each job owns a proxy bound to ``127.0.0.1:0``. Terraform is pointed at it through the
``TF_HTTP_*`` environment variables of the terraform child only (never ``-backend-config``: a
saved plan embeds explicit backend settings, so an apply job would talk to the plan job's dead
port; settings from the environment are left out of the plan and re-read at apply time). The
proxy forwards the calls through the job's ``TerraformBackendAPI`` port (``ctx.api``), whose
agent side adds ``Authorization: Bearer``.

What the proxy lets through is narrow: only paths under a random per-job prefix, only the
state, lock and unlock endpoints, only for this job's workspace, and ``job_id`` is always this
job's. It remembers the lock ID terraform acquired, so after a cancel or a crash the job can
release **its own** lock and nobody else's (the reference unlocks whatever is held).

While terraform is being interrupted (SIGINT, grace period) the job's scope is already
cancelled, but terraform still needs the backend to persist state and unlock; the server
therefore runs in a shielded scope that is closed only when the ``serving()`` block ends.
"""

from __future__ import annotations

import json
import secrets as pysecrets
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import h11
from anyio.abc import SocketAttribute, SocketStream

from runner.sdk import APIReply, APIRequestFailed, APIUnreachable, JobLog, TerraformBackendAPI, backoff_delay

#: Terraform states can be large; anything beyond this is refused rather than buffered.
MAX_BODY_BYTES = 512 * 1024 * 1024
_FORWARD_REQUEST_HEADERS = (b"content-type", b"content-md5")
#: Releasing this job's own lock after a cancel: tries when the control plane did not answer.
_RELEASE_ATTEMPTS = 3


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


def _lock_info(body: bytes) -> dict[str, Any]:
    """A terraform LockInfo JSON body with its keys lower-cased ({} if it is not one)."""
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return {str(k).lower(): v for k, v in data.items()} if isinstance(data, dict) else {}


def _lock_id(body: bytes) -> str:
    """The ``ID`` of a terraform LockInfo JSON body (keys matched case-insensitively)."""
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict):
        return ""
    for key, value in data.items():
        if str(key).lower() == "id":
            return str(value or "")
    return ""


class BackendProxy:
    """One job's terraform backend proxy; see the module docstring."""

    def __init__(self, api: TerraformBackendAPI, *, workspace_id: str, job_id: str, log: JobLog) -> None:
        if not workspace_id:
            raise ValueError("a backend proxy needs a workspace id")
        self._api = api
        self.workspace_id = workspace_id
        self.job_id = job_id
        self._log = log
        self.prefix = "/" + pysecrets.token_urlsafe(18)
        self.port = 0
        self._scope: anyio.CancelScope | None = None
        self._held_lock_id = ""
        self._held_lock_body = b""
        #: (method, upstream path, status) of every forwarded call, for logs and tests.
        self.calls: list[tuple[str, str, int]] = []
        #: The holder's lock info (keys lower-cased) when a lock attempt met someone else's lock.
        self.conflict: dict[str, Any] | None = None
        #: The last state terraform stored through this proxy (the control plane took it).
        self.last_state: bytes | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the backend proxy is not serving")
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def state_url(self) -> str:
        return f"{self.base_url}/v1/terraform-backend?workspace_id={self.workspace_id}&job_id={self.job_id}"

    @property
    def lock_url(self) -> str:
        return f"{self.base_url}/v1/terraform-workspaces/{self.workspace_id}/lock?job_id={self.job_id}"

    @property
    def unlock_url(self) -> str:
        return f"{self.base_url}/v1/terraform-workspaces/{self.workspace_id}/unlock?job_id={self.job_id}"

    def terraform_env(self) -> dict[str, str]:
        """The ``http`` backend settings, for the terraform child's environment only."""
        return {
            "TF_HTTP_ADDRESS": self.state_url,
            "TF_HTTP_LOCK_ADDRESS": self.lock_url,
            "TF_HTTP_UNLOCK_ADDRESS": self.unlock_url,
            "TF_HTTP_LOCK_METHOD": "POST",
            "TF_HTTP_UNLOCK_METHOD": "POST",
            "TF_HTTP_UPDATE_METHOD": "POST",
        }

    @property
    def held_lock_id(self) -> str:
        """The lock ID this job's terraform acquired and has not released ("" if none)."""
        return self._held_lock_id

    # ------------------------------------------------------------------ lifecycle
    @asynccontextmanager
    async def serving(self) -> AsyncIterator[BackendProxy]:
        """Serve on 127.0.0.1 for the duration of the block."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = int(listener.extra(SocketAttribute.local_port))
        self._scope = anyio.CancelScope(shield=True)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._serve, listener, self._scope)
                try:
                    yield self
                finally:
                    self._scope.cancel()
        except BaseExceptionGroup as group:
            # The body's own failure (a HandlerError...) must reach the executor as itself.
            leaves = _leaves(group)
            if len(leaves) == 1:
                raise leaves[0] from None
            raise
        finally:
            self.port = 0

    async def _serve(self, listener: anyio.abc.Listener[SocketStream], scope: anyio.CancelScope) -> None:
        with scope:
            async with listener:
                await listener.serve(self._handle_connection)

    async def release_held_lock(self, *, timeout: float = 15.0) -> str:
        """Unlock the workspace if, and only if, this job's terraform still holds its lock.

        Returns the released lock ID ("" if nothing was held). Runs shielded: it is called from
        cleanup after a cancellation. The job registers it on its exit stack too, so it runs
        whatever happened to the job.
        """
        lock_id = self._held_lock_id
        if not lock_id:
            return ""
        body = self._held_lock_body or json.dumps({"ID": lock_id}).encode()
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            for attempt in range(_RELEASE_ATTEMPTS):
                try:
                    await self._api.unlock_terraform_workspace(self.workspace_id, self.job_id, body)
                except APIRequestFailed as exc:
                    if exc.status < 500 or attempt + 1 == _RELEASE_ATTEMPTS:
                        self._log.error(
                            "could not release this job's state lock", lock_id=lock_id, error=str(exc)
                        )
                        return ""
                except APIUnreachable as exc:
                    if attempt + 1 == _RELEASE_ATTEMPTS:
                        self._log.error(
                            "could not release this job's state lock", lock_id=lock_id, error=str(exc)
                        )
                        return ""
                else:
                    self._log.warning(
                        "released the state lock this job's terraform left behind", lock_id=lock_id
                    )
                    self._held_lock_id = ""
                    self._held_lock_body = b""
                    return lock_id
                await anyio.sleep(backoff_delay(attempt, base=0.2, cap=2.0))
        self._log.error("timed out releasing this job's state lock", lock_id=lock_id)
        return ""

    async def current_state(self) -> bytes:
        """The workspace's state: the one terraform last stored through this proxy, else the
        control plane's copy (an apply that changed nothing may store none)."""
        if self.last_state is not None:
            return self.last_state
        reply = await self._api.terraform_state(self.workspace_id, self.job_id)
        return reply.body

    # ------------------------------------------------------------------ HTTP/1.1
    async def _handle_connection(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                try:
                    request = await self._next_event(conn, stream)
                    if not isinstance(request, h11.Request):
                        return
                    body = bytearray()
                    if conn.they_are_waiting_for_100_continue:
                        await stream.send(
                            conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                        )
                    while True:
                        event = await self._next_event(conn, stream)
                        if isinstance(event, h11.Data):
                            body += event.data
                            if len(body) > MAX_BODY_BYTES:
                                await self._respond(conn, stream, _Reply(413, b"request body too large"))
                                return
                        elif isinstance(event, h11.EndOfMessage):
                            break
                        else:
                            return
                    reply = await self._dispatch(request, bytes(body))
                    await self._respond(conn, stream, reply)
                    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                except (h11.ProtocolError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                except Exception as exc:  # one bad connection must not stop the job's proxy
                    self._log.error("terraform backend proxy error", error=f"{type(exc).__name__}: {exc}")
                    return

    @staticmethod
    async def _next_event(conn: h11.Connection, stream: SocketStream) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data = b""
            conn.receive_data(data)

    @staticmethod
    async def _respond(conn: h11.Connection, stream: SocketStream, reply: _Reply) -> None:
        headers = [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", str(len(reply.body)).encode()),
        ]
        out = conn.send(h11.Response(status_code=reply.status, headers=headers)) or b""
        if reply.body:
            out += conn.send(h11.Data(data=reply.body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send(out)

    # ------------------------------------------------------------------ routing
    async def _dispatch(self, request: h11.Request, body: bytes) -> _Reply:
        method = request.method.decode("ascii", "replace").upper()
        target = urlsplit(request.target.decode("latin-1"))
        if not target.path.startswith(self.prefix + "/"):
            return _Reply(403, b"forbidden")
        path = target.path[len(self.prefix) :]
        query = parse_qs(target.query)
        workspace = f"/v1/terraform-workspaces/{self.workspace_id}"
        headers = {
            name.decode(): value.decode("latin-1")
            for name, value in request.headers
            if name.lower() in _FORWARD_REQUEST_HEADERS
        }
        ws, job = self.workspace_id, self.job_id
        call: Awaitable[APIReply]
        if path == "/v1/terraform-backend":
            if method not in ("GET", "POST"):
                return _Reply(405, b"method not allowed")
            if query.get("workspace_id", [""])[0] != self.workspace_id:
                return _Reply(403, b"not this job's workspace")
            if method == "GET":
                call = self._api.terraform_state(ws, job, headers=headers)
            else:
                lock_id = query["ID"][0] if query.get("ID") else ""
                call = self._api.put_terraform_state(ws, job, body, lock_id=lock_id, headers=headers)
        elif path in (f"{workspace}/lock", f"{workspace}/unlock"):
            if method != "POST":
                return _Reply(405, b"method not allowed")
            if path.endswith("/lock"):
                call = self._api.lock_terraform_workspace(ws, job, body, headers=headers)
            else:
                call = self._api.unlock_terraform_workspace(ws, job, body, headers=headers)
        else:
            return _Reply(403, b"not a terraform backend path of this job's workspace")

        reply = await self._forward(path, call)
        self.calls.append((method, path, reply.status))
        self._log.debug("terraform backend call", method=method, path=path, status=reply.status)
        if 200 <= reply.status < 300:
            self._track_lock(path, body)
            if path == "/v1/terraform-backend" and method == "POST":
                self.last_state = body
        elif path.endswith("/lock") and reply.status in (409, 423):
            self.conflict = _lock_info(reply.body) or {"id": "(unknown)"}
            self._log.error(
                "the terraform workspace is locked by someone else",
                workspace_id=self.workspace_id,
                holder=str(self.conflict.get("id", "")),
                holder_who=str(self.conflict.get("who", "")),
                holder_operation=str(self.conflict.get("operation", "")),
            )
        return reply

    async def _forward(self, path: str, call: Awaitable[APIReply]) -> _Reply:
        """The control plane's answer, as terraform should see it (errors included)."""
        try:
            answer = await call
        except APIRequestFailed as exc:
            return _Reply(exc.status, exc.body, "application/json")
        except APIUnreachable as exc:
            self._log.warning(
                "runner API unreachable for a terraform backend call", path=path, error=str(exc)
            )
            return _Reply(502, b"runner API unreachable")
        return _Reply(answer.status, answer.body, answer.content_type)

    def _track_lock(self, path: str, body: bytes) -> None:
        if path.endswith("/lock"):
            self._held_lock_id = _lock_id(body)
            self._held_lock_body = body
        elif path.endswith("/unlock"):
            released = _lock_id(body)
            if not released or released == self._held_lock_id:
                self._held_lock_id = ""
                self._held_lock_body = b""
