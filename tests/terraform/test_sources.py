"""handlers.sources: real git clones (file:// repositories), local archives, path escapes."""

from __future__ import annotations

import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from handlers.sources import (
    SourceError,
    clone_git,
    fetch_source,
    resolve_subpath,
    split_credentials,
    unpack_local_archive,
)
from runner.api.plans import GitSource, LocalArchive
from runner.process import JobProcessRunner
from runner.redact import Redactor
from tests.support.terraform import GitServer, ListJobLog, git
from tests.support.tools import require_tool


@pytest.fixture
def git_repo(tmp_path: Path, git_server: GitServer) -> dict[str, Any]:
    """A repository with two commits, a branch, a tag, a sub-directory and a submodule."""
    sub = tmp_path / "srv" / "sub"
    sub.mkdir()
    git(sub, "init", "-q", "-b", "main")
    (sub / "lib.tf").write_text("# submodule file\n")
    git(sub, "add", ".")
    git(sub, "commit", "-qm", "sub")

    repo = tmp_path / "srv" / "repo"
    (repo / "modules" / "vpc").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "modules" / "vpc" / "main.tf").write_text("# v1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "one")
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    (repo / "modules" / "vpc" / "main.tf").write_text("# v2\n")
    git(repo, "submodule", "add", "-q", f"{git_server.url}/sub", "vendored")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "two")
    git(repo, "branch", "feature")
    return {
        "url": f"{git_server.url}/repo",
        "path": repo,
        "first": first,
        "second": git(repo, "rev-parse", "HEAD"),
    }


def _tools(tmp_path: Path) -> tuple[JobProcessRunner, Redactor, ListJobLog]:
    secrets = Redactor()
    log = ListJobLog(secrets)
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    return JobProcessRunner(log, workspace=workspace, secrets=secrets), secrets, log


def _clone(tmp_path: Path, source: GitSource, name: str = "out") -> tuple[Any, ListJobLog]:
    processes, secrets, log = _tools(tmp_path)

    async def main() -> Any:
        return await clone_git(source, tmp_path / name, processes=processes, secrets=secrets, log=log)

    return anyio.run(main), log


@pytest.mark.terraform
def test_clone_branch_is_shallow_and_path_resolves(tmp_path: Path, git_repo: dict[str, Any]) -> None:
    fetched, _log = _clone(tmp_path, GitSource(url=git_repo["url"], ref="main", path="modules/vpc"))
    assert fetched.commit == git_repo["second"]
    assert fetched.directory == tmp_path / "out" / "modules" / "vpc"
    assert (fetched.directory / "main.tf").read_text() == "# v2\n"
    assert git(fetched.root, "rev-parse", "--is-shallow-repository") == "true"


@pytest.mark.terraform
def test_clone_tag_and_commit(tmp_path: Path, git_repo: dict[str, Any]) -> None:
    by_tag, _ = _clone(tmp_path, GitSource(url=git_repo["url"], ref="v1"), "tag")
    assert by_tag.commit == git_repo["first"]
    by_sha, _ = _clone(tmp_path, GitSource(url=git_repo["url"], ref=git_repo["first"]), "sha")
    assert by_sha.commit == git_repo["first"]
    assert (by_sha.root / "modules" / "vpc" / "main.tf").read_text() == "# v1\n"
    short, _ = _clone(tmp_path, GitSource(url=git_repo["url"], ref=git_repo["first"][:8]), "short")
    assert short.commit == git_repo["first"]


@pytest.mark.terraform
def test_clone_unknown_ref_fails_clearly(tmp_path: Path, git_repo: dict[str, Any]) -> None:
    with pytest.raises(SourceError, match="no-such-branch"):
        _clone(tmp_path, GitSource(url=git_repo["url"], ref="no-such-branch"))


@pytest.mark.terraform
def test_clone_with_submodules(tmp_path: Path, git_repo: dict[str, Any]) -> None:
    fetched, _ = _clone(tmp_path, GitSource(url=git_repo["url"], ref="main", recurse_submodules=True))
    assert (fetched.root / "vendored" / "lib.tf").is_file()
    without, _ = _clone(tmp_path, GitSource(url=git_repo["url"], ref="main"), "nosub")
    assert not (without.root / "vendored" / "lib.tf").exists()


@pytest.mark.terraform
def test_path_escape_is_refused(tmp_path: Path, git_repo: dict[str, Any]) -> None:
    with pytest.raises(SourceError, match="inside the source"):
        _clone(tmp_path, GitSource(url=git_repo["url"], ref="main", path="../outside"))


