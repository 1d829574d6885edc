"""The ``nuon`` storage driver's pure parts: helm's record encoding and the write-back decision."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from handlers.helm.nuon import (
    RECORD_TYPE,
    decode_record,
    encode_record,
    release_key,
    release_of_secret,
    secret_body,
    write_back_plan,
)


def release(version: int, status: str = "deployed", **extra: Any) -> dict[str, Any]:
    return {
        "name": "demo",
        "namespace": "apps",
        "version": version,
        "info": {"status": status, "description": "Install complete"},
        "manifest": "---\nkind: ConfigMap\n",
        "config": {"color": "red"},
        **extra,
    }


def test_record_is_helms_encoding_base64_of_gzipped_json_without_labels() -> None:
    rel = release(3, labels={"team": "a"})
    text = encode_record(rel)
    raw = base64.b64decode(text)
    assert raw[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(raw)) == release(3)
    assert decode_record(text) == release(3)
    # helm also reads a record that is plain JSON (no gzip).
    assert decode_record(base64.b64encode(json.dumps(release(1)).encode()).decode()) == release(1)


def test_secret_is_what_helms_secret_driver_writes_and_reads_back_with_the_release_labels() -> None:
    rel = release(2, "superseded", labels={"team": "a"})
    secret = secret_body(rel, "apps", now=1700000000)
    assert secret["type"] == RECORD_TYPE
    assert secret["metadata"] == {
        "name": "sh.helm.release.v1.demo.v2",
        "namespace": "apps",
        "labels": {
            "team": "a",
            "name": "demo",
            "owner": "helm",
            "status": "superseded",
            "version": "2",
            "createdAt": "1700000000",
        },
    }
    # The API's data is base64 of helm's base64 text.
    assert decode_record(base64.b64decode(secret["data"]["release"]).decode()) == release(2, "superseded")
    assert release_of_secret(secret) == rel
    # helm's modifiedAt (an update) is a system label, not one of the release's.
    secret["metadata"]["labels"]["modifiedAt"] = "1700000100"
    del secret["metadata"]["labels"]["team"]
    assert release_of_secret(secret) == release(2, "superseded")


def test_release_key_is_helms_storage_key() -> None:
    assert release_key("demo", 12) == "sh.helm.release.v1.demo.v12"


def test_write_back_makes_the_control_plane_hold_what_the_cluster_holds() -> None:
    k = [release_key("demo", v) for v in range(5)]
    stored = {k[1]: release(1, "superseded"), k[2]: release(2), k[3]: release(3, "failed")}
    cluster = {
        k[2]: release(2, "superseded"),  # helm marked it superseded: update
        k[3]: release(3, "failed"),  # unchanged
        k[4]: release(4),  # the new revision: create
    }  # k[1] pruned by --history-max: delete
    todo = write_back_plan(cluster, stored)
    assert (todo.create, todo.update, todo.delete) == ([k[4]], [k[2]], [k[1]])
    assert todo.summary() == "1 created, 1 updated, 1 deleted"
    assert not write_back_plan(cluster, cluster)


def test_write_back_compares_empty_labels_as_none_and_orders_by_version() -> None:
    k = {v: release_key("demo", v) for v in (2, 10, 9)}
    cluster = {k[10]: release(10), k[9]: release(9), k[2]: release(2, labels={})}
    todo = write_back_plan(cluster, {k[2]: release(2)})
    assert todo.create == [k[9], k[10]]
    assert todo.update == []
    assert todo.delete == []
    # An uninstall removes every record: every one is deleted.
    assert write_back_plan({}, cluster).delete == [k[2], k[9], k[10]]
