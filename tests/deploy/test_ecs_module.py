"""The ECS Fargate terraform module in deploy/ecs, checked through a parse of its HCL (python-hcl2).

It checks what `terraform validate` would partly catch (every reference resolves) and the module's
promises: the token only through ECS secrets, env names the runner reads, stopTimeout covering
the drain grace, a least-privilege execution role, no token in outputs. The real terraform checks
are in test_ecs_terraform.py; `terraform validate` itself needs the AWS provider binary, which
cannot be downloaded here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from runner.config import ENV_NAMES
from tests.deploy.conftest import ECS_MODULE
from tests.support.tools import in_ci

TF_FILES = ["versions.tf", "variables.tf", "main.tf", "outputs.tf"]
RUNNER_ENV_NAMES = set(ENV_NAMES.values())

pytestmark = pytest.mark.unit


def _hcl2() -> ModuleType:
    try:
        import hcl2
    except ImportError:
        message = "python-hcl2 is not installed (it belongs in the [test] extras of pyproject.toml)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return hcl2


def unq(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals: '"x"' -> 'x'."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def blocks(doc: dict[str, Any], kind: str) -> dict[tuple[str, ...], dict[str, Any]]:
    """{(type, name): body} for resource/data, {(name,): body} for variable/output."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for entry in doc.get(kind, []):
        for first, body in entry.items():
            if kind in ("resource", "data"):
                for second, inner in body.items():
                    out[(unq(first), unq(second))] = inner
            else:
                out[(unq(first),)] = body
    return out


@pytest.fixture(scope="module")
def module() -> dict[str, dict[tuple[str, ...], dict[str, Any]]]:
    hcl2 = _hcl2()
    merged: dict[str, list[Any]] = {}
    for name in TF_FILES:
        with (ECS_MODULE / name).open() as f:
            for key, value in hcl2.load(f).items():
                merged.setdefault(key, []).extend(value)
    result = {kind: blocks(merged, kind) for kind in ("resource", "data", "variable", "output")}
    local_values: dict[str, Any] = {}
    for entry in merged.get("locals", []):
        local_values.update({k: v for k, v in entry.items() if not k.startswith("__")})
    result["locals"] = {(k,): v for k, v in local_values.items()}
    return result


def local(module: dict[str, Any], name: str) -> Any:
    return module["locals"][(name,)]


def source_without_comments() -> str:
    text = "\n".join((ECS_MODULE / n).read_text() for n in TF_FILES)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def test_every_reference_resolves(module: dict[str, Any]) -> None:
    text = source_without_comments()
    declared_vars = {k[0] for k in module["variable"]}
    declared_locals = {k[0] for k in module["locals"]}
    used_vars = set(re.findall(r"\bvar\.(\w+)", text))
    used_locals = set(re.findall(r"\blocal\.(\w+)", text))
    assert used_vars <= declared_vars, used_vars - declared_vars
    assert used_locals <= declared_locals, used_locals - declared_locals
    assert declared_vars - used_vars == set(), "unused variables"
    used_data = set(re.findall(r"\bdata\.(aws_\w+)\.(\w+)", text))
    assert used_data <= set(module["data"]), used_data - set(module["data"])
    assert set(module["data"]) <= used_data, "unused data sources"
    used_resources = set(re.findall(r"(?<![\w.\"/-])(aws_\w+)\.(\w+)\b", text))
    assert used_resources <= set(module["resource"]), used_resources - set(module["resource"])


def test_token_enters_only_through_ecs_secrets(module: dict[str, Any]) -> None:
    container = local(module, "container")
    assert container["secrets"] == [{"name": '"RUNNER_API_TOKEN"', "valueFrom": "${local.token_value_from}"}]
    assert "RUNNER_API_TOKEN" not in local(module, "base_environment")
    assert "RUNNER_API_TOKEN" not in local(module, "runner_environment")
    # The token is never a terraform value: only the ARN of where it is stored is an input.
    token_vars = {k[0] for k in module["variable"] if "token" in k[0]}
    assert token_vars == {"api_token_secret_arn", "api_token_secret_json_key"}
    extra = module["variable"][("extra_environment",)]
    assert "RUNNER_API_TOKEN" in extra["validation"][0]["condition"]


