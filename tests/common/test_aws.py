"""The AWS credential resolver: the precedence as data (unit), then every branch against moto's
STS on loopback, reading from moto's request recording which key signed each call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from handlers.common.aws import (
    DEFAULT_DURATION_SECONDS,
    AWSCredentialsError,
    AWSIdentity,
    Resolution,
    RoleHop,
    aws_env,
    decide,
    duration_for,
    resolve_aws,
    resolve_aws_blocking,
    session_name_for,
)
from runner.sdk.plans import AWSAuth
from tests.common.conftest import Log, RecordingSts, Secrets

ROLE = "arn:aws:iam::123456789012:role/deploy"
HOP = "arn:aws:iam::123456789012:role/nuon-hop"
SRC_ROLE = "arn:aws:iam::123456789012:role/nuon-src"
STATIC = {"access_key_id": "AKIAPLANSTATIC000001", "secret_access_key": "plan-static-secret"}
ENV_KEY = "AKIARUNNERENV0000001"


def auth(**fields: Any) -> AWSAuth:
    return AWSAuth.model_validate(fields)


def role(**fields: Any) -> dict[str, Any]:
    return {"role_arn": ROLE, "session_name": "install-deploy-1", **fields}


# --------------------------------------------------------------------------- the precedence


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fields", "base"),
    [
        ({"profile": "p", "use_default": True, "static": STATIC}, "profile"),
        ({"use_default": True, "static": STATIC}, "default"),
        ({"static": STATIC}, "static"),
        ({"static": {"access_key_id": ""}, "use_default": True}, "default"),  # an empty block is absent
    ],
)
def test_base_precedence_profile_default_static(fields: dict[str, Any], base: str) -> None:
    resolution = decide(auth(**fields))
    assert resolution.base == base
    assert resolution.hops == ()
    assert (resolution.static is not None) == (base == "static")


@pytest.mark.unit
def test_a_role_is_assumed_from_the_base_the_plan_names() -> None:
    hop = RoleHop(ROLE, "install-deploy-1", DEFAULT_DURATION_SECONDS)
    assert decide(auth(assume_role=role())) == Resolution(base="default", hops=(hop,))
    with_static = decide(auth(static=STATIC, assume_role=role()))
    assert (with_static.base, with_static.hops) == ("static", (hop,))
    with_profile = decide(auth(profile="ops", static=STATIC, assume_role=role()))
    assert (with_profile.base, with_profile.profile, with_profile.hops) == ("profile", "ops", (hop,))


@pytest.mark.unit
def test_two_step_hops_come_before_the_role() -> None:
    two_static = {"iam_role_arn": HOP, "src_static_credentials": STATIC}
    resolution = decide(auth(assume_role=role(two_step_config=two_static, session_duration_seconds=1800)))
    assert resolution.base == "static"
    assert resolution.static is not None
    assert resolution.static.access_key_id == STATIC["access_key_id"]
    assert [h.role_arn for h in resolution.hops] == [HOP, ROLE]
    assert {(h.session_name, h.duration_seconds) for h in resolution.hops} == {("install-deploy-1", 1800)}
    two_role = {"iam_role_arn": HOP, "src_iam_role_arn": SRC_ROLE}
    resolution = decide(auth(use_default=True, assume_role=role(two_step_config=two_role)))
    assert resolution.base == "default"
    assert [h.role_arn for h in resolution.hops] == [SRC_ROLE, HOP, ROLE]
    # A zero-valued two_step_config (Go writes the struct whole) is no hop at all.
    empty = decide(auth(assume_role=role(two_step_config={"iam_role_arn": "", "src_iam_role_arn": ""})))
    assert [h.role_arn for h in empty.hops] == [ROLE]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "names no credentials"),
        ({"region": "eu-west-1", "static": {"access_key_id": ""}}, "names no credentials"),
        ({"assume_role": role(use_github_oidc=True)}, "GitHub OIDC is not supported"),
        ({"assume_role": role(two_step_config={"src_iam_role_arn": SRC_ROLE})}, "needs iam_role_arn"),
    ],
)
def test_plans_that_name_no_usable_identity_fail_clearly(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(AWSCredentialsError, match=message):
        decide(auth(**fields))


@pytest.mark.unit
def test_session_names_and_durations_sts_accepts() -> None:
    assert session_name_for("byoc-runner-job/01 x") == "byoc-runner-job-01-x"
    assert session_name_for("x" * 80) == "x" * 64
    assert session_name_for("") == "byoc-runner"
    assert [duration_for(s) for s in (0, 60, 900, 1800, 7200)] == [3600, 900, 900, 1800, 7200]
    assert decide(auth(assume_role={"role_arn": ROLE}), session_name="job-1").hops[0].session_name == "job-1"


@pytest.mark.unit
def test_identity_env_per_source() -> None:
    static = AWSIdentity("static", region="eu-west-1", access_key_id="AK", secret_access_key="SK")
    assert static.env() == {
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "SK",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    assert "SK" not in repr(static)
    profile = AWSIdentity("profile", profile="ops", inherited=(("AWS_CONFIG_FILE", "/c"),))
    assert profile.env() == {"AWS_PROFILE": "ops", "AWS_CONFIG_FILE": "/c"}
    default = AWSIdentity(
        "default", region="us-west-2", inherited=(("AWS_REGION", "x"), ("AWS_ROLE_ARN", "r"))
    )
    assert default.env() == {
        "AWS_REGION": "us-west-2",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_ROLE_ARN": "r",
    }


# --------------------------------------------------------------------------- against moto's STS


def caller_arn(identity: AWSIdentity, sts: RecordingSts) -> str:
    client = identity.session().client("sts", region_name="us-east-1", endpoint_url=sts.url)
    return str(client.get_caller_identity()["Arn"])


def resolve(plan: AWSAuth, secrets: Secrets, log: Log | None = None, **kw: Any) -> AWSIdentity:
    return anyio.run(lambda: resolve_aws(plan, secrets=secrets, log=log, **kw))


def runner_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's own identity, as the default chain finds it (environment keys)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ENV_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "runner-env-secret")


def write_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[ops]\naws_access_key_id = {key}\naws_secret_access_key = profile-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))


@pytest.mark.integration
def test_static_keys_sign_as_themselves_without_sts(sts: RecordingSts) -> None:
    secrets = Secrets()
    identity = resolve(auth(region="eu-central-1", static={**STATIC, "session_token": "tok-1"}), secrets)
    assert identity.source == "static"
    assert identity.env() == {
        "AWS_ACCESS_KEY_ID": STATIC["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": "plan-static-secret",
        "AWS_SESSION_TOKEN": "tok-1",
        "AWS_REGION": "eu-central-1",
        "AWS_DEFAULT_REGION": "eu-central-1",
    }
    assert {"plan-static-secret", "tok-1"} <= secrets.values
    assert sts.calls() == []  # nothing to ask STS
    caller_arn(identity, sts)
    assert [(c.action, c.key_id) for c in sts.calls()] == [("GetCallerIdentity", STATIC["access_key_id"])]


@pytest.mark.integration
def test_use_default_hands_the_child_the_runner_chain(
    sts: RecordingSts, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner_env_keys(monkeypatch)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "runner-env-token")
    secrets = Secrets()
    identity = resolve(auth(use_default=True, region="us-west-2"), secrets)
    env = identity.env()
    assert env["AWS_ACCESS_KEY_ID"] == ENV_KEY
    assert env["AWS_REGION"] == "us-west-2"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert {"runner-env-secret", "runner-env-token"} <= secrets.values
    caller_arn(identity, sts)
    assert [c.key_id for c in sts.calls()] == [ENV_KEY]


@pytest.mark.integration
def test_profile_names_the_profile_and_signs_with_its_keys(
    sts: RecordingSts, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner_env_keys(monkeypatch)  # present, but the profile wins
    write_profile(tmp_path, monkeypatch, "AKIAPROFILEKEY000001")
    identity = resolve(auth(profile="ops", static=STATIC), Secrets())
    env = identity.env()
    assert env["AWS_PROFILE"] == "ops"
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == str(tmp_path / "credentials")
    assert "AWS_ACCESS_KEY_ID" not in env
    caller_arn(identity, sts)
    assert [c.key_id for c in sts.calls()] == ["AKIAPROFILEKEY000001"]
    with pytest.raises(AWSCredentialsError, match="profile 'missing' is not in the runner's shared config"):
        resolve(auth(profile="missing"), Secrets())


@pytest.mark.integration
def test_assume_role_from_the_default_chain(sts: RecordingSts, monkeypatch: pytest.MonkeyPatch) -> None:
    """What AWS installs send: assume_role alone; the runner's own identity is the base."""
    runner_env_keys(monkeypatch)
    secrets, log = Secrets(), Log()
    plan = auth(region="us-east-1", assume_role=role(session_duration_seconds=900))
    identity = resolve(plan, secrets, log)
    assert identity.source == "assume-role"
    assert identity.role_arn == ROLE
    assert identity.expiration is not None
    assert identity.access_key_id.startswith("ASIA")
    assert {identity.secret_access_key, identity.session_token} <= secrets.values
    [call] = sts.calls()
    assert (call.action, call.key_id) == ("AssumeRole", ENV_KEY)
    assert call.params["RoleArn"] == ROLE
    assert call.params["RoleSessionName"] == "install-deploy-1"
    assert call.params["DurationSeconds"] == "900"
    assert caller_arn(identity, sts) == "arn:aws:sts::123456789012:assumed-role/deploy/install-deploy-1"
    assert [(m, a["role_arn"]) for _, m, a in log.records] == [("assuming AWS role", ROLE)]
    assert identity.env()["AWS_SESSION_TOKEN"] == identity.session_token


