"""The pure decisions of handlers/kube: parsing and order, the diff, the prune set, readiness."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from handlers.kube import diff
from handlers.kube.deploy import plan_contents, plan_result, read_plan_op
from handlers.kube.inventory import inventory_body, inventory_name, prune_set, read_inventory
from handlers.kube.manifest import ManifestError, ObjectKey, apply_order, delete_order, parse_manifest
from handlers.kube.readiness import WorkloadFailed, readiness

pytestmark = pytest.mark.unit

TEXT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com, namespace: ignored}
---
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: other}
"""


def test_parse_fills_the_default_namespace_and_orders_namespaces_and_crds_first() -> None:
    objects = parse_manifest(TEXT, "apps")
    keys = [o.key for o in objects]
    assert keys[0] == ObjectKey("apps/v1", "Deployment", "apps", "web")
    assert objects[0].body["metadata"]["namespace"] == "apps"
    assert keys[1].namespace == ""  # cluster-scoped whatever the manifest says
    assert keys[3].namespace == "other"
    ordered = [o.key.kind for o in apply_order(objects)]
    assert ordered == ["Namespace", "CustomResourceDefinition", "ConfigMap", "Deployment"]
    assert [k.kind for k in delete_order([o.key for o in objects])] == list(reversed(ordered))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: ConfigMap\nmetadata: {name: a}", "(ConfigMap a) has no apiVersion"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}", "has no metadata.name"),
        ("- a\n- b", "document 1 is not an object"),
        ("a: [", "not valid YAML"),
        ("", "no objects"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\n"
            "metadata: {name: a}",
            "appears twice",
        ),
    ],
)
def test_invalid_manifests_name_the_document(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_manifest(text, "ns")


KEY = ObjectKey("v1", "ConfigMap", "ns", "cfg")
#: A live object as the apiserver returns it (JSON), typed as resource_diff takes it.
LIVE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {
        "name": "cfg",
        "namespace": "ns",
        "uid": "u1",
        "resourceVersion": "7",
        "managedFields": [{}],
    },
    "data": {"a": "1", "b": "2"},
}


def test_diff_ignores_server_fields_and_reports_each_changed_leaf() -> None:
    same = {**LIVE, "metadata": {**LIVE["metadata"], "resourceVersion": "8"}, "status": {"x": 1}}
    unchanged = diff.resource_diff(KEY, op="apply", live=LIVE, applied=same, resource="configmaps")
    assert unchanged["type"] == 0
    assert unchanged["entries"] == []
    changed = diff.resource_diff(KEY, op="apply", live=LIVE, applied={**LIVE, "data": {"a": "3", "c": "4"}})
    assert changed["type"] == 3
    assert changed["entries"] == [
        {"path": "data.a", "original": "1", "applied": "3", "type": 3},
        {"path": "data.b", "original": "2", "type": 1},
        {"path": "data.c", "applied": "4", "type": 2},
    ]
    assert diff.resource_diff(KEY, op="apply", live=None, applied=LIVE)["type"] == 2
    removed = diff.resource_diff(KEY, op="delete", live=LIVE, applied=None)
    assert removed["type"] == 1
    assert removed["op"] == "delete"
    error = diff.resource_diff(KEY, op="apply", live=None, applied=None, error="boom")
    assert (error["type"], error["error"]) == (4, "boom")
    assert set(unchanged) == {
        "_version",
        "name",
        "namespace",
        "kind",
        "api",
        "resource",
        "op",
        "type",
        "dry_run",
        "entries",
    }
    assert diff.summary([unchanged, changed]) == {
        "unchanged": 1,
        "removed": 0,
        "added": 0,
        "modified": 1,
        "error": 0,
    }
    assert diff.has_changes([unchanged, changed])
    assert not diff.has_changes([unchanged])


def test_prune_set_and_inventory_round_trip() -> None:
    a, b, c = (ObjectKey("v1", "ConfigMap", "ns", n) for n in "abc")
    assert prune_set([a, b, c], [b]) == [a, c]
    assert prune_set([], [a]) == []
    name = inventory_name("inst1", "comp/1", "ns")
    assert name.startswith("byoc-runner-inventory-inst1-comp-1-")
    assert len(name) <= 63
    assert name != inventory_name("inst1", "comp-1", "ns"), "different components never share an inventory"
    assert read_inventory(inventory_body(name, "ns", [c, a, a])) == [a, c]
    assert read_inventory(None) == []


def deployment(status: Mapping[str, object], generation: int = 2, replicas: int = 2) -> dict[str, object]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": replicas},
        "status": status,
    }


def test_readiness_follows_rollout_status() -> None:
    assert readiness({"kind": "ConfigMap"}) == (True, "applied")
    assert readiness(deployment({"observedGeneration": 1}))[0] is False
    ready = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert readiness(deployment(ready)) == (True, "2 replicas available")
    assert readiness(deployment({**ready, "replicas": 3}))[1] == "1 old replicas pending termination"
    assert readiness(deployment({**ready, "availableReplicas": 1}))[1] == "1 of 2 replicas available"
    sts = {
        "kind": "StatefulSet",
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
    }
    assert readiness(sts)[0] is True
    ds = {
        "kind": "DaemonSet",
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3,
            "numberReady": 2,
        },
    }
    assert readiness(ds) == (False, "2 of 3 pods ready")
    job = {"kind": "Job", "metadata": {"name": "j"}, "status": {"active": 1}}
    assert readiness(job)[0] is False
    done = {**job, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert readiness(done) == (True, "complete")
    failed = {
        **job,
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
    }
    with pytest.raises(WorkloadFailed, match="Job j failed: BackoffLimitExceeded"):
        readiness(failed)


def test_plan_contents_round_trip_through_the_apply_job_encoding() -> None:
    import base64

    result = plan_result(plan_contents("delete", []))
    raw = base64.urlsafe_b64decode(result.contents_compressed or "")
    assert read_plan_op(base64.b64encode(raw).decode()) == "delete"
    assert read_plan_op(base64.b64encode(b'{"op": "apply"}').decode()) == "apply"
    with pytest.raises(Exception, match="expected apply or delete"):
        read_plan_op(base64.b64encode(b'{"op": "upgrade"}').decode())
