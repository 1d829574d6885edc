"""The one AWS credential resolver: a plan's ``AWSAuth`` -> the identity a job acts as.

Every family that touches AWS (terraform's children, ECR logins, EKS tokens, and later helm,
kubernetes manifests, actions and secret sync) resolves through here, so one plan means one
identity whoever reads it. The precedence (docs/credentials.md):

1. **Base credentials**, the first the plan names:
   a. ``profile``: that profile of the runner's shared config and credentials files;
   b. ``use_default``: the AWS SDK's default chain as the runner sees it (environment keys, web
      identity, ECS/EKS container credentials, the shared files, instance metadata);
   c. ``static``: the plan's keys (only when ``access_key_id`` is set: an empty block is absent);
   d. nothing named: the default chain, as in (b), but only as the base of a role (3).
   This is the reference runner's order (``pkg/aws/credentials/fetch.go`` in nuonco/nuon:
   profile > use_default > static > assume_role).
2. **Two-step hops** (``assume_role.two_step_config``), as the reference's STS client makes them
   (``pkg/aws/assume-role/sts_client.go``): ``src_static_credentials`` replace the base,
   ``src_iam_role_arn`` is assumed from the base, then ``iam_role_arn`` from that.
3. **The role**: ``assume_role.role_arn`` is assumed from whatever 1 and 2 gave. Every hop uses
   the role's session name and duration (the reference does the same).
4. A plan that names no base and no role is an error, not a silent default identity (the
   reference refuses it too).

Deliberate difference: the reference assumes the role only when the plan names no other source,
so a plan with static keys *and* a role acts as the keys and silently drops the role. Here the
role is assumed *from* those keys, which is what such a plan asks for. The plans the control
plane builds carry ``assume_role`` alone (AWS installs) or ``use_default`` alone, and resolve to
the same identity in both runners.

What a consumer gets (``AWSIdentity``): for a child process, ``env()``: resolved keys for static
and assumed identities; for ``profile`` and ``use_default`` the *source* (``AWS_PROFILE`` and
the default chain's variables), so that the child's own SDK refreshes credentials that expire
during a long run (the reference exports a one-off snapshot instead). In process, ``session()``:
a boto3 session. boto3 blocks, so ``resolve_aws`` runs the STS calls in a worker thread.
Every secret that appears (plan keys, assumed keys, inherited keys) is registered for masking
the moment it is known. ``RUNNER_AWS_ENDPOINT_URL`` points STS at another endpoint (moto in
tests).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal

import anyio

from handlers.common.masking import SecretSink
from runner.sdk import HandlerError, JobLog
from runner.sdk.plans import AWSAuth, AWSStaticCredentials

ENDPOINT_ENV = "RUNNER_AWS_ENDPOINT_URL"
DEFAULT_SESSION_NAME = "byoc-runner"
#: STS's default session length, and the cap AWS puts on a chained role session.
DEFAULT_DURATION_SECONDS = 3600
#: The shortest session STS grants; a shorter request would be refused.
MIN_DURATION_SECONDS = 900
#: STS is global: any region signs a call when neither the plan nor the runner names one.
STS_FALLBACK_REGION = "us-east-1"

#: The runner's variables that make up the SDK default chain: a child that gets them resolves
#: (and refreshes) the same identity the runner has.
DEFAULT_CHAIN_ENV = (
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
_SECRET_CHAIN_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
_PROFILE_FILES_ENV = ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
_SESSION_NAME_BAD = re.compile(r"[^\w+=,.@-]")

Base = Literal["profile", "default", "static"]
Source = Literal["profile", "default", "static", "assume-role"]


class AWSCredentialsError(HandlerError):
    """The plan's AWS credentials could not be turned into an identity."""


class NoAWSCredentials(AWSCredentialsError):
    """The plan's ``AWSAuth`` names neither a base nor a role (a configuration error)."""


@dataclass(frozen=True)
class RoleHop:
    role_arn: str
    session_name: str
    duration_seconds: int


@dataclass(frozen=True)
class Resolution:
    """What to do for a plan, decided without any I/O: a base, then roles to assume in order."""

    base: Base
    profile: str = ""
    static: AWSStaticCredentials | None = None
    hops: tuple[RoleHop, ...] = ()


