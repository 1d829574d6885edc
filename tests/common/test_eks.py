"""EKS tokens: the presigned ``GetCallerIdentity`` URL checked parameter by parameter, its SigV4
signature recomputed independently (and refused for another cluster), and the URL replayed
against moto's STS the way the EKS authenticator replays it."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import UTC, datetime

import pytest

from handlers.common.aws import AWSIdentity
from handlers.common.eks import TOKEN_PREFIX, eks_token, token_from_url, url_from_token
from tests.common.conftest import RecordingSts

KEY, SECRET = "AKIAEKSTOKENTEST0001", "eks-token-test-secret"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def signature_ok(url: str, secret: str, cluster: str) -> bool:
    """SigV4 query-string signature of a presigned GET, computed from scratch (not botocore)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    fields = dict(query)

    def enc(value: str) -> str:
        return urllib.parse.quote(value, safe="-_.~")

    canonical_query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(query) if k != "X-Amz-Signature")
    headers = {"host": parts.netloc, "x-k8s-aws-id": cluster}
    signed = fields["X-Amz-SignedHeaders"].split(";")
    canonical = "\n".join(
        ["GET", parts.path or "/", canonical_query]
        + [f"{h}:{headers[h]}" for h in signed]
        + ["", ";".join(signed), EMPTY_SHA256]
    )
    scope = fields["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", fields["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(
        hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), fields["X-Amz-Signature"]
    )


def replay(url: str, cluster: str) -> str:
    """GET the URL as the EKS authenticator does (with ``x-k8s-aws-id``); STS says who signed it.

    moto routes a request to a service by the credential scope of its ``Authorization`` header
    and has no route for query-string signatures, so the replay adds that header, built from the
    URL's own ``X-Amz-Credential``, for routing only (moto checks no signature either way: the
    signature is checked by ``signature_ok``).
    """
    credential = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["X-Amz-Credential"]
    headers = {"x-k8s-aws-id": cluster, "Authorization": f"AWS4-HMAC-SHA256 Credential={credential}"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
        return str(answer.read().decode())


@pytest.mark.unit
def test_token_is_the_url_in_unpadded_base64url() -> None:
    for url in ("https://sts.eu-west-1.amazonaws.com/?a=1", "https://x/?b=22", "https://x/?c=333"):
        token = token_from_url(url)
        assert token.startswith(TOKEN_PREFIX)
        assert "=" not in token
        assert "+" not in token
        assert "/" not in token
        assert url_from_token(token) == url
    with pytest.raises(ValueError, match="not an EKS token"):
        url_from_token("Bearer abc")


@pytest.mark.unit
def test_token_is_presigned_for_the_regional_sts_endpoint_offline() -> None:
    identity = AWSIdentity("static", access_key_id=KEY, secret_access_key=SECRET)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    made = eks_token(identity.session(), "prod", "eu-west-1", now=now)
    url = urllib.parse.urlsplit(url_from_token(made.token))
    assert (url.scheme, url.netloc, url.path) == ("https", "sts.eu-west-1.amazonaws.com", "/")
    assert made.exec_credential()["status"]["expirationTimestamp"] == "2026-01-02T03:18:05Z"
    assert made.token not in repr(made)


@pytest.mark.integration
def test_presigned_url_parameters_signature_and_replay(sts: RecordingSts) -> None:
    identity = AWSIdentity("static", access_key_id=KEY, secret_access_key=SECRET)
    made = eks_token(identity.session(), "prod-eks", "eu-west-1", endpoint=sts.url)
    url = url_from_token(made.token)
    assert url.startswith(sts.url + "/?")
    fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert fields["Action"] == "GetCallerIdentity"
    assert fields["Version"] == "2011-06-15"
    assert fields["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert fields["X-Amz-Expires"] == "60"
    assert fields["X-Amz-SignedHeaders"] == "host;x-k8s-aws-id"
    key_id, _date, region, service, terminator = fields["X-Amz-Credential"].split("/")
    assert (key_id, region, service, terminator) == (KEY, "eu-west-1", "sts", "aws4_request")
    assert "X-Amz-Security-Token" not in fields  # static keys have no session token
    assert signature_ok(url, SECRET, "prod-eks")
    assert not signature_ok(url, SECRET, "another-cluster")  # a token names its cluster
    assert not signature_ok(url, "a-wrong-secret", "prod-eks")
    assert "<Arn>arn:aws:sts::123456789012:user/moto</Arn>" in replay(url, "prod-eks")
    [call] = sts.calls()
    assert (call.action, call.key_id) == ("GetCallerIdentity", KEY)


@pytest.mark.integration
def test_a_token_for_an_assumed_role_carries_its_session(sts: RecordingSts) -> None:
    base = AWSIdentity("static", access_key_id=KEY, secret_access_key=SECRET)
    client = base.session().client("sts", region_name="us-east-1", endpoint_url=sts.url)
    got = client.assume_role(
        RoleArn="arn:aws:iam::123456789012:role/maintenance", RoleSessionName="maintenance"
    )
    creds = got["Credentials"]
    role = AWSIdentity(
        "assume-role",
        access_key_id=creds["AccessKeyId"],
        secret_access_key=creds["SecretAccessKey"],
        session_token=creds["SessionToken"],
    )
    url = url_from_token(eks_token(role.session(), "prod-eks", "us-east-1", endpoint=sts.url).token)
    fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert fields["X-Amz-Security-Token"] == creds["SessionToken"]
    assert fields["X-Amz-Credential"].startswith(creds["AccessKeyId"] + "/")
    assert signature_ok(url, creds["SecretAccessKey"], "prod-eks")
    assert "<Arn>arn:aws:sts::123456789012:assumed-role/maintenance/maintenance</Arn>" in replay(
        url, "prod-eks"
    )


@pytest.mark.integration
def test_exec_plugin_command_prints_an_exec_credential(sts: RecordingSts) -> None:
    """``python -m handlers.common.eks`` as a kubeconfig exec entry runs it: minimal env + keys."""
    env = {
        "PATH": os.environ["PATH"],
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "RUNNER_AWS_ENDPOINT_URL": sts.url,
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    argv = [
        sys.executable,
        "-m",
        "handlers.common.eks",
        "--cluster-name",
        "prod-eks",
        "--region",
        "eu-west-1",
    ]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    credential = json.loads(proc.stdout)
    assert credential["kind"] == "ExecCredential"
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    url = url_from_token(credential["status"]["token"])
    assert signature_ok(url, SECRET, "prod-eks")
    assert SECRET not in proc.stdout + proc.stderr
    no_keys = {
        k: v for k, v in env.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")
    }
    proc = subprocess.run(argv, env=no_keys, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "no AWS credentials" in proc.stderr
