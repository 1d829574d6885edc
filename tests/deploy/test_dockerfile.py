"""The Dockerfile and .dockerignore, read as data (no hadolint here; the real build is test_image_build).

The production base image cannot be pulled in this environment, so these checks hold the promises
that do not need a build: non-root, the entrypoint, no secret in ENV/ARG, tools pinned by SHA256,
the state dir as a volume, a health check on /healthz.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass

import pytest

from runner.config import ENV_NAMES
from tests.deploy.conftest import REPO

pytestmark = pytest.mark.unit

DOCKERFILE = REPO / "Dockerfile"
STATE_DIR = "/var/lib/byoc-runner"
SECRET_WORDS = re.compile(
    r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|PRIVATE|API_KEY|ACCESS_KEY", re.IGNORECASE
)


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped; stage = FROM count - 1."""
    out: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword, args.strip()))
    return out


INSTRUCTIONS = parse(DOCKERFILE.read_text())
FINAL = max(i.stage for i in INSTRUCTIONS)


def final(keyword: str) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.stage == FINAL and i.keyword == keyword]


def env_pairs(args: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(args))


def global_args() -> dict[str, str]:
    """ARGs before the first FROM (usable in FROM lines)."""
    out = {}
    for i in INSTRUCTIONS:
        if i.stage == -1 and i.keyword == "ARG":
            name, _, default = i.args.partition("=")
            out[name] = default
    return out


def test_parse_sees_three_stages() -> None:
    froms = [i.args for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert [f.split(" AS ")[-1] for f in froms] == ["tools", "build", "runtime"]


def test_base_image_is_pinned_python_3_11_slim_bookworm() -> None:
    base = global_args()["PYTHON_IMAGE"]
    assert base == "python:3.11-slim-bookworm"
    for i in INSTRUCTIONS:
        if i.keyword == "FROM":
            assert i.args.startswith("${PYTHON_IMAGE}") or i.args.split()[0] in {"tools", "build"}
    assert ":latest" not in DOCKERFILE.read_text()


def test_runs_as_uid_10001_to_the_end() -> None:
    users = final("USER")
    assert users == ["10001:10001"]
    last_user = max(n for n, i in enumerate(INSTRUCTIONS) if i.keyword == "USER")
    assert not [i for i in INSTRUCTIONS[last_user:] if i.keyword == "RUN"], "nothing runs as root after USER"
    run = " ".join(final("RUN"))
    assert "--uid 10001" in run
    assert f"install -d -o 10001 -g 10001 -m 0750 {STATE_DIR}" in run


def test_entrypoint_and_cmd() -> None:
    assert [json.loads(a) for a in final("ENTRYPOINT")] == [["runner"]]
    assert [json.loads(a) for a in final("CMD")] == [["run"]]
    assert final("STOPSIGNAL") == ["SIGTERM"]


def test_container_environment() -> None:
    env: dict[str, str] = {}
    for args in final("ENV"):
        env.update(env_pairs(args))
    assert env["RUNNER_IN_CONTAINER"] == "1"
    assert env["RUNNER_STATE_DIR"] == STATE_DIR
    assert env["RUNNER_HEALTH_ADDR"] == "0.0.0.0:9090"
    runner_names = {n for n in env if n.startswith("RUNNER_")} - {"RUNNER_IN_CONTAINER"}
    assert runner_names <= set(ENV_NAMES.values())
    assert [json.loads(v) for v in final("VOLUME")] == [[STATE_DIR]]
    assert final("EXPOSE") == ["9090"]


def test_no_secret_in_env_or_arg() -> None:
    for i in INSTRUCTIONS:
        if i.keyword == "ARG":
            name = i.args.partition("=")[0]
            assert not SECRET_WORDS.search(name), f"ARG {name} looks like a secret"
        if i.keyword == "ENV":
            for name in env_pairs(i.args):
                assert not SECRET_WORDS.search(name), f"ENV {name} looks like a secret"


def test_every_downloaded_tool_is_checksum_pinned() -> None:
    args = {}
    for i in INSTRUCTIONS:
        if i.keyword == "ARG" and "=" in i.args:
            name, _, default = i.args.partition("=")
            args[name] = default
    urls = {n: v for n, v in args.items() if n.endswith("_URL")}
    assert set(urls) == {"TERRAFORM_URL", "HELM_URL"}
    runs = " ".join(i.args for i in INSTRUCTIONS if i.keyword == "RUN")
    for name in urls:
        tool = name.removesuffix("_URL")
        assert re.fullmatch(r"[0-9a-f]{64}", args[f"{tool}_SHA256"]), f"{tool}_SHA256 is not a sha256"
        assert f'--url "${{{name}}}" --sha256 "${{{tool}_SHA256}}"' in runs
    assert "curl" not in runs
    assert "wget" not in runs
    copied = " ".join(final("COPY"))
    assert "--from=tools /tools/terraform /tools/helm /usr/local/bin/" in copied


def test_build_installs_the_locked_runtime_set_then_the_runner_alone() -> None:
    """The image holds the lock's versions (hash-checked), not whatever pip resolves on build day."""
    build = [i for i in INSTRUCTIONS if i.stage == 1]
    runs = [i.args for i in build if i.keyword == "RUN"]
    locked = [n for n, r in enumerate(runs) if "--require-hashes -r requirements/runtime.txt" in r]
    package = [n for n, r in enumerate(runs) if "pip install ${PIP_ARGS} --no-deps ." in r]
    assert len(locked) == 1, runs
    assert len(package) == 1, runs
    assert locked[0] < package[0]
    for run in runs:
        if "pip install" in run:
            assert "--require-hashes" in run or "--no-deps" in run, f"an unlocked install: {run}"
    copies = [i.args for i in build if i.keyword == "COPY"]
    lock = "requirements/runtime.txt ./requirements/runtime.txt"
    assert lock in copies
    # The lock is copied before the sources, so a code change does not reinstall the dependencies.
    assert copies.index(lock) < copies.index("runner ./runner")


def test_health_check_hits_healthz() -> None:
    checks = final("HEALTHCHECK")
    assert len(checks) == 1
    assert "/healthz" in checks[0]
    assert "RUNNER_HEALTH_ADDR" in checks[0]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a parent's exclusion covers children."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatchcase(prefix, pat) or (
                pat.startswith("**/") and fnmatch.fnmatchcase(parts[depth - 1], pat[3:])
            ):
                result = not negate
                break
    return result


def test_dockerignore_keeps_only_what_the_build_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.strip().startswith("#")]
    needed = [
        "pyproject.toml",
        "README.md",
        "runner/config.py",
        "handlers/noop.py",
        "scripts/fetch-verified.py",
    ]
    needed += ["controlplane/__init__.py", "requirements/runtime.txt"]
    for path in needed:
        assert not _ignored(path, patterns), f"{path} is needed by the build but ignored"
    for path in [
        ".git/config",
        "tests/conftest.py",
        "deploy/ecs/main.tf",
        ".state/credentials.json",
        "requirements/test.txt",
        "runner/__pycache__/x.pyc",
    ]:
        assert _ignored(path, patterns), f"{path} should not be in the build context"
    for i in INSTRUCTIONS:
        if i.keyword == "COPY" and not i.args.startswith("--from"):
            *sources, _dest = i.args.split()
            for src in sources:
                assert (REPO / src).exists() or src == "README.md", f"COPY source {src} is missing"