class _RecordingGitServer(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        type(self).seen.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.mark.terraform
def test_credentials_travel_as_a_header_never_in_argv_or_logs(tmp_path: Path) -> None:
    require_tool("git")
    _RecordingGitServer.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingGitServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = "ghs_" + "S3cretTok3n" * 3
    url = f"http://x-access-token:{token}@127.0.0.1:{server.server_address[1]}/org/repo.git"
    try:
        with pytest.raises(SourceError) as info:
            _clone(tmp_path, GitSource(url=url, ref="main"))
    finally:
        server.shutdown()
        server.server_close()
    assert token not in str(info.value)
    assert _RecordingGitServer.seen, "git never reached the server"
    assert all(s["authorization"].startswith("Basic ") for s in _RecordingGitServer.seen)
    assert all(token not in s["path"] for s in _RecordingGitServer.seen)


@pytest.mark.unit
def test_split_credentials_scopes_the_header_to_the_origin() -> None:
    remote = split_credentials("https://user:p%40ss@github.com/org/repo.git")
    assert remote.url == "https://github.com/org/repo.git"
    assert remote.env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraHeader"
    assert remote.env["GIT_CONFIG_VALUE_0"].startswith("Authorization: Basic ")
    assert "p@ss" in remote.secrets
    plain = split_credentials("https://github.com/org/repo.git")
    assert plain.env == {}
    assert plain.url == "https://github.com/org/repo.git"
    ssh = split_credentials("git@github.com:org/repo.git")
    assert ssh.url == "git@github.com:org/repo.git"


# --------------------------------------------------------------------------- local archives


def _unpack(tmp_path: Path, spec: str, name: str = "dest") -> Any:
    log = ListJobLog(Redactor())
    return anyio.run(lambda: unpack_local_archive(LocalArchive(local_archive=spec), tmp_path / name, log=log))


@pytest.mark.unit
def test_local_directory_is_copied_without_git_and_terraform_dirs(tmp_path: Path) -> None:
    src = tmp_path / "mod"
    (src / ".git").mkdir(parents=True)
    (src / ".terraform").mkdir()
    (src / "main.tf").write_text("# m\n")
    (src / ".git" / "HEAD").write_text("ref\n")
    fetched = _unpack(tmp_path, str(src))
    assert (fetched.directory / "main.tf").is_file()
    assert not (fetched.directory / ".git").exists()
    assert not (fetched.directory / ".terraform").exists()


@pytest.mark.unit
def test_tgz_and_zip_archives(tmp_path: Path) -> None:
    tgz = tmp_path / "m.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        data = b"# from tgz\n"
        info = tarfile.TarInfo("module/main.tf")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    fetched = _unpack(tmp_path, str(tgz), "a")
    assert (fetched.directory / "main.tf").read_bytes() == b"# from tgz\n"
    assert fetched.directory.name == "module"

    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("main.tf", "# from zip\n")
        zf.writestr("sub/x.tf", "# x\n")
    fetched = _unpack(tmp_path, str(archive), "b")
    assert (fetched.directory / "main.tf").read_text() == "# from zip\n"
    assert (fetched.directory / "sub" / "x.tf").is_file()


@pytest.mark.unit
def test_archive_escapes_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.tf")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SourceError, match="escapes"):
        _unpack(tmp_path, str(evil), "c")
    assert not (tmp_path / "escaped.tf").exists()

    link = tmp_path / "link.tgz"
    with tarfile.open(link, "w:gz") as tar:
        info = tarfile.TarInfo("passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(SourceError, match="refused"):
        _unpack(tmp_path, str(link), "d")

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("/abs.tf", "x")
    with pytest.raises(SourceError, match="escapes"):
        _unpack(tmp_path, str(archive), "e")

    outside = tmp_path / "dir-with-link"
    outside.mkdir()
    (outside / "main.tf").write_text("#\n")
    (outside / "secrets").symlink_to("/etc")
    with pytest.raises(SourceError, match="symlink"):
        _unpack(tmp_path, str(outside), "f")


@pytest.mark.unit
def test_missing_or_unknown_archives(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        _unpack(tmp_path, str(tmp_path / "nope.tgz"))
    odd = tmp_path / "m.rar"
    odd.write_bytes(b"x")
    with pytest.raises(SourceError, match="neither a directory"):
        _unpack(tmp_path, str(odd), "g")
    with pytest.raises(SourceError, match="no source"):
        anyio.run(
            lambda: fetch_source(
                git=None,
                local_archive=None,
                dest=tmp_path / "h",
                processes=None,  # type: ignore[arg-type]
                secrets=Redactor(),
                log=ListJobLog(Redactor()),
            )
        )


@pytest.mark.unit
def test_resolve_subpath_rules(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert resolve_subpath(tmp_path, "a") == tmp_path / "a"
    assert resolve_subpath(tmp_path, "") == tmp_path
    with pytest.raises(SourceError):
        resolve_subpath(tmp_path, "/etc")
    with pytest.raises(SourceError):
        resolve_subpath(tmp_path, "missing")
    (tmp_path / "out").symlink_to("/")
    with pytest.raises(SourceError, match="symlink"):
        resolve_subpath(tmp_path, "out")
