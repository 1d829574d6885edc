"""sandbox-sync-secrets against moto's Secrets Manager (a real server on loopback) and the real
apiserver, driven by ``runner.testing``.

- Values are read as the plan's identity (the recording shows the plan's key signing each
  ``GetSecretValue``), written into Secrets (two keys of one Secret in one apply, a ``base64``
  value decoded, a missing namespace created, a key another manager set taken over, a key
  another manager set and the plan does not name left alone), and re-synced after a rotation (a
  key an earlier sync wrote and the plan no longer names is removed); no value appears in any log
  record, in any form the registry masks, nor in the outputs.
- Every failure fails the job: a secret missing from Secrets Manager (nothing is written, each
  missing one named), a plan that cannot be synced (before any AWS call), the chart's service
  account writing outside its namespace (forbidden, naming the Secret).
"""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from handlers.kube.sync_secrets import SyncSecretsHandler
from runner.sdk import HandlerError
from runner.testing import run_handler
from tests.common.conftest import RecordingSts
from tests.kube.conftest import Cluster, ServiceAccountAccess

pytestmark = pytest.mark.kube

JOB = "sandbox-sync-secrets"
KEY, SECRET_KEY = "AKIASYNCSECRETS00001", "sync-secrets-test-secret-key"
REGION = "eu-west-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def secretsmanager(sts: RecordingSts) -> Any:
    return boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=sts.url,
        aws_access_key_id="AKIASETUP00000000001",
        aws_secret_access_key="setup",
    )


def create_secret(sts: RecordingSts, name: str, value: str) -> str:
    arn: str = secretsmanager(sts).create_secret(Name=name, SecretString=value)["ARN"]
    return arn


def secret_reads(sts: RecordingSts) -> list[tuple[str, str]]:
    """``(SecretId, signing key id)`` of each ``GetSecretValue`` moto recorded (a JSON-protocol
    call: the action is in ``X-Amz-Target``, the parameters in the JSON body)."""
    with urllib.request.urlopen(f"{sts.url}/moto-api/recorder/download-recording", timeout=10) as r:
        lines = r.read().decode().splitlines()
    out = []
    for line in lines:
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        if headers.get("x-amz-target") != "secretsmanager.GetSecretValue":
            continue
        body = base64.b64decode(entry["body"]).decode() if entry.get("body_encoded") else entry["body"]
        key_id = headers.get("authorization", "").partition("Credential=")[2].partition("/")[0]
        out.append((json.loads(body)["SecretId"], key_id))
    return out


def sync_plan(cluster_kubeconfig: str, entries: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "kubernetes_secrets": entries,
        "cluster_info": {"kube_config": cluster_kubeconfig},
        "aws_auth": {"static": {"access_key_id": KEY, "secret_access_key": SECRET_KEY}, "region": REGION},
    }


def secret_data(cluster: Cluster, ns: str, name: str) -> dict[str, str]:
    obj = json.loads(cluster.kubectl("get", "secret", name, "-n", ns, "-o", "json"))
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


def assert_masked(text: str, *values: str) -> None:
    for value in values:
        for form in (value, base64.b64encode(value.encode()).decode()):
            assert form not in text, f"a secret value leaked into the job log ({form[:4]}...)"


