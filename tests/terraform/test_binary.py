"""Terraform binary resolution: cache, PATH, a loopback mirror with SHA256SUMS, clear failures."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from handlers.terraform.binary import (
    BinaryNotFound,
    ChecksumMismatch,
    VersionRequest,
    normalize_version,
    platform_suffix,
    requested_version,
    resolve_binary,
)
from handlers.terraform.sandbox import SandboxTerraformHandler
from runner.api.plans import SandboxRunPlan
from runner.process import JobProcessRunner
from runner.redact import Redactor
from tests.support.terraform import BackendStub, JobFactory, ListJobLog, data_module, write_module

pytestmark = pytest.mark.terraform

NO_TERRAFORM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Mirror:
    url: str
    root: Path
    hits: list[str] = field(default_factory=list)

    def publish(self, version: str, binary: bytes | Path, *, corrupt_sum: bool = False) -> None:
        folder = self.root / version
        folder.mkdir(parents=True, exist_ok=True)
        name = f"terraform_{version}_{platform_suffix()}.zip"
        with zipfile.ZipFile(folder / name, "w", compression=zipfile.ZIP_STORED) as zf:
            if isinstance(binary, Path):
                zf.write(binary, "terraform")
            else:
                zf.writestr("terraform", binary)
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if corrupt_sum:
            digest = "0" * 64
        (folder / f"terraform_{version}_SHA256SUMS").write_text(
            f"{'1' * 64}  terraform_{version}_darwin_arm64.zip\n{digest}  {name}\n"
        )


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "mirror"
    root.mkdir()
    hits: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            hits.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Mirror(url=f"http://127.0.0.1:{server.server_address[1]}", root=root, hits=hits)
    server.shutdown()
    server.server_close()


def _resolve(tmp_path: Path, request: VersionRequest, tools: Path, mirror_url: str | None) -> Any:
    secrets = Redactor()
    log = ListJobLog(secrets)
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    processes = JobProcessRunner(log, workspace=workspace, secrets=secrets)
    return anyio.run(
        lambda: resolve_binary(request, tools_dir=tools, mirror_url=mirror_url, processes=processes, log=log)
    )


def _real_terraform() -> Path:
    found = shutil.which("terraform")
    if not found:
        pytest.skip("no terraform to publish into the test mirror")
    return Path(found)


def _real_version(path: Path) -> str:
    out = subprocess.run([str(path), "version", "-json"], capture_output=True, check=True, text=True)
    return str(json.loads(out.stdout)["terraform_version"])


def test_download_from_mirror_verified_then_cached(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _real_terraform()
    version = _real_version(real)
    mirror.publish(version, real)
    monkeypatch.setenv("PATH", NO_TERRAFORM_PATH)
    tools = tmp_path / "tools"

    got = _resolve(tmp_path, VersionRequest(version, "test"), tools, mirror.url)
    assert got.source == "mirror"
    assert got.path == tools / "terraform" / version / "terraform"
    assert _real_version(got.path) == version
    downloads = [h for h in mirror.hits if h.endswith(".zip")]
    assert len(downloads) == 1

    again = _resolve(tmp_path, VersionRequest(version, "test"), tools, "http://127.0.0.1:9")
    assert again.source == "cache"
    assert [h for h in mirror.hits if h.endswith(".zip")] == downloads, "never downloaded twice"
    assert not list((tools / "terraform" / version).glob(".download-*")), "no partial download left"


def test_concurrent_jobs_download_once(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror.publish("7.7.7", b"#!/bin/sh\necho fake\n")
    monkeypatch.setenv("PATH", NO_TERRAFORM_PATH)
    tools = tmp_path / "tools"
    secrets = Redactor()
    log = ListJobLog(secrets)
    (tmp_path / "ws").mkdir()
    processes = JobProcessRunner(log, workspace=tmp_path / "ws", secrets=secrets)
    sources: list[str] = []

    async def one() -> None:
        got = await resolve_binary(
            VersionRequest("7.7.7", "t"), tools_dir=tools, mirror_url=mirror.url, processes=processes, log=log
        )
        sources.append(got.source)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)

    anyio.run(main)
    assert sorted(sources) == ["cache", "cache", "cache", "mirror"]
    assert len([h for h in mirror.hits if h.endswith(".zip")]) == 1


def test_bad_checksum_is_refused_and_nothing_cached(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror.publish("8.8.8", b"#!/bin/sh\necho evil\n", corrupt_sum=True)
    monkeypatch.setenv("PATH", NO_TERRAFORM_PATH)
    tools = tmp_path / "tools"
    with pytest.raises(ChecksumMismatch, match=r"SHA256.*refused"):
        _resolve(tmp_path, VersionRequest("8.8.8", "test"), tools, mirror.url)
    folder = tools / "terraform" / "8.8.8"
    assert not (folder / "terraform").exists()
    assert not list(folder.glob(".*")), "no temporary file left behind"


def test_missing_version_says_what_and_where(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _real_terraform()
    monkeypatch.setenv("PATH", f"{real.parent}:{NO_TERRAFORM_PATH}")
    tools = tmp_path / "tools"
    with pytest.raises(BinaryNotFound) as info:
        _resolve(tmp_path, VersionRequest("0.0.1", "app config sandbox.terraform_version"), tools, mirror.url)
    message = str(info.value)
    assert "terraform 0.0.1" in message
    assert "app config sandbox.terraform_version" in message
    assert str(tools / "terraform" / "0.0.1" / "terraform") in message
    assert f"PATH ({real})" in message
    assert mirror.url in message
    assert "404" in message

    with pytest.raises(BinaryNotFound, match="none configured"):
        _resolve(tmp_path, VersionRequest("0.0.1", "plan"), tools, None)


def test_path_binary_used_when_its_version_matches(tmp_path: Path) -> None:
    real = _real_terraform()
    version = _real_version(real)
    got = _resolve(tmp_path, VersionRequest(version, "test"), tmp_path / "tools", None)
    assert got.source == "path"
    assert got.path == real
    unversioned = _resolve(tmp_path, VersionRequest(None, "default"), tmp_path / "tools", None)
    assert unversioned.source == "path"


@pytest.mark.unit
def test_normalize_version() -> None:
    assert normalize_version("v1.7.5") == "1.7.5"
    assert normalize_version(" 1.11.4 ") == "1.11.4"
    assert normalize_version("") is None
    assert normalize_version("1.6.0-beta1") == "1.6.0-beta1"
    with pytest.raises(BinaryNotFound, match="exact version"):
        normalize_version("~> 1.5")


def test_version_precedence_app_config_plan_config_path(tf_job: JobFactory, tf_backend: BackendStub) -> None:
    tf_backend.state.app_configs["apc1"] = {"sandbox": {"terraform_version": "v1.9.8"}}
    tf_backend.state.app_configs["apc2"] = {
        "component_config_connections": [
            {"component_id": "other", "terraform_module": {"version": "1.1.1"}},
            {"component_id": "cmp1", "terraform_module": {"version": "v1.2.3"}},
        ]
    }
    job = tf_job(SandboxTerraformHandler, SandboxRunPlan(), terraform_version="1.5.0")

    async def main() -> list[VersionRequest]:
        try:
            return [
                await requested_version(
                    job.ctx, app_id="app", app_config_id="apc1", plan_version="1.0.0", sandbox=True
                ),
                await requested_version(
                    job.ctx,
                    app_id="app",
                    app_config_id="apc2",
                    plan_version="",
                    sandbox=False,
                    component_id="cmp1",
                ),
                await requested_version(
                    job.ctx, app_id="app", app_config_id="nope", plan_version="1.0.0", sandbox=True
                ),
                await requested_version(job.ctx, app_id="", app_config_id="", plan_version="", sandbox=True),
            ]
        finally:
            await job.client.aclose()

    first, second, third, got = anyio.run(main)
    assert first == VersionRequest("1.9.8", "app config sandbox.terraform_version")
    assert second == VersionRequest("1.2.3", "app config terraform_module.version")
    assert third == VersionRequest("1.0.0", "plan terraform_version")
    assert any("app config not readable" in m for m in job.log.messages("warning"))
    assert got == VersionRequest("1.5.0", "runner config terraform_version")


def test_a_job_runs_with_terraform_from_the_mirror(
    tmp_path: Path,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    tf_job: JobFactory,
    tf_backend: BackendStub,
) -> None:
    real = _real_terraform()
    version = _real_version(real)
    mirror.publish(version, real)
    monkeypatch.setenv("PATH", NO_TERRAFORM_PATH)
    module = write_module(tmp_path / "mod", data_module(1))
    plan = SandboxRunPlan.model_validate(
        {
            "local_archive": {"local_archive": str(module)},
            "terraform_backend": {"WorkspaceID": tf_backend.add_workspace()},
            "terraform_version": f"v{version}",
        }
    )
    job = tf_job(
        SandboxTerraformHandler,
        plan,
        operation="create-apply-plan",
        tools_dir=tmp_path / "job-tools",
        terraform_mirror_url=mirror.url,
    )
    job.run_sync()
    assert job.ctx.result is not None
    assert job.ctx.result.success
    assert "terraform downloaded and verified" in job.log.messages("info")
    assert any(
        m.startswith(f"$ {tmp_path / 'job-tools'}/terraform/{version}/terraform plan")
        for m in job.log.messages()
    )
