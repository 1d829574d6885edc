"""Per-execution workspaces on a real file system (tmp_path)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner.handler import HandlerError
from runner.workspace import (
    DiskFull,
    InvalidExecutionId,
    Workspaces,
    check_execution_id,
    free_bytes,
    remove_tree,
)
from tests.support.tools import require_tool

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_root_is_private(tmp_path: Path) -> None:
    root = tmp_path / "state" / "workspaces"
    Workspaces(root)
    assert root.is_dir()
    assert mode(root) == 0o700


def test_create_makes_private_dir_with_tmp_and_home(tmp_path: Path) -> None:
    ws = Workspaces(tmp_path / "ws")
    path = ws.create("exec-01abc")
    assert path == tmp_path / "ws" / "exec-01abc" == ws.path("exec-01abc")
    assert mode(path) == 0o700
    assert (path / "tmp").is_dir()
    assert (path / ".home").is_dir()
    assert mode(path / "tmp") == 0o700


def test_create_again_starts_empty(tmp_path: Path) -> None:
    ws = Workspaces(tmp_path / "ws")
    path = ws.create("e1")
    (path / "stale.txt").write_text("left by a crashed runner")
    again = ws.create("e1")
    assert sorted(p.name for p in again.iterdir()) == [".home", "tmp"]


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "x..y", ".hidden", "/abs", "a\0b", "x" * 201])
def test_unsafe_ids_are_refused(tmp_path: Path, bad: str) -> None:
    ws = Workspaces(tmp_path / "ws")
    with pytest.raises(InvalidExecutionId):
        ws.create(bad)
    with pytest.raises(InvalidExecutionId):
        ws.path(bad)
    assert list((tmp_path / "ws").iterdir()) == []


def test_check_execution_id_accepts_real_ids() -> None:
    for good in ("jobexec2x7q4kz9", "01J9ZQ-abc_def.1", "a"):
        assert check_execution_id(good) == good


def test_remove_read_only_tree(tmp_path: Path) -> None:
    """Go module caches and provider plugins are read-only; rm -rf must still work."""
    ws = Workspaces(tmp_path / "ws")
    path = ws.create("e1")
    deep = path / "pkg" / "mod" / "cache"
    deep.mkdir(parents=True)
    (deep / "file.go").write_text("package x")
    (deep / "file.go").chmod(0o400)
    for d in (deep, deep.parent, deep.parent.parent):
        d.chmod(0o500)
    ws.remove("e1")
    assert not path.exists()


def test_remove_read_only_tree_without_root_powers() -> None:
    """As root, permission bits never block rm -rf; run the removal without root's override."""
    script = textwrap.dedent(
        """
        import os, sys, tempfile
        from pathlib import Path
        from runner.workspace import Workspaces
        ws = Workspaces(Path(tempfile.mkdtemp()) / "ws")
        deep = ws.create("e1") / "pkg" / "mod"
        deep.mkdir(parents=True)
        (deep / "f").write_text("x")
        for d in (deep, deep.parent):
            d.chmod(0o500)
        try:
            (deep / "g").write_text("y")
            sys.exit("the tree is not read-only for this user")
        except PermissionError:
            pass
        ws.remove("e1")
        print("removed" if not (ws.root / "e1").exists() else "left")
        """
    )
    argv = [sys.executable, "-c", script]
    if os.geteuid() == 0:  # drop the capabilities that let root ignore permission bits
        caps = "-dac_override,-dac_read_search,-fowner"
        argv = [require_tool("setpriv"), "--bounding-set", caps, "--inh-caps", caps, *argv]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "removed"


def test_remove_does_not_follow_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    ws = Workspaces(tmp_path / "ws")
    path = ws.create("e1")
    (path / "link").symlink_to(outside)
    (path / "filelink").symlink_to(outside / "keep.txt")
    ws.remove("e1")
    assert not path.exists()
    assert (outside / "keep.txt").read_text() == "precious"


def test_remove_missing_is_fine(tmp_path: Path) -> None:
    ws = Workspaces(tmp_path / "ws")
    ws.remove("never-created")
    remove_tree(tmp_path / "nope")
    assert list((tmp_path / "ws").iterdir()) == []


def test_sweep_removes_everything_not_kept(tmp_path: Path) -> None:
    ws = Workspaces(tmp_path / "ws")
    for name in ("a", "b", "c"):
        (ws.create(name) / "data").write_text(name)
    (ws.root / "stray-file").write_text("x")
    removed = ws.sweep(keep={"b"})
    assert removed == ["a", "c", "stray-file"]
    assert sorted(p.name for p in ws.root.iterdir()) == ["b"]
    assert (ws.root / "b" / "data").read_text() == "b"
    assert ws.sweep(keep=["b"]) == []


def test_usage_bytes_counts_files_once(tmp_path: Path) -> None:
    ws = Workspaces(tmp_path / "ws")
    before = ws.usage_bytes()
    path = ws.create("e1")
    blob = path / "blob"
    blob.write_bytes(os.urandom(1024 * 1024))
    os.link(blob, path / "hardlink")
    used = ws.usage_bytes() - before
    assert 1024 * 1024 <= used < 2 * 1024 * 1024


def test_free_bytes_of_missing_path_measures_ancestor(tmp_path: Path) -> None:
    free = free_bytes(tmp_path / "does" / "not" / "exist")
    assert free > 0
    assert abs(free - free_bytes(tmp_path)) < 64 * 1024 * 1024


def test_disk_full_is_a_clear_handler_error(tmp_path: Path) -> None:
    ws = Workspaces(tmp_path / "ws", min_free_bytes=1 << 60)
    with pytest.raises(DiskFull) as info:
        ws.create("e1")
    assert isinstance(info.value, HandlerError)
    message = str(info.value)
    assert message.startswith("disk full: only ")
    assert str(tmp_path / "ws") in message
    assert "MiB" in message
    assert info.value.details["required_bytes"] == str(1 << 60)
    assert not (tmp_path / "ws" / "e1").exists()
