"""Configuration: precedence, validation, one clear line per bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runner.config import ConfigError, load_config

pytestmark = pytest.mark.unit

BASE = {"RUNNER_ID": "runabc", "RUNNER_API_URL": "http://127.0.0.1:1/", "RUNNER_API_TOKEN": "tok-secret"}


def test_reference_env_names_and_defaults(tmp_path: Path) -> None:
    config = load_config(env={**BASE, "RUNNER_STATE_DIR": str(tmp_path)})
    assert config.runner_id == "runabc"
    assert config.api_url == "http://127.0.0.1:1"
    assert config.api_token == "tok-secret"
    assert config.state_dir == tmp_path
    assert config.groups is None
    assert config.concurrency_for("build") == 1
    assert "tok-secret" not in repr(config)


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "runner.toml"
    cfg.write_text('groups = ["build"]\ndrain_grace = "2m"\nmax_concurrency = 3\n')
    config = load_config(
        env={**BASE, "RUNNER_MAX_CONCURRENCY": "5"}, config_file=cfg, flags={"groups": "deploy,sync"}
    )
    assert config.groups == ("deploy", "sync")
    assert config.drain_grace == 120.0
    assert config.max_concurrency == 5


def test_yaml_and_json_files(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("concurrency: {build: 2, deploy: 1}\nhealth_addr: 'off'\n")
    config = load_config(env=BASE, config_file=y)
    assert config.concurrency_for("build") == 2
    assert config.health_addr is None
    j = tmp_path / "c.json"
    j.write_text('{"log_format": "console"}')
    assert load_config(env=BASE, config_file=j).log_format == "console"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"RUNNER_ID": ""}, "RUNNER_ID is required"),
        ({"RUNNER_API_TOKEN": ""}, "RUNNER_API_TOKEN is required"),
        ({"RUNNER_API_URL": "ftp://x"}, "RUNNER_API_URL"),
        ({"RUNNER_API_URL": "http://user:pw@host"}, "must not carry credentials"),
        ({"RUNNER_GROUPS": "build,nope"}, "unknown group(s) nope"),
        ({"RUNNER_CONCURRENCY": "build=0"}, "build must be at least 1"),
        ({"RUNNER_CONCURRENCY": "build"}, "is not GROUP=N"),
        ({"RUNNER_DRAIN_GRACE": "soon"}, "RUNNER_DRAIN_GRACE"),
        ({"RUNNER_LOG_FORMAT": "xml"}, "RUNNER_LOG_FORMAT"),
        ({"RUNNER_HEALTH_ADDR": "nowhere"}, "RUNNER_HEALTH_ADDR"),
        ({"RUNNER_SANDBOX_FAULTS": "2"}, "between 0 and 1"),
        ({"RUNNER_TERRAFORM_SHORTCUTS": "maybe"}, "RUNNER_TERRAFORM_SHORTCUTS: 'maybe' is not true or false"),
    ],
)
def test_invalid_values_name_the_key(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={**BASE, **env})
    assert needle in str(info.value)


@pytest.mark.parametrize(("raw", "expected"), [("off", False), ("0", False), ("TRUE", True), ("yes", True)])
def test_terraform_shortcuts_switch(raw: str, expected: bool) -> None:
    assert load_config(env=BASE).terraform_shortcuts is True
    assert load_config(env={**BASE, "RUNNER_TERRAFORM_SHORTCUTS": raw}).terraform_shortcuts is expected


def test_unknown_file_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(env=BASE, config_file=cfg)


def test_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RUNNER_ID": "r",
        "RUNNER_API_URL": "http://127.0.0.1:9",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["runner: configuration error: RUNNER_API_TOKEN is required"]
