"""A loopback recording reverse proxy: a real runner process on one side, the embedded control
plane on the other, and a record of every call between them (docs/runner-api.md §10).

Each call is kept as what the contract cares about, not as bytes: the method, the **path
template** (matched against the control plane's own routes, so ``/v1/runner-jobs/job.../plan``
becomes ``/v1/runner-jobs/{job_id}/plan``), the query keys, the shape of the body and which
credential carried it (the runner token, the log stream's write token, a ``?token=`` query, or
none). ``Transcript`` turns the calls of one job into readable lines that a test compares with
the reference's sequence for that job type, so a failure is a plain diff.

A new handler adds its transcript by submitting its job through ``ConformanceRig.run_job`` and
listing its expected lines (see ``tests/conformance/test_runner_transcripts.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.routing import Route

from controlplane.app import create_app
from controlplane.store import Store

#: Hop-by-hop headers a proxy must not forward.
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
)


def route_templates() -> list[tuple[re.Pattern[str], str]]:
    """(path regex, path template) of every route the embedded control plane serves."""
    store = Store.open(None)
    try:
        app = create_app(store)
        return [(r.path_regex, r.path) for r in app.routes if isinstance(r, Route)]
    finally:
        store.close()


@dataclass(frozen=True)
class Call:
    """One request as the contract sees it."""

    method: str
    template: str
    path: str
    query: tuple[str, ...]
    shape: str
    token: str
    status: int
    body: Any = field(default=None, compare=False, repr=False)

    def line(self) -> str:
        query = f"?{'&'.join(self.query)}" if self.query else ""
        return f"{self.method} {self.template}{query} {self.shape} [{self.token}]"


def body_shape(content_type: str, body: bytes) -> tuple[str, Any]:
    """A short description of a request body, and the decoded JSON when it is JSON."""
    if not body:
        return "-", None
    if "protobuf" in content_type:
        return "protobuf", None
    try:
        value = json.loads(body)
    except ValueError:
        return "text", None
    if isinstance(value, dict):
        keys = []
        for key in sorted(value):
            item = value[key]
            if key == "status" and isinstance(item, str):
                keys.append(f"status={item}")
            elif item not in (None, "", {}, [], 0, False):
                keys.append(key)
        return "{" + ",".join(keys) + "}", value
    if isinstance(value, str):
        try:
            base64.b64decode(value, validate=True)
            return "base64-string", value
        except (binascii.Error, ValueError):
            return "string", value
    return type(value).__name__, value


class RecordingProxy:
    """``url`` forwards to ``upstream`` and appends a ``Call`` per request to ``calls``."""

    def __init__(self, upstream: str, *, runner_token: str, admin_token: str = "") -> None:
        self.upstream = upstream.rstrip("/")
        self.runner_token = runner_token
        self.admin_token = admin_token
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._templates = route_templates()
        self._client = httpx.Client(timeout=60.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                proxy._forward(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def template(self, path: str) -> str:
        for regex, template in self._templates:
            if regex.match(path):
                return template
        return f"UNKNOWN {path}"

    def credential(self, headers: Any, query: dict[str, str]) -> str:
        auth = str(headers.get("Authorization") or "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if "token" in query:
            return "query-token"
        if not token:
            return "none"
        if token == self.runner_token:
            return "runner"
        if token == self.admin_token:
            return "admin"
        return "write-token"

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP and k.lower() != "host"}
        try:
            response = self._client.request(
                handler.command, self.upstream + handler.path, content=body, headers=headers
            )
            status, payload = response.status_code, response.content
            out_headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _HOP]
        except httpx.HTTPError as exc:
            status, payload, out_headers = 502, str(exc).encode(), [("content-type", "text/plain")]
        shape, decoded = body_shape(str(handler.headers.get("Content-Type") or ""), body)
        call = Call(
            method=handler.command,
            template=self.template(split.path),
            path=split.path,
            query=tuple(sorted(k for k in query if k != "token")),
            shape=shape,
            token=self.credential(handler.headers, query),
            status=status,
            body=decoded,
        )
        with self._lock:
            self.calls.append(call)
        try:
            handler.send_response(status)
            for key, value in out_headers:
                if key.lower() not in ("content-length", "content-encoding"):
                    handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the runner went away (it exits after shut-down; a held poll is dropped)


#: Calls every job's transcript leaves out: they run beside the job, not in its sequence.
BACKGROUND = frozenset(
    {
        "/v1/runners/{runner_id}/settings",
        "/v1/runners/{runner_id}/heart-beats",
        "/v1/runners/{runner_id}/jobs",
    }
)
#: Made in parallel with the job's steps: the watcher's job reads and the log batches.
PARALLEL = frozenset({("GET", "/v1/runner-jobs/{job_id}"), ("POST", "/v1/log-streams/{log_stream_id}/logs")})
#: Terraform's own backend traffic: how many reads, locks and unlocks depends on terraform's
#: commands, so a run of them is one line naming the distinct calls.
TERRAFORM = frozenset(
    {
        "/v1/terraform-backend",
        "/v1/terraform-workspaces/{workspace_id}/lock",
        "/v1/terraform-workspaces/{workspace_id}/unlock",
    }
)


@dataclass
class Transcript:
    """The calls made while one job ran (the rig runs one job at a time), in order."""

    calls: list[Call]

    def lines(self) -> list[str]:
        """One line per call; background and parallel calls left out, a run of identical lines
        collapsed into one, and a run of terraform backend calls into one ``terraform`` line."""
        out: list[str] = []
        run: list[Call] = []

        def flush() -> None:
            if run:
                names = sorted({f"{c.method} {c.template.rsplit('/', 1)[-1]}" for c in run})
                tokens = sorted({c.token for c in run})
                out.append(f"terraform backend: {', '.join(names)} [{','.join(tokens)}]")
                run.clear()

        for call in self.calls:
            if call.template in BACKGROUND or (call.method, call.template) in PARALLEL:
                continue
            if call.template in TERRAFORM:
                run.append(call)
                continue
            flush()
            line = call.line()
            if not out or out[-1] != line:
                out.append(line)
        flush()
        return out

    def parallel(self) -> list[Call]:
        return [c for c in self.calls if (c.method, c.template) in PARALLEL]

    def log_writes(self) -> list[Call]:
        return [c for c in self.calls if c.template == "/v1/log-streams/{log_stream_id}/logs"]


def diff(expected: Sequence[str], observed: Sequence[str], job_type: str) -> str:
    """A unified diff of two transcripts, for an assertion message."""
    import difflib

    return "\n".join(
        difflib.unified_diff(
            list(expected), list(observed), f"reference {job_type}", f"our runner {job_type}", lineterm=""
        )
    )