@pytest.mark.anyio
async def test_secrets_are_synced_masked_and_resynced(
    tmp_path: Path, kube_cluster: Cluster, kube_namespace: str, sts: RecordingSts
) -> None:
    db_password = f"db-pass-{uuid.uuid4().hex}"
    api_token = f"api-token-{uuid.uuid4().hex}"
    cert = f"-----BEGIN CERT-----{uuid.uuid4().hex}-----END CERT-----"
    arn_db = create_secret(sts, "app/db", db_password)
    arn_api = create_secret(sts, "app/api", api_token)
    arn_cert = create_secret(sts, "app/cert", base64.b64encode(f"{cert}\n".encode()).decode())
    new_ns = f"t-{uuid.uuid4().hex[:10]}"  # not there yet: the job creates it
    # A Secret another manager made: its "db" key is taken over, its "other" key stays.
    kube_cluster.kubectl(
        "create",
        "secret",
        "generic",
        "app",
        "-n",
        kube_namespace,
        "--from-literal=db=old",
        "--from-literal=other=keep",
    )
    entries = [
        {
            "secret_arn": arn_db,
            "secret_name": "db_password",
            "namespace": kube_namespace,
            "name": "app",
            "key_name": "db",
        },
        {
            "secret_arn": arn_api,
            "secret_name": "api_token",
            "namespace": kube_namespace,
            "name": "app",
            "key_name": "token",
        },
        {
            "secret_arn": arn_cert,
            "secret_name": "tls",
            "namespace": new_ns,
            "name": "tls",
            "key_name": "cert.pem",
            "format": "base64",
        },
    ]
    try:
        run = await run_handler(
            SyncSecretsHandler(),
            sync_plan(kube_cluster.kubeconfig.read_text(), entries),
            job_type=JOB,
            workspace=tmp_path / "ws",
        )
        assert secret_data(kube_cluster, kube_namespace, "app") == {
            "db": db_password,
            "token": api_token,
            "other": "keep",
        }
        assert secret_data(kube_cluster, new_ns, "tls") == {"cert.pem": cert}  # decoded and trimmed
        assert run.outputs is not None
        assert set(run.outputs) == {"db_password", "api_token", "tls"}
        assert run.outputs["db_password"] | {"timestamp": None, "version_id": None} == {
            "name": "db_password",
            "arn": arn_db,
            "kubernetes_namespace": kube_namespace,
            "kubernetes_name": "app",
            "kubernetes_key": "db",
            "length": len(db_password),
            "exists": True,
            "timestamp": None,
            "version_id": None,
        }
        assert run.outputs["tls"]["length"] == len(cert)
        assert run.outputs["db_password"]["timestamp"]
        assert run.outputs["db_password"]["version_id"]
        reads = secret_reads(sts)
        assert sorted(arn for arn, _ in reads) == sorted([arn_db, arn_api, arn_cert])
        assert {key for _, key in reads} == {KEY}  # as the plan's identity
        assert any(m == f"created namespace {new_ns}" for m in run.log.messages())
        text = run.log.text() + json.dumps(run.outputs)
        assert_masked(text, db_password, api_token, cert, SECRET_KEY)
        assert {db_password, api_token, cert} <= run.ctx.secrets.values  # type: ignore[attr-defined]

        # Rotation: the next sync writes the new value.
        rotated = f"rotated-{uuid.uuid4().hex}"
        secretsmanager(sts).put_secret_value(SecretId=arn_db, SecretString=rotated)
        run = await run_handler(
            SyncSecretsHandler(),
            sync_plan(kube_cluster.kubeconfig.read_text(), entries[:1]),
            job_type=JOB,
            workspace=tmp_path / "ws2",
        )
        # Only "db" is in this plan: "token", which only the runner's field manager owned, is
        # removed (server-side apply drops a field its only manager stops applying); "other",
        # another manager's, stays.
        assert secret_data(kube_cluster, kube_namespace, "app") == {"db": rotated, "other": "keep"}
        assert_masked(run.log.text(), rotated)
    finally:
        kube_cluster.kubectl("delete", "namespace", new_ns, "--wait=false", "--ignore-not-found")