def test_outputs_never_carry_the_token(module: dict[str, Any]) -> None:
    assert module["output"], "the module has outputs"
    for (name,), body in module["output"].items():
        assert "token" not in name
        value = str(body["value"])
        assert "token" not in value, f"output {name} refers to the token: {value}"
        assert "secret" not in value, f"output {name} refers to the secret: {value}"


def test_env_names_are_the_ones_the_runner_reads(module: dict[str, Any]) -> None:
    base = local(module, "base_environment")
    for required in (
        "RUNNER_ID",
        "RUNNER_API_URL",
        "RUNNER_STATE_DIR",
        "RUNNER_HEALTH_ADDR",
        "RUNNER_DRAIN_GRACE",
    ):
        assert required in base
    optional = set(re.findall(r"\b(RUNNER_[A-Z_]+)\s*=", local(module, "runner_environment")))
    assert optional == {"RUNNER_GROUPS", "RUNNER_CONCURRENCY", "RUNNER_LOG_LEVEL"}
    names = {n for n in base if n.startswith("RUNNER_")} | optional
    assert names <= RUNNER_ENV_NAMES, names - RUNNER_ENV_NAMES
    assert unq(base["RUNNER_HEALTH_ADDR"]) == "0.0.0.0:${var.health_port}"
    assert base["RUNNER_DRAIN_GRACE"] == "${tostring(var.drain_grace)}"


def test_stop_timeout_covers_the_drain_grace(module: dict[str, Any]) -> None:
    container = local(module, "container")
    assert container["stopTimeout"] == "${var.stop_timeout}"
    stop = module["variable"][("stop_timeout",)]
    drain = module["variable"][("drain_grace",)]
    condition = stop["validation"][0]["condition"]
    assert "var.stop_timeout >= var.drain_grace" in condition
    assert "var.stop_timeout <= 120" in condition  # the Fargate maximum
    assert drain["default"] <= stop["default"] <= 120


def test_health_check_hits_healthz_on_the_health_port(module: dict[str, Any]) -> None:
    container = local(module, "container")
    command = [unq(c) for c in container["healthCheck"]["command"]]
    assert command[0] == "CMD"
    assert "${local.health_url}" in command[-1]
    assert unq(local(module, "health_url")) == "http://127.0.0.1:${var.health_port}/healthz"
    assert container["portMappings"][0]["containerPort"] == "${var.health_port}"


def test_container_runs_unprivileged_with_writable_state_and_tmp(module: dict[str, Any]) -> None:
    container = local(module, "container")
    assert unq(container["user"]) == "10001:10001"
    assert [unq(c) for c in container["command"]] == ["run"]
    assert container["readonlyRootFilesystem"] == "${var.readonly_root_filesystem}"
    assert module["variable"][("readonly_root_filesystem",)]["default"] is True
    mounts = {unq(m["containerPath"]): unq(m["sourceVolume"]) for m in container["mountPoints"]}
    assert mounts == {"${local.state_dir}": "state", "/tmp": "tmp"}
    assert unq(local(module, "state_dir")) == "/var/lib/byoc-runner"
    task = module["resource"][("aws_ecs_task_definition", "runner")]
    assert {unq(v["name"]) for v in task["volume"]} == {"state", "tmp"}
    assert task["task_role_arn"] == "${var.task_role_arn}"
    assert task["execution_role_arn"] == "${aws_iam_role.execution.arn}"
    assert [unq(c) for c in task["requires_compatibilities"]] == ["FARGATE"]
    assert task["container_definitions"] == "${jsonencode([local.container])}"