@pytest.mark.integration
@pytest.mark.parametrize("base", ["static", "profile"])
def test_assume_role_from_static_keys_or_a_profile(
    base: str, sts: RecordingSts, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner_env_keys(monkeypatch)  # present, but the plan names its own base
    write_profile(tmp_path, monkeypatch, "AKIAPROFILEKEY000002")
    fields: dict[str, Any] = {"static": STATIC} if base == "static" else {"profile": "ops"}
    identity = resolve(auth(assume_role=role(), **fields), Secrets())
    expected_key = STATIC["access_key_id"] if base == "static" else "AKIAPROFILEKEY000002"
    assert [(c.action, c.key_id, c.params["RoleArn"]) for c in sts.calls()] == [
        ("AssumeRole", expected_key, ROLE)
    ]
    assert caller_arn(identity, sts).endswith(":assumed-role/deploy/install-deploy-1")


@pytest.mark.integration
def test_two_step_from_source_static_keys(sts: RecordingSts, monkeypatch: pytest.MonkeyPatch) -> None:
    runner_env_keys(monkeypatch)
    secrets = Secrets()
    two = {"iam_role_arn": HOP, "src_static_credentials": {**STATIC, "access_key_id": "AKIATWOSTEPSOURCE001"}}
    identity = resolve(auth(assume_role=role(two_step_config=two)), secrets)
    calls = sts.calls()
    assert [(c.action, c.params["RoleArn"]) for c in calls] == [("AssumeRole", HOP), ("AssumeRole", ROLE)]
    assert calls[0].key_id == "AKIATWOSTEPSOURCE001"  # the source keys, not the runner's
    assert calls[1].key_id.startswith("ASIA")  # the hop's session
    assert calls[1].key_id != identity.access_key_id
    assert "plan-static-secret" in secrets.values
    assert caller_arn(identity, sts).endswith(":assumed-role/deploy/install-deploy-1")


@pytest.mark.integration
def test_two_step_through_a_source_role(sts: RecordingSts, monkeypatch: pytest.MonkeyPatch) -> None:
    runner_env_keys(monkeypatch)
    two = {"iam_role_arn": HOP, "src_iam_role_arn": SRC_ROLE}
    identity = resolve(auth(use_default=True, assume_role=role(two_step_config=two)), Secrets())
    calls = sts.calls()
    assert [c.params["RoleArn"] for c in calls] == [SRC_ROLE, HOP, ROLE]
    assert calls[0].key_id == ENV_KEY
    # Each hop is signed by the session the hop before it returned.
    assert len({c.key_id for c in calls}) == 3
    assert all(c.key_id.startswith("ASIA") for c in calls[1:])
    assert caller_arn(identity, sts).endswith(":assumed-role/deploy/install-deploy-1")


@pytest.mark.integration
def test_assume_role_without_any_base_credentials_fails_clearly(sts: RecordingSts) -> None:
    with pytest.raises(
        AWSCredentialsError, match=rf"cannot assume role {ROLE}: Unable to locate credentials"
    ):
        resolve(auth(assume_role=role()), Secrets())
    assert sts.calls() == []


@pytest.mark.integration
def test_unreachable_sts_names_the_role(sts: RecordingSts, monkeypatch: pytest.MonkeyPatch) -> None:
    runner_env_keys(monkeypatch)
    with pytest.raises(AWSCredentialsError, match=f"cannot assume role {ROLE}") as info:
        resolve_aws_blocking(auth(assume_role=role()), secrets=Secrets(), endpoint="http://127.0.0.1:9")
    assert info.value.details["role_arn"] == ROLE
    assert "runner-env-secret" not in str(info.value)


@pytest.mark.integration
def test_aws_env_for_a_child(sts: RecordingSts, monkeypatch: pytest.MonkeyPatch) -> None:
    runner_env_keys(monkeypatch)
    secrets = Secrets()
    env = anyio.run(lambda: aws_env(auth(region="eu-west-1", assume_role=role()), secrets=secrets))
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA")
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["AWS_SECRET_ACCESS_KEY"] in secrets.values
    assert anyio.run(lambda: aws_env(None, secrets=secrets)) == {}
