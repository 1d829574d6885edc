"""Cloud credentials from a plan, as environment variables for one child process.

The runner's own environment is never inherited by children, so every credential a terraform
run (or a hook) needs is computed here and passed explicitly; every secret value is registered
for masking first. AWS assume-role goes through STS with boto3 (in a worker thread: boto3 is
blocking); ``RUNNER_AWS_ENDPOINT_URL`` points STS elsewhere (moto in tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import anyio

from runner.api.plans import AWSAuth, AWSStaticCredentials, AzureAuth
from runner.handler import HandlerError, JobLog, SecretRegistry

#: Variables copied from the runner's environment when a plan says "use the default identity".
AWS_DEFAULT_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_DISABLED",
)
AZURE_DEFAULT_PREFIXES = ("ARM_", "AZURE_", "MSI_", "IDENTITY_")
_SECRET_KEY_HINTS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE", "_KEY")


class CredentialsError(HandlerError):
    """Credentials from the plan could not be turned into an identity."""


def aws_endpoint_url() -> str | None:
    return os.environ.get("RUNNER_AWS_ENDPOINT_URL") or None


def looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(hint in upper for hint in _SECRET_KEY_HINTS)


def register_env_secrets(env: Mapping[str, str], secrets: SecretRegistry) -> None:
    """Register the values of variables whose names suggest a secret (``*_TOKEN``, ...)."""
    secrets.register(*(value for key, value in env.items() if value and looks_secret(key)))


def _static_env(static: AWSStaticCredentials) -> dict[str, str]:
    env = {"AWS_ACCESS_KEY_ID": static.access_key_id, "AWS_SECRET_ACCESS_KEY": static.secret_access_key}
    if static.session_token:
        env["AWS_SESSION_TOKEN"] = static.session_token
    return env


def _assume_chain(
    base: AWSStaticCredentials | None,
    roles: list[tuple[str, str, int]],
    region: str,
) -> dict[str, str]:
    """Assume each (role_arn, session_name, duration) in turn; blocking (run in a thread)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    creds: dict[str, str] | None = _static_env(base) if base and base.access_key_id else None
    for role_arn, session_name, duration in roles:
        kwargs: dict[str, Any] = {"region_name": region or "us-east-1"}
        if creds:
            kwargs.update(
                aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=creds.get("AWS_SESSION_TOKEN"),
            )
        session = boto3.session.Session(**kwargs)
        sts = session.client("sts", endpoint_url=aws_endpoint_url())
        try:
            answer = sts.assume_role(
                RoleArn=role_arn, RoleSessionName=session_name, DurationSeconds=duration or 3600
            )
        except (BotoCoreError, ClientError) as exc:
            raise CredentialsError(f"cannot assume role {role_arn}: {exc}", role_arn=role_arn) from exc
        got = answer["Credentials"]
        creds = {
            "AWS_ACCESS_KEY_ID": got["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": got["SecretAccessKey"],
            "AWS_SESSION_TOKEN": got["SessionToken"],
        }
    return creds or {}


async def aws_env(
    auth: AWSAuth | None,
    *,
    secrets: SecretRegistry,
    log: JobLog,
    default_session_name: str = "byoc-runner",
) -> dict[str, str]:
    """The ``AWS_*`` variables for a child acting with ``auth``."""
    if auth is None:
        return {}
    env: dict[str, str] = {}
    if auth.region:
        env["AWS_REGION"] = auth.region
        env["AWS_DEFAULT_REGION"] = auth.region
    assume = auth.assume_role
    if assume is not None and assume.role_arn:
        if assume.use_github_oidc:
            raise CredentialsError("AWS assume-role through GitHub OIDC is not supported by this runner")
        base = auth.static
        roles: list[tuple[str, str, int]] = []
        two = assume.two_step_config
        if two is not None:
            base = two.src_static_credentials or base
            if two.src_iam_role_arn:
                roles.append((two.src_iam_role_arn, default_session_name, 3600))
            if two.iam_role_arn:
                roles.append((two.iam_role_arn, default_session_name, 3600))
        session_name = assume.session_name or default_session_name
        roles.append((assume.role_arn, session_name, assume.session_duration_seconds))
        if base is not None:
            secrets.register(base.secret_access_key, base.session_token)
        log.info("assuming AWS role", role_arn=assume.role_arn, session_name=session_name)
        creds = await anyio.to_thread.run_sync(_assume_chain, base, roles, auth.region)
        secrets.register(creds.get("AWS_SECRET_ACCESS_KEY"), creds.get("AWS_SESSION_TOKEN"))
        env.update(creds)
    elif auth.static is not None and auth.static.access_key_id:
        secrets.register(auth.static.secret_access_key, auth.static.session_token)
        env.update(_static_env(auth.static))
    elif auth.profile:
        env["AWS_PROFILE"] = auth.profile
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            if os.environ.get(name):
                env[name] = os.environ[name]
    elif auth.use_default:
        for name in AWS_DEFAULT_ENV:
            if os.environ.get(name) and name not in env:
                env[name] = os.environ[name]
        secrets.register(env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN"))
    return env


def azure_env(auth: AzureAuth | None, *, secrets: SecretRegistry) -> dict[str, str]:
    """``ARM_SUBSCRIPTION_ID``/``ARM_TENANT_ID`` from a service principal, or the runner's own
    ``ARM_*``/``AZURE_*`` identity when the plan says ``use_default``."""
    if auth is None:
        return {}
    env: dict[str, str] = {}
    if auth.use_default:
        for name, value in os.environ.items():
            if name.startswith(AZURE_DEFAULT_PREFIXES) and value:
                env[name] = value
        register_env_secrets(env, secrets)
    sp = auth.service_principal
    if sp is not None:
        if sp.subscription_id:
            env["ARM_SUBSCRIPTION_ID"] = sp.subscription_id
        if sp.subscription_tenant_id:
            env["ARM_TENANT_ID"] = sp.subscription_tenant_id
    return env