@pytest.mark.anyio
async def test_a_missing_secret_fails_the_job_and_nothing_is_written(
    tmp_path: Path, kube_cluster: Cluster, kube_namespace: str, sts: RecordingSts
) -> None:
    value = f"present-{uuid.uuid4().hex}"
    arn = create_secret(sts, "app/present", value)
    missing = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:app/missing-AbCdEf"
    entries = [
        {
            "secret_arn": arn,
            "secret_name": "present",
            "namespace": kube_namespace,
            "name": "ok",
            "key_name": "v",
        },
        {
            "secret_arn": missing,
            "secret_name": "gone",
            "namespace": kube_namespace,
            "name": "bad",
            "key_name": "v",
        },
    ]
    run = await run_handler(
        SyncSecretsHandler(),
        sync_plan(kube_cluster.kubeconfig.read_text(), entries),
        job_type=JOB,
        workspace=tmp_path,
        raise_errors=False,
    )
    assert isinstance(run.error, HandlerError)
    message = str(run.error)
    assert "1 of 2 secrets could not be read, nothing was written" in message
    assert "'gone'" in message
    assert "ResourceNotFoundException" in message
    assert "'present'" not in message
    assert run.outputs is None
    listed = json.loads(kube_cluster.kubectl("get", "secrets", "-n", kube_namespace, "-o", "json"))["items"]
    assert not [s for s in listed if s["metadata"]["name"] in ("ok", "bad")]
    assert_masked(run.log.text() + message, value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "s", "key_name": "k"}, "no secret_arn"),
        ({"secret_arn": "arn:x", "name": "s", "key_name": "bad key"}, "'bad key' is not a valid Secret key"),
        ({"secret_arn": "arn:x", "name": "S_3", "key_name": "k"}, "'S_3' is not a valid Secret name"),
        ({"secret_arn": "arn:x", "name": "s", "key_name": "k", "format": "json"}, "unknown format 'json'"),
    ],
)
async def test_a_plan_that_cannot_be_synced_fails_before_any_call(
    tmp_path: Path, kube_cluster: Cluster, sts: RecordingSts, entry: dict[str, str], expected: str
) -> None:
    run = await run_handler(
        SyncSecretsHandler(),
        sync_plan(kube_cluster.kubeconfig.read_text(), [entry]),
        job_type=JOB,
        workspace=tmp_path,
        raise_errors=False,
    )
    assert isinstance(run.error, HandlerError)
    assert expected in str(run.error)
    assert secret_reads(sts) == []
    assert sts.calls() == []  # no STS call either


@pytest.mark.anyio
async def test_the_plan_must_name_aws_credentials(tmp_path: Path, kube_cluster: Cluster) -> None:
    plan = sync_plan(
        kube_cluster.kubeconfig.read_text(), [{"secret_arn": "arn:x", "name": "s", "key_name": "k"}]
    )
    plan.pop("aws_auth")
    plan["azure_auth"] = {"use_default": True}
    run = await run_handler(SyncSecretsHandler(), plan, job_type=JOB, workspace=tmp_path, raise_errors=False)
    assert isinstance(run.error, HandlerError)
    assert "Azure Key Vault is not supported" in str(run.error)


@pytest.mark.anyio
async def test_the_charts_service_account_syncs_into_its_namespace_only(
    tmp_path: Path,
    kube_cluster: Cluster,
    kube_namespace: str,
    runner_sa: ServiceAccountAccess,
    sts: RecordingSts,
) -> None:
    value = f"sa-{uuid.uuid4().hex}"
    arn = create_secret(sts, "app/sa", value)
    kubeconfig = runner_sa.kubeconfig.read_text()
    own = [{"secret_arn": arn, "namespace": runner_sa.namespace, "name": "synced", "key_name": "v"}]
    run = await run_handler(
        SyncSecretsHandler(), sync_plan(kubeconfig, own), job_type=JOB, workspace=tmp_path / "a"
    )
    assert run.outputs is not None
    assert run.outputs["synced"]["length"] == len(value)
    assert secret_data(kube_cluster, runner_sa.namespace, "synced") == {"v": value}

    other = [{"secret_arn": arn, "namespace": kube_namespace, "name": "synced", "key_name": "v"}]
    run = await run_handler(
        SyncSecretsHandler(),
        sync_plan(kubeconfig, other),
        job_type=JOB,
        workspace=tmp_path / "b",
        raise_errors=False,
    )
    assert isinstance(run.error, HandlerError)
    assert f"applying Secret {kube_namespace}/synced (v1): forbidden" in str(run.error)
