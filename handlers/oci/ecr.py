"""ECR credentials: ``GetAuthorizationToken`` through boto3, as the plan's AWS identity.

The identity comes from the shared resolver (``handlers.common.aws``: its docstring and
docs/credentials.md give the precedence and the two-step chain), so an ECR login acts as the
same identity the plan's terraform or EKS access would. boto3 is synchronous, so the resolution
and the token call run together in one worker thread (``anyio.to_thread.run_sync``); every
secret that appears on the way (keys, session tokens, the ECR token) is handed to ``on_secret``
before anything could log it. ``RUNNER_AWS_ENDPOINT_URL`` points STS and ECR at another
endpoint (``moto_server`` in tests).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import anyio

from handlers.common.aws import AWSCredentialsError, NoAWSCredentials, endpoint_url, resolve_aws_blocking
from handlers.oci.auth import Credentials
from handlers.oci.errors import AuthenticationError, ConfigurationError
from runner.sdk.plans import AWSAuth

_ECR_HOST_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)


def ecr_host_parts(registry: str) -> tuple[str | None, str | None]:
    """(account id, region) of an ECR registry host, or Nones for any other host."""
    match = _ECR_HOST_RE.match(registry.split(":", 1)[0])
    if not match:
        return None, None
    return match.group("account"), match.group("region")


class _Sink:
    """``on_secret`` as the resolver's secret registry."""

    def __init__(self, on_secret: Callable[[str], None]) -> None:
        self.on_secret = on_secret

    def register(self, *values: str | None) -> None:
        for value in values:
            if value:
                self.on_secret(value)


def _get_token(
    auth: AWSAuth,
    region: str,
    registry_id: str | None,
    endpoint: str | None,
    on_secret: Callable[[str], None],
) -> Credentials:
    identity = resolve_aws_blocking(auth, secrets=_Sink(on_secret), region=region, endpoint=endpoint)
    ecr = identity.session().client("ecr", region_name=region, endpoint_url=endpoint)
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
    endpoint = endpoint_url()
    sink = on_secret or (lambda _v: None)

    def call() -> Credentials:
        return _get_token(auth, region, account, endpoint, lambda v: sink(v) if v else None)

    try:
        return await anyio.to_thread.run_sync(call)
    except (ConfigurationError, AuthenticationError):
        raise
    except NoAWSCredentials:
        raise ConfigurationError(
            f"ECR registry {registry}: ECRAuth names no credentials: set static keys, assume_role.role_arn, "
            "profile or use_default"
        ) from None
    except AWSCredentialsError as exc:
        raise AuthenticationError(f"ECR registry {registry}: {exc}") from None
    except Exception as exc:
        # botocore errors carry the AWS error code and message, never the secret itself.
        raise AuthenticationError(
            f"ECR registry {registry}: GetAuthorizationToken failed: {type(exc).__name__}: {exc}"
        ) from None
