"""An EKS bearer token, made the way ``aws eks get-token`` makes it, without the AWS CLI.

EKS authenticates a Kubernetes client by a presigned STS ``GetCallerIdentity`` URL: the API
server's authenticator replays the URL against STS and maps the returned ARN to a user. The
token is ``k8s-aws-v1.`` + base64url (no padding) of that URL; the URL is signed for 60 seconds
with the header ``x-k8s-aws-id: <cluster name>`` among the signed headers, so a token for one
cluster is refused by another. EKS accepts it for 15 minutes; like the AWS CLI we report 14, so
that a client renews before the server refuses (awscli ``customizations/eks/get_token.py``;
aws-iam-authenticator ``pkg/token/token.go``).

``python -m handlers.common.eks --cluster-name NAME [--region R]`` prints an ``ExecCredential``
for a kubeconfig ``exec`` entry, from the AWS default chain of its environment: a long-running
child (terraform's kubernetes provider, helm) then renews its own tokens, and the runner image
needs no AWS CLI for it.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

TOKEN_PREFIX = "k8s-aws-v1."  # noqa: S105 - the token format, not a token
CLUSTER_ID_HEADER = "x-k8s-aws-id"
#: The presigned URL's own lifetime (what the AWS CLI signs); EKS then honours the token 15 min.
URL_EXPIRES_SECONDS = 60
TOKEN_LIFETIME = timedelta(minutes=14)
EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"


@dataclass(frozen=True)
class EKSToken:
    token: str = field(repr=False)
    expiration: datetime

    def exec_credential(self) -> dict[str, Any]:
        """The ``ExecCredential`` a kubeconfig ``exec`` plugin prints."""
        return {
            "kind": "ExecCredential",
            "apiVersion": EXEC_API_VERSION,
            "spec": {},
            "status": {
                "expirationTimestamp": self.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "token": self.token,
            },
        }


def token_from_url(url: str) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def url_from_token(token: str) -> str:
    """The presigned URL inside a token (what the EKS authenticator does first)."""
    if not token.startswith(TOKEN_PREFIX):
        raise ValueError(f"not an EKS token: it does not start with {TOKEN_PREFIX}")
    body = token.removeprefix(TOKEN_PREFIX)
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def presigned_caller_identity_url(
    session: Any, cluster_name: str, region: str, endpoint: str | None = None
) -> str:
    """A GET ``GetCallerIdentity`` URL signed by ``session`` with ``x-k8s-aws-id`` (blocking)."""
    if not cluster_name:
        raise ValueError("an EKS token needs the cluster name (cluster_info.id)")
    sts = session.client("sts", region_name=region, endpoint_url=endpoint)

    def add_cluster_header(request: Any, **_: Any) -> None:
        request.headers[CLUSTER_ID_HEADER] = cluster_name

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", add_cluster_header)
    url: str = sts.generate_presigned_url(
        "get_caller_identity", Params={}, ExpiresIn=URL_EXPIRES_SECONDS, HttpMethod="GET"
    )
    return url


def eks_token(
    session: Any, cluster_name: str, region: str, endpoint: str | None = None, now: datetime | None = None
) -> EKSToken:
    """A bearer token for ``cluster_name`` acting as ``session`` (a boto3 session; blocking)."""
    url = presigned_caller_identity_url(session, cluster_name, region, endpoint)
    return EKSToken(token_from_url(url), (now or datetime.now(UTC)) + TOKEN_LIFETIME)


def main(argv: list[str] | None = None) -> int:
    """An ``ExecCredential`` on stdout, for a kubeconfig ``exec`` entry (see the module docstring)."""
    import boto3
    from botocore.exceptions import BotoCoreError

    from handlers.common.aws import endpoint_url, sts_region

    parser = argparse.ArgumentParser(prog="python -m handlers.common.eks", description=__doc__)
    parser.add_argument("--cluster-name", required=True)
    parser.add_argument("--region", default="")
    args = parser.parse_args(argv)
    region = sts_region(args.region)
    session = boto3.session.Session(region_name=region)
    try:
        if session.get_credentials() is None:
            print("no AWS credentials in this environment (the AWS SDK default chain)", file=sys.stderr)
            return 1
        token = eks_token(session, args.cluster_name, region, endpoint_url())
    except (BotoCoreError, ValueError) as exc:
        print(f"cannot make an EKS token: {exc}", file=sys.stderr)
        return 1
    json.dump(token.exec_credential(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