def test_one_task_per_runner_id(module: dict[str, Any]) -> None:
    service = module["resource"][("aws_ecs_service", "runner")]
    assert service["deployment_minimum_healthy_percent"] == 0
    assert service["deployment_maximum_percent"] == 100
    desired = module["variable"][("desired_count",)]
    assert "contains([0, 1], var.desired_count)" in desired["validation"][0]["condition"]


def test_logs_go_to_the_modules_log_group(module: dict[str, Any]) -> None:
    assert ("aws_cloudwatch_log_group", "runner") in module["resource"]
    options = local(module, "container")["logConfiguration"]["options"]
    assert options["awslogs-group"] == "${aws_cloudwatch_log_group.runner.name}"


def test_execution_role_is_least_privilege(module: dict[str, Any]) -> None:
    assert not [k for k in module["resource"] if k[0] == "aws_iam_role_policy_attachment"], (
        "no managed policies"
    )
    policy = module["data"][("aws_iam_policy_document", "execution")]
    statements = list(policy["statement"])
    for dyn in policy.get("dynamic", []):
        statements.extend(dyn['"statement"']["content"])
    actions_by_sid: dict[str, set[str]] = {}
    for st in statements:
        actions = set(re.findall(r"[a-z0-9-]+:[A-Za-z]+", " ".join(strings(st["actions"]))))
        actions_by_sid[unq(st["sid"])] = actions
        assert not any(a.endswith(":*") or a == "*" for a in actions), st
        resources = [unq(r) for r in st["resources"]]
        if resources == ["*"]:
            assert actions == {"ecr:GetAuthorizationToken"}, "only the ECR login may use resource *"
    assert actions_by_sid["ReadRunnerToken"] == {"ssm:GetParameters", "secretsmanager:GetSecretValue"}
    assert actions_by_sid["WriteLogs"] == {"logs:CreateLogStream", "logs:PutLogEvents"}
    token_statement = next(st for st in statements if unq(st["sid"]) == "ReadRunnerToken")
    assert token_statement["resources"] == ["${var.api_token_secret_arn}"]
    assume = module["data"][("aws_iam_policy_document", "ecs_tasks_assume")]["statement"][0]
    assert [unq(i) for i in assume["principals"][0]["identifiers"]] == ["ecs-tasks.amazonaws.com"]
    assert unq(assume["condition"][0]["variable"]) == "aws:SourceAccount"


def _validation_regex(module: dict[str, Any], variable: str) -> re.Pattern[str]:
    condition = module["variable"][(variable,)]["validation"][0]["condition"]
    match = re.search(r'regex\("((?:[^"\\]|\\.)*)"', condition)
    assert match, condition
    return re.compile(match.group(1).encode().decode("unicode_escape"))


@pytest.mark.parametrize(
    ("arn", "ok"),
    [
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:byoc-runner/token-AbCdEf", True),
        ("arn:aws:ssm:eu-west-1:123456789012:parameter/byoc-runner/token", True),
        ("arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:t-AbCdEf", True),
        ("arn:aws:s3:::bucket/token", False),
        ("tok-plain-token-value", False),
        ("", False),
    ],
)
def test_token_arn_validation(module: dict[str, Any], arn: str, ok: bool) -> None:
    assert bool(_validation_regex(module, "api_token_secret_arn").search(arn)) is ok


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://runner-api.example.com", True),
        ("http://127.0.0.1:8080/base", True),
        ("https://user:pass@runner-api.example.com", False),
        ("ftp://runner-api.example.com", False),
    ],
)
def test_api_url_validation(module: dict[str, Any], url: str, ok: bool) -> None:
    assert bool(_validation_regex(module, "api_url").search(url)) is ok


def test_groups_validation_matches_the_runner(module: dict[str, Any]) -> None:
    from runner.config import KNOWN_GROUPS

    condition = module["variable"][("groups",)]["validation"][0]["condition"]
    assert set(re.findall(r'\\?"([a-z-]+)\\?"', condition)) == KNOWN_GROUPS
