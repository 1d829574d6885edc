"""A moto server as STS on loopback that records every request, so tests can read which
credentials signed each call (the ``Credential=`` of the SigV4 header) and with what parameters."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.registry import _stop, _wait_http, free_port
from tests.support.tools import require_tool

#: Variables of the AWS SDK default chain that a developer's or CI's shell might carry.
AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@dataclass(frozen=True)
class StsCall:
    action: str
    key_id: str  # the access key id that signed the request
    params: dict[str, str]


@dataclass
class RecordingSts:
    url: str

    def _post(self, path: str) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/{path}", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def reset(self) -> None:
        self._post("reset")
        self._post("recorder/reset-recording")
        self._post("recorder/start-recording")

    def calls(self) -> list[StsCall]:
        with urllib.request.urlopen(f"{self.url}/moto-api/recorder/download-recording", timeout=10) as r:
            text = r.read().decode()
        out = []
        for line in text.splitlines():
            entry = json.loads(line)
            if "/moto-api/" in entry["url"]:
                continue
            auth = entry["headers"].get("Authorization", "")
            key_id = auth.partition("Credential=")[2].partition("/")[0]
            body = base64.b64decode(entry["body"]).decode() if entry.get("body_encoded") else entry["body"]
            params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(entry["url"]).query))
            params.update(urllib.parse.parse_qsl(body or ""))
            out.append(StsCall(params.get("Action", ""), key_id, params))
        return out


@pytest.fixture(scope="session")
def recording_sts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingSts]:
    binary = require_tool("moto_server", hint="pip install 'moto[server]'")
    workdir = tmp_path_factory.mktemp("moto-sts")
    port = free_port()
    log = workdir / "moto.log"
    env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(workdir / "recording.jsonl")}
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=fh, cwd=workdir, env=env
        )
    _wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, log, timeout=30)
    yield RecordingSts(f"http://127.0.0.1:{port}")
    _stop(proc)


@pytest.fixture
def sts(recording_sts: RecordingSts, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RecordingSts:
    """moto as STS for this test, its recording empty; the runner's AWS environment cleared (no
    shared files, no instance metadata), so only what the test sets is there."""
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("RUNNER_AWS_ENDPOINT_URL", recording_sts.url)
    recording_sts.reset()
    return recording_sts


class Secrets:
    """A secret registry that keeps what it is given (``runner.sdk.SecretRegistry``'s shape)."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def register(self, *values: str | None) -> None:
        self.values.update(v for v in values if v)

    def mask(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, "***")
        return text


class Log:
    """A job log that keeps its records (``runner.sdk.JobLog``'s shape)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, object]]] = []

    def log(self, level: str, message: str, **attrs: object) -> None:
        self.records.append((level, message, attrs))

    def debug(self, message: str, **attrs: object) -> None:
        self.log("debug", message, **attrs)

    def info(self, message: str, **attrs: object) -> None:
        self.log("info", message, **attrs)

    def warning(self, message: str, **attrs: object) -> None:
        self.log("warning", message, **attrs)

    def error(self, message: str, **attrs: object) -> None:
        self.log("error", message, **attrs)

    def bind(self, **attrs: object) -> Log:
        return self