@dataclass(frozen=True)
class AWSIdentity:
    """A resolved identity. Keys are set for ``static`` and ``assume-role``; ``profile`` names
    the profile; ``default`` carries the runner's default-chain variables (``inherited``)."""

    source: Source
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    profile: str = ""
    role_arn: str = ""
    expiration: datetime | None = None
    inherited: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables for a child process acting as this identity."""
        env: dict[str, str] = {}
        if self.source == "default":
            env.update(self.inherited)
        elif self.source == "profile":
            env.update(self.inherited)
            env["AWS_PROFILE"] = self.profile
        else:
            env["AWS_ACCESS_KEY_ID"] = self.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
            if self.session_token:
                env["AWS_SESSION_TOKEN"] = self.session_token
        if self.region:
            env["AWS_REGION"] = self.region
            env["AWS_DEFAULT_REGION"] = self.region
        return env

    def session(self) -> Any:
        """A boto3 session acting as this identity, for calls made in process (blocking)."""
        import boto3

        region = self.region or None
        if self.source == "profile":
            return boto3.session.Session(profile_name=self.profile, region_name=region)
        if self.source == "default":
            return boto3.session.Session(region_name=region)
        return boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token or None,
            region_name=region,
        )


# --------------------------------------------------------------------------- decisions


def has_keys(static: AWSStaticCredentials | None) -> bool:
    return static is not None and bool(static.access_key_id)


def session_name_for(name: str) -> str:
    """STS accepts 2-64 characters of ``[\\w+=,.@-]``: replace the rest, cut, pad."""
    cleaned = _SESSION_NAME_BAD.sub("-", name)[:64]
    return cleaned if len(cleaned) >= 2 else DEFAULT_SESSION_NAME


def duration_for(seconds: int) -> int:
    """0 (unset) is STS's default hour; below STS's minimum is raised to it."""
    if seconds <= 0:
        return DEFAULT_DURATION_SECONDS
    return max(MIN_DURATION_SECONDS, seconds)


def decide(auth: AWSAuth, *, session_name: str = DEFAULT_SESSION_NAME) -> Resolution:
    """The precedence of the module docstring, as data."""
    base: Base
    if auth.profile:
        base = "profile"
    elif auth.use_default:
        base = "default"
    elif has_keys(auth.static):
        base = "static"
    else:
        base = "default"
    static = auth.static if base == "static" else None
    role = auth.assume_role
    if role is None or not role.role_arn:
        if base == "default" and not auth.use_default:
            raise NoAWSCredentials(
                "the plan's AWS auth names no credentials: set static keys, assume_role.role_arn, "
                "profile or use_default"
            )
        return Resolution(base=base, profile=auth.profile, static=static)
    if role.use_github_oidc:
        raise AWSCredentialsError(
            "AWS assume-role through GitHub OIDC is not supported by this runner", role_arn=role.role_arn
        )
    name = session_name_for(role.session_name or session_name)
    duration = duration_for(role.session_duration_seconds)
    hops: list[RoleHop] = []
    two = role.two_step_config
    if two is not None and (two.iam_role_arn or two.src_iam_role_arn or has_keys(two.src_static_credentials)):
        if not two.iam_role_arn:
            raise AWSCredentialsError(
                "assume_role.two_step_config needs iam_role_arn (the role to hop through)",
                role_arn=role.role_arn,
            )
        if has_keys(two.src_static_credentials):
            base, static = "static", two.src_static_credentials
        if two.src_iam_role_arn:
            hops.append(RoleHop(two.src_iam_role_arn, name, duration))
        hops.append(RoleHop(two.iam_role_arn, name, duration))
    hops.append(RoleHop(role.role_arn, name, duration))
    profile = auth.profile if base == "profile" else ""
    return Resolution(base=base, profile=profile, static=static, hops=tuple(hops))


def endpoint_url() -> str | None:
    """``RUNNER_AWS_ENDPOINT_URL``: where STS (and ECR) calls go instead of AWS (tests, mirrors)."""
    return os.environ.get(ENDPOINT_ENV) or None


def sts_region(region: str) -> str:
    return (
        region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or STS_FALLBACK_REGION
    )


# --------------------------------------------------------------------------- side effects


def _inherited(names: tuple[str, ...], secrets: SecretSink) -> tuple[tuple[str, str], ...]:
    got = tuple((name, os.environ[name]) for name in names if os.environ.get(name))
    secrets.register(*(value for name, value in got if name in _SECRET_CHAIN_ENV))
    return got


def _base_session(resolution: Resolution, region: str | None) -> Any:
    import boto3
    from botocore.exceptions import ProfileNotFound

    if resolution.base == "profile":
        try:
            return boto3.session.Session(profile_name=resolution.profile, region_name=region)
        except ProfileNotFound:
            raise AWSCredentialsError(
                f"AWS profile {resolution.profile!r} is not in the runner's shared config files"
            ) from None
    static = resolution.static
    if resolution.base == "static" and static is not None:
        return boto3.session.Session(
            aws_access_key_id=static.access_key_id,
            aws_secret_access_key=static.secret_access_key,
            aws_session_token=static.session_token or None,
            region_name=region,
        )
    return boto3.session.Session(region_name=region)


def _assume(session: Any, hop: RoleHop, region: str, endpoint: str | None) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    sts = session.client("sts", region_name=region, endpoint_url=endpoint)
    try:
        answer = sts.assume_role(
            RoleArn=hop.role_arn, RoleSessionName=hop.session_name, DurationSeconds=hop.duration_seconds
        )
    except (BotoCoreError, ClientError) as exc:
        # botocore's messages carry the error code and text, never the credentials.
        raise AWSCredentialsError(f"cannot assume role {hop.role_arn}: {exc}", role_arn=hop.role_arn) from exc
    credentials: dict[str, Any] = answer["Credentials"]
    return credentials


def resolve_aws_blocking(
    auth: AWSAuth,
    *,
    secrets: SecretSink,
    region: str = "",
    session_name: str = DEFAULT_SESSION_NAME,
    endpoint: str | None = None,
) -> AWSIdentity:
    """``resolve_aws`` without the thread: for code already in a worker thread (boto3 callers).

    ``region``: the caller's region (e.g. an ECR registry's), else the plan's.
    """
    import boto3

    resolution = decide(auth, session_name=session_name)
    region = region or auth.region
    for static in (resolution.static, auth.static):
        if static is not None:
            secrets.register(static.secret_access_key, static.session_token)
    if not resolution.hops:
        if resolution.base == "static" and resolution.static is not None:
            static = resolution.static
            return AWSIdentity(
                "static",
                region=region,
                access_key_id=static.access_key_id,
                secret_access_key=static.secret_access_key,
                session_token=static.session_token,
            )
        if resolution.base == "profile":
            _base_session(resolution, region or None)  # a missing profile fails here, not in a child
            return AWSIdentity(
                "profile",
                region=region,
                profile=resolution.profile,
                inherited=_inherited(_PROFILE_FILES_ENV, secrets),
            )
        return AWSIdentity("default", region=region, inherited=_inherited(DEFAULT_CHAIN_ENV, secrets))

    call_region = sts_region(region)
    endpoint = endpoint if endpoint is not None else endpoint_url()
    session = _base_session(resolution, call_region)
    credentials: dict[str, Any] = {}
    for hop in resolution.hops:
        credentials = _assume(session, hop, call_region, endpoint)
        secrets.register(credentials["SecretAccessKey"], credentials["SessionToken"])
        session = boto3.session.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=call_region,
        )
    expiration = credentials.get("Expiration")
    return AWSIdentity(
        "assume-role",
        region=region,
        access_key_id=credentials["AccessKeyId"],
        secret_access_key=credentials["SecretAccessKey"],
        session_token=credentials["SessionToken"],
        role_arn=resolution.hops[-1].role_arn,
        expiration=expiration if isinstance(expiration, datetime) else None,
    )


async def resolve_aws(
    auth: AWSAuth,
    *,
    secrets: SecretSink,
    log: JobLog | None = None,
    region: str = "",
    session_name: str = DEFAULT_SESSION_NAME,
) -> AWSIdentity:
    """The identity ``auth`` names (module docstring); STS calls run in a worker thread."""
    resolution = decide(auth, session_name=session_name)
    if log is not None:
        for hop in resolution.hops:
            log.info(
                "assuming AWS role",
                role_arn=hop.role_arn,
                session_name=hop.session_name,
                base=resolution.base,
            )
    call = partial(
        resolve_aws_blocking,
        auth,
        secrets=secrets,
        region=region,
        session_name=session_name,
        endpoint=endpoint_url(),
    )
    return await anyio.to_thread.run_sync(call)


async def aws_env(
    auth: AWSAuth | None,
    *,
    secrets: SecretSink,
    log: JobLog | None = None,
    session_name: str = DEFAULT_SESSION_NAME,
) -> dict[str, str]:
    """The ``AWS_*`` variables for a child acting as ``auth`` (nothing for no auth)."""
    if auth is None:
        return {}
    identity = await resolve_aws(auth, secrets=secrets, log=log, session_name=session_name)
    return identity.env()
