"""ECR credentials: ``GetAuthorizationToken`` through boto3, from static keys or an assumed role.

boto3 is synchronous, so each call runs in a worker thread (``anyio.to_thread.run_sync``);
that is the only thread this package uses. Credential resolution follows the reference's
order (profile > use_default > static > assume_role, with the two-step chain), and every
secret that appears on the way (keys, session tokens, the ECR token) is handed to
``on_secret`` before anything could log it. ``RUNNER_AWS_ENDPOINT_URL`` points STS and ECR at
another endpoint (``moto_server`` in tests).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from typing import Any

import anyio

from handlers.oci.auth import Credentials
from handlers.oci.errors import AuthenticationError, ConfigurationError
from runner.api.plans import AWSAuth, AWSStaticCredentials

ENDPOINT_ENV = "RUNNER_AWS_ENDPOINT_URL"
_ECR_HOST_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)


def ecr_host_parts(registry: str) -> tuple[str | None, str | None]:
    """(account id, region) of an ECR registry host, or Nones for any other host."""
    match = _ECR_HOST_RE.match(registry.split(":", 1)[0])
    if not match:
        return None, None
    return match.group("account"), match.group("region")


def _static_kwargs(static: AWSStaticCredentials | None) -> dict[str, str] | None:
    if static is None or not static.access_key_id or not static.secret_access_key:
        return None
    kwargs = {"aws_access_key_id": static.access_key_id, "aws_secret_access_key": static.secret_access_key}
    if static.session_token:
        kwargs["aws_session_token"] = static.session_token
    return kwargs


def _assume(
    session: Any, role_arn: str, session_name: str, duration: int, endpoint: str | None, region: str
) -> Any:
    import boto3

    sts = session.client("sts", region_name=region, endpoint_url=endpoint)
    answer = sts.assume_role(
        RoleArn=role_arn,
        RoleSessionName=session_name or "byoc-runner",
        DurationSeconds=max(900, duration or 3600),
    )
    creds = answer["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=region,
    )


def _session(auth: AWSAuth, region: str, endpoint: str | None, on_secret: Callable[[str], None]) -> Any:
    import boto3

    if auth.static is not None:
        on_secret(auth.static.secret_access_key)
        on_secret(auth.static.session_token)
    if auth.profile:
        return boto3.session.Session(profile_name=auth.profile, region_name=region)
    if auth.use_default:
        return boto3.session.Session(region_name=region)
    static = _static_kwargs(auth.static)
    if static is not None:
        return boto3.session.Session(region_name=region, **static)
    role = auth.assume_role
    if role is not None and role.role_arn:
        base = boto3.session.Session(region_name=region)
        two = role.two_step_config
        if two is not None and two.iam_role_arn:
            src = _static_kwargs(two.src_static_credentials)
            if two.src_static_credentials is not None:
                on_secret(two.src_static_credentials.secret_access_key)
                on_secret(two.src_static_credentials.session_token)
            if src is not None:
                base = boto3.session.Session(region_name=region, **src)
            elif two.src_iam_role_arn:
                base = _assume(base, two.src_iam_role_arn, role.session_name, 0, endpoint, region)
            base = _assume(base, two.iam_role_arn, role.session_name, 0, endpoint, region)
        session = _assume(
            base, role.role_arn, role.session_name, role.session_duration_seconds, endpoint, region
        )
        frozen = session.get_credentials().get_frozen_credentials()
        on_secret(frozen.secret_key)
        on_secret(frozen.token)
        return session
    raise ConfigurationError(
        "ECRAuth names no credentials: set static keys, assume_role.role_arn, profile or use_default"
    )


def _get_token(
    auth: AWSAuth,
    region: str,
    registry_id: str | None,
    endpoint: str | None,
    on_secret: Callable[[str], None],
) -> Credentials:
    session = _session(auth, region, endpoint, on_secret)
    ecr = session.client("ecr", region_name=region, endpoint_url=endpoint)
    kwargs: dict[str, Any] = {"registryIds": [registry_id]} if registry_id else {}
    data = ecr.get_authorization_token(**kwargs)["authorizationData"]
    if not data:
        raise AuthenticationError("ECR GetAuthorizationToken returned no authorization data")
    raw = str(data[0]["authorizationToken"])
    on_secret(raw)
    username, _, password = base64.b64decode(raw).decode().partition(":")
    on_secret(password)
    return Credentials(username=username or "AWS", password=password)


async def ecr_credentials(
    auth: AWSAuth | None,
    *,
    registry: str,
    region: str = "",
    on_secret: Callable[[str], None] | None = None,
) -> Credentials:
    """Registry credentials (user ``AWS``, password = token) for the ECR registry ``registry``.

    ``region`` comes from the registry config (``Region``), else ``ECRAuth.region``, else the
    registry host (``<account>.dkr.ecr.<region>.amazonaws.com``).
    """
    if auth is None:
        raise ConfigurationError(f"ECR registry {registry}: ECRAuth is missing from the registry config")
    account, host_region = ecr_host_parts(registry)
    region = region or auth.region or host_region or ""
    if not region:
        raise ConfigurationError(f"ECR registry {registry}: no region in the registry config or ECRAuth")
    endpoint = os.environ.get(ENDPOINT_ENV) or None
    sink = on_secret or (lambda _v: None)

    def call() -> Credentials:
        return _get_token(auth, region, account, endpoint, lambda v: sink(v) if v else None)

    try:
        return await anyio.to_thread.run_sync(call)
    except (ConfigurationError, AuthenticationError):
        raise
    except Exception as exc:
        # botocore errors carry the AWS error code and message, never the secret itself.
        raise AuthenticationError(
            f"ECR registry {registry}: GetAuthorizationToken failed: {type(exc).__name__}: {exc}"
        ) from None
