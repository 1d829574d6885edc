"""The helm family's decisions, as plain functions (no cluster): values arguments, plan contents
and op, storage drivers, version requests; and the binary cache against the real helm binary
(a corrupted cached binary is refused and replaced, never run)."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
from pathlib import Path

import pytest

from handlers.helm.binary import (
    HelmNotFound,
    VersionRequest,
    normalize_version,
    resolve_helm,
    verify_cached,
    version_from_app_config,
)
from handlers.helm.deploy import release_outputs, storage_driver
from handlers.helm.plan import diff_manifests, last_deployed_revision, read_op, summary_text
from handlers.helm.values import ValueArg, ValuesError, typed_scalar, value_args
from runner.sdk import HandlerError
from runner.sdk.plans import HelmValue
from runner.testing import RecordingLog, make_context

pytestmark = pytest.mark.unit


def test_typed_scalars_are_what_helm_set_types() -> None:
    assert [typed_scalar(v) for v in ("true", "False", "null", "0", "42", "-7")] == [True] * 6
    assert [typed_scalar(v) for v in ("007", "1.5", "yes", "", "a,b", "{a,b}", "9" * 30)] == [False] * 7


def test_value_args_last_entry_wins_and_strings_go_to_files() -> None:
    values = [
        HelmValue(name="a", value="1"),
        HelmValue(name="b", value="secret", type="string"),
        HelmValue(name="a", value="2"),
        HelmValue(name="c", value="true", type="string"),
    ]
    assert value_args(values) == [
        ValueArg("b", "secret", "set-file"),
        ValueArg("a", "2", "set"),
        ValueArg("c", "true", "set-file"),
    ]
    with pytest.raises(ValuesError, match="neither string nor auto"):
        value_args([HelmValue(name="a", value="1", type="json")])
    with pytest.raises(ValuesError, match="contains"):
        value_args([HelmValue(name="a=b", value="1")])


def test_storage_drivers() -> None:
    assert [storage_driver(d) for d in ("", "secret", "secrets", "ConfigMaps", " Nuon")] == [
        "secret",
        "secret",
        "secret",
        "configmap",
        "nuon",
    ]
    with pytest.raises(HandlerError, match="not supported"):
        storage_driver("sql")


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  color: {color}\n"


def test_diff_manifests_per_object() -> None:
    old = CM.format(name="a", color="blue") + "---\n" + CM.format(name="gone", color="x")
    new = CM.format(name="a", color="red") + "---\n" + CM.format(name="fresh", color="y")
    found = {d["name"]: d for d in diff_manifests(old, new, "ns1", "upgrade")}
    assert {n: d["type"] for n, d in found.items()} == {"a": 3, "gone": 1, "fresh": 2}
    assert found["a"]["entries"] == [{"path": "data.color", "original": "blue", "applied": "red", "type": 3}]
    assert found["a"]["namespace"] == "ns1"
    assert summary_text(diff_manifests(old, old, "ns1", "upgrade")) == "no changes"
    assert {d["type"] for d in diff_manifests(old, None, "ns1", "uninstall")} == {1}


def test_read_op_accepts_gzip_and_plain_json_and_refuses_others() -> None:
    packed = base64.b64encode(gzip.compress(json.dumps({"op": "upgrade"}).encode())).decode()
    assert read_op(packed) == "upgrade"
    assert read_op(base64.b64encode(b'{"op": "uninstall"}').decode()) == "uninstall"
    with pytest.raises(HandlerError, match="op 'apply'"):
        read_op(base64.b64encode(b'{"op": "apply"}').decode())


def test_history_and_outputs() -> None:
    history = [
        {"revision": 1, "status": "superseded"},
        {"revision": 2, "status": "deployed"},
        {"revision": 3, "status": "pending-upgrade"},
    ]
    assert last_deployed_revision(history) == 2
    assert last_deployed_revision([{"revision": 1, "status": "pending-install"}]) is None
    release = {
        "name": "r",
        "namespace": "n",
        "version": 3,
        "info": {"status": "deployed"},
        "chart": {"metadata": {"name": "c", "version": "1.2.3", "appVersion": "9"}},
    }
    assert release_outputs(release) == {
        "release": "r",
        "namespace": "n",
        "revision": 3,
        "status": "deployed",
        "chart": "c",
        "chart_version": "1.2.3",
        "app_version": "9",
    }


def test_versions() -> None:
    assert normalize_version("v3.17.2") == "3.17.2"
    assert normalize_version("") is None
    with pytest.raises(HelmNotFound):
        normalize_version("3.x")
    config = {
        "component_config_connections": [
            {"component_id": "other", "helm": {"helm_version": "3.1.0"}},
            {"component_id": "c1", "helm": {"helm_version": "v3.17.2"}},
        ]
    }
    assert version_from_app_config(config, "c1") == "v3.17.2"
    assert version_from_app_config({}, "c1") == ""


@pytest.mark.anyio
async def test_cache_records_the_sha256_and_refuses_a_corrupted_binary(tmp_path: Path) -> None:
    helm = shutil.which("helm")
    assert helm, "helm is not on PATH (scripts/install-tools.sh installs it)"
    ctx = make_context("helm-chart-deploy", {}, workspace=tmp_path)
    tools = tmp_path / "tools"
    request = VersionRequest("3.17.2", "test")
    first = await resolve_helm(
        request, tools_dir=tools, mirror_url=None, processes=ctx.processes, log=ctx.log
    )
    assert first.source == "path"
    assert first.path == tools / "helm" / "3.17.2" / "helm"
    record = json.loads((first.path.parent / "helm.json").read_text())
    assert len(record["sha256"]) == 64
    again = await resolve_helm(
        request, tools_dir=tools, mirror_url=None, processes=ctx.processes, log=ctx.log
    )
    assert again.source == "cache"

    with first.path.open("r+b") as fh:  # same size, other bytes, new mtime
        fh.seek(1000)
        fh.write(b"\0corrupt")
    assert not verify_cached(first.path)
    fixed = await resolve_helm(
        request, tools_dir=tools, mirror_url=None, processes=ctx.processes, log=ctx.log
    )
    assert fixed.source == "path"
    assert verify_cached(fixed.path)
    assert isinstance(ctx.log, RecordingLog)
    assert any("does not match its recorded SHA256" in m for m in ctx.log.messages())

    with pytest.raises(HelmNotFound, match=r"helm 9\.9\.9 \(test\) not found; looked in"):
        await resolve_helm(
            VersionRequest("9.9.9", "test"),
            tools_dir=tools,
            mirror_url=None,
            processes=ctx.processes,
            log=ctx.log,
        )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
