"""runner.secrecy: the token file, the scrubbed environment, the non-dumpable process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.secrecy import TokenFileError, token_from_file

pytestmark = pytest.mark.unit


def test_the_token_file_fills_the_environment_and_an_explicit_token_wins(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("tok-from-file\n")
    env = {"RUNNER_API_TOKEN_FILE": str(path)}
    token_from_file(env)
    assert env["RUNNER_API_TOKEN"] == "tok-from-file"
    env = {"RUNNER_API_TOKEN_FILE": str(path), "RUNNER_API_TOKEN": "explicit"}
    token_from_file(env)
    assert env["RUNNER_API_TOKEN"] == "explicit"


def test_an_unreadable_or_empty_token_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read"):
        token_from_file({"RUNNER_API_TOKEN_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(TokenFileError, match="is empty"):
        token_from_file({"RUNNER_API_TOKEN_FILE": str(tmp_path / "empty")})


def test_scrubbing_removes_the_token_from_proc_environ_and_the_process_is_undumpable() -> None:
    script = (
        "import os\n"
        "from runner import secrecy\n"
        "secrecy.protect_process()\n"
        "secrecy.scrub_token()\n"
        "raw = open(f'/proc/{os.getpid()}/environ', 'rb').read()\n"
        "print(b'sekrit-4242' in raw, 'RUNNER_API_TOKEN' in os.environ, secrecy.is_dumpable())\n"
    )
    env = {**os.environ, "RUNNER_API_TOKEN": "sekrit-4242"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
