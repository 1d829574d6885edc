"""The kube tier itself: the real apiserver, the chart's RBAC, status patches, and the client.

These pin what the kubernetes-manifest-deploy handler builds on: kubernetes_asyncio's dynamic
client talks to the 1.20 apiserver over verified TLS, server-side apply and its server dry-run
work with our field manager, a second manager's change conflicts, and the chart's service
account can do what the chart grants and nothing else.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.dynamic import DynamicClient

from tests.kube.conftest import Cluster, ServiceAccountAccess

pytestmark = pytest.mark.kube

FIELD_MANAGER = "byoc-runner"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def api_client(kubeconfig: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return k8s.ApiClient(configuration)


def failure(answer: Any) -> int:
    """The HTTP code of a ``Status`` failure the dynamic client returned, else 0.

    kubernetes_asyncio's dynamic client (36.1) reads responses unparsed and so returns an error
    ``Status`` instead of raising; handlers/kube checks every answer the same way.
    """
    if answer.kind == "Status" and answer.status == "Failure":
        return int(answer.code)
    return 0


def config_map(name: str, namespace: str, data: dict[str, str]) -> Any:
    """A ConfigMap body (kubernetes_asyncio's typed calls take plain dicts too)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


@pytest.mark.anyio
async def test_the_apiserver_is_kubernetes_1_20_over_verified_tls(kube_cluster: Cluster) -> None:
    async with await api_client(str(kube_cluster.kubeconfig)) as api:
        assert api.configuration.verify_ssl is True
        version = await k8s.VersionApi(api).get_code()
    assert version.git_version == "v1.20.2"


@pytest.mark.anyio
async def test_server_side_apply_dry_run_then_apply_with_our_field_manager(
    kube_cluster: Cluster, kube_namespace: str
) -> None:
    async with await api_client(str(kube_cluster.kubeconfig)) as api:
        dynamic = await DynamicClient(api)
        resource = await dynamic.resources.get(api_version="v1", kind="ConfigMap")
        body = config_map("settings", kube_namespace, {"a": "1"})

        dry = await dynamic.server_side_apply(
            resource, body=body, namespace=kube_namespace, field_manager=FIELD_MANAGER, dry_run="All"
        )
        assert dry.data.a == "1"
        missing = await dynamic.get(resource, name="settings", namespace=kube_namespace)
        assert failure(missing) == 404, "a dry run creates nothing"

        applied = await dynamic.server_side_apply(
            resource, body=body, namespace=kube_namespace, field_manager=FIELD_MANAGER
        )
        managers = [m.manager for m in applied.metadata.managedFields]
        assert managers == [FIELD_MANAGER]

        # Another manager takes the field; our next apply of a different value conflicts.
        await dynamic.server_side_apply(
            resource,
            body=config_map("settings", kube_namespace, {"a": "2"}),
            namespace=kube_namespace,
            field_manager="someone-else",
            force_conflicts=True,
        )
        conflict = await dynamic.server_side_apply(
            resource,
            body=config_map("settings", kube_namespace, {"a": "3"}),
            namespace=kube_namespace,
            field_manager=FIELD_MANAGER,
        )
        assert failure(conflict) == 409
        assert "someone-else" in conflict.message


@pytest.mark.anyio
async def test_a_deployment_becomes_ready_when_the_test_patches_its_status(
    kube_cluster: Cluster, kube_namespace: str
) -> None:
    """No kubelet runs pods here: the test writes the status a Deployment controller would."""
    deployment: Any = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": kube_namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "127.0.0.1:5000/web:1"}]},
            },
        },
    }
    async with await api_client(str(kube_cluster.kubeconfig)) as api:
        apps = k8s.AppsV1Api(api)
        created = await apps.create_namespaced_deployment(kube_namespace, deployment)
        assert created.status.ready_replicas is None
        status = {
            "status": {
                "observedGeneration": created.metadata.generation,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
            }
        }
        patched = await apps.patch_namespaced_deployment_status("web", kube_namespace, status)
        assert patched.status.ready_replicas == 2
        assert patched.status.observed_generation == patched.metadata.generation


@pytest.mark.anyio
async def test_the_chart_service_account_has_the_chart_rbac_and_no_more(
    kube_cluster: Cluster, runner_sa: ServiceAccountAccess
) -> None:
    async with await api_client(str(runner_sa.kubeconfig)) as api:
        core = k8s.CoreV1Api(api)
        made = await core.create_namespaced_config_map(
            runner_sa.namespace, config_map("probe", runner_sa.namespace, {"k": "v"})
        )
        assert made.metadata.name == "probe"
        await core.delete_namespaced_config_map("probe", runner_sa.namespace)

        for forbidden in (
            core.list_namespace(),
            core.create_namespaced_config_map("default", config_map("probe", "default", {"k": "v"})),
            k8s.RbacAuthorizationV1Api(api).list_cluster_role(),
        ):
            with pytest.raises(ApiException) as denied:
                await forbidden
            assert denied.value.status == 403

        body: Any = {"spec": {"namespace": runner_sa.namespace}}
        review = await k8s.AuthorizationV1Api(api).create_self_subject_rules_review(body)
    granted = {
        (group, resource, verb)
        for rule in review.status.resource_rules
        for group in rule.api_groups or []
        for resource in rule.resources or []
        for verb in rule.verbs
    }
    assert ("apps", "deployments", "patch") in granted
    assert ("", "secrets", "create") in granted
    assert ("", "namespaces", "create") not in granted
    assert not any("*" in item for item in granted)
