"""A classic helm repository (``helm repo index`` output) served on loopback with basic auth.

``http.server`` in a thread: every request without the right ``Authorization`` gets 401, so a
chart fetched through it proves the credentials reached helm (through the job's repositories.yaml).
"""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helm.conftest import write_chart

USER, PASSWORD = "chartreader", "s3cr3t-repo-pass"


@dataclass
class ChartRepoServer:
    root: Path
    port: int = 0
    paths: list[str] = field(default_factory=list)
    refused: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/charts"

    @property
    def url_with_auth(self) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.port}/charts"

    def add_chart(self, helm: str, *, name: str = "demo", version: str = "0.4.0") -> None:
        """Package a chart into the repository and re-index it."""
        chart = write_chart(self.root.parent / f"src-{name}-{version}", name=name, version=version)
        for args in (["package", str(chart), "-d", str(self.root)], ["repo", "index", str(self.root)]):
            done = subprocess.run([helm, *args], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr


def _handler(repo: ChartRepoServer) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.headers.get("Authorization") != expected:
                repo.refused += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="charts"')
                self.end_headers()
                return
            repo.paths.append(self.path)
            name = self.path.split("?", 1)[0].removeprefix("/charts/")
            path = repo.root / name
            if "/" in name or not path.is_file():
                self.send_response(404)
                self.end_headers()
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def chart_repo(tmp_path: Path) -> Iterator[ChartRepoServer]:
    repo = ChartRepoServer(tmp_path / "repo")
    repo.root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(repo))
    repo.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield repo
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
