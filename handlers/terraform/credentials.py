"""Cloud credentials from a plan, as environment variables for one terraform child process.

The runner's own environment is never inherited by children, so every credential a terraform
run (or a hook) needs is computed and passed explicitly; every secret value is registered for
masking first. The decisions live in the shared libraries, so that terraform, ECR logins and
the kubeconfig of an EKS cluster resolve one plan to one identity:
``handlers.common.aws`` (the precedence is in its docstring and docs/credentials.md),
``handlers.common.azure`` and ``handlers.common.masking``.
"""

from __future__ import annotations

from handlers.common.aws import DEFAULT_CHAIN_ENV as AWS_DEFAULT_ENV
from handlers.common.aws import DEFAULT_SESSION_NAME, AWSCredentialsError, resolve_aws
from handlers.common.aws import endpoint_url as aws_endpoint_url
from handlers.common.azure import DEFAULT_PREFIXES as AZURE_DEFAULT_PREFIXES
from handlers.common.azure import azure_env
from handlers.common.masking import looks_secret, register_env_secrets
from runner.sdk import JobLog, SecretRegistry
from runner.sdk.plans import AWSAuth

#: Kept for code that caught the terraform family's own name.
CredentialsError = AWSCredentialsError

__all__ = [
    "AWS_DEFAULT_ENV",
    "AZURE_DEFAULT_PREFIXES",
    "CredentialsError",
    "aws_endpoint_url",
    "aws_env",
    "azure_env",
    "looks_secret",
    "register_env_secrets",
]


async def aws_env(
    auth: AWSAuth | None,
    *,
    secrets: SecretRegistry,
    log: JobLog,
    default_session_name: str = DEFAULT_SESSION_NAME,
) -> dict[str, str]:
    """The ``AWS_*`` variables for a child acting with ``auth`` (nothing for no auth)."""
    if auth is None:
        return {}
    identity = await resolve_aws(auth, secrets=secrets, log=log, session_name=default_session_name)
    return identity.env()
