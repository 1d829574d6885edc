"""The Helm chart, rendered by the real helm (v3.17 from scripts/install-tools.sh).

Each check guards against one of the reference chart's bugs (reference-runner.md section 7.3):
env names the binary never reads, the token in a ConfigMap, a wildcard ClusterRole, a ServiceAccount
that the bindings do not name, and replicas sharing one runner id. No cluster is involved: the
kube tier has no apiserver yet, so `helm install` is not exercised here.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.config import ENV_NAMES, KNOWN_GROUPS, load_config
from tests.deploy.conftest import CHART, VALUES_DIR, Tool

pytestmark = pytest.mark.kube

VALUES_FILES = sorted(VALUES_DIR.glob("*.yaml"))
RUNNER_ENV_NAMES = set(ENV_NAMES.values())
CREATED_TOKEN = "tok-created-secret-3f9a1c7e5b2d"  # the token in values/created-secret.yaml


def render(helm: Tool, *args: str, namespace: str = "runners", chart: Path = CHART) -> list[dict[str, Any]]:
    proc = helm.run(["template", "rel", str(chart), "--namespace", namespace, *args])
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def render_values(helm: Tool, values: Path, *args: str) -> list[dict[str, Any]]:
    return render(helm, "-f", str(values), *args)


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    result: dict[str, Any] = pod["containers"][0]
    return result


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(docs)["env"]}


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


@pytest.fixture(params=VALUES_FILES, ids=[p.stem for p in VALUES_FILES])
def values_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_values_files_exist() -> None:
    assert len(VALUES_FILES) >= 4


def test_helm_lint_strict(helm: Tool, values_file: Path) -> None:
    proc = helm.run(["lint", "--strict", str(CHART), "-f", str(values_file)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_env_names_are_the_ones_the_runner_reads(helm: Tool, values_file: Path) -> None:
    env = env_of(render_values(helm, values_file))
    for required in (
        "RUNNER_ID",
        "RUNNER_API_URL",
        "RUNNER_API_TOKEN",
        "RUNNER_STATE_DIR",
        "RUNNER_HEALTH_ADDR",
    ):
        assert required in env
    unknown = {n for n in env if n.startswith("RUNNER_")} - RUNNER_ENV_NAMES
    assert not unknown, f"env names runner.config does not read: {unknown}"
    # The reference chart's names, which its binary ignored.
    assert not {"API_TOKEN", "API_URL"} & env.keys()


def test_token_only_from_a_secret(helm: Tool, values_file: Path) -> None:
    docs = render_values(helm, values_file)
    token = env_of(docs)["RUNNER_API_TOKEN"]
    assert "value" not in token
    ref = token["valueFrom"]["secretKeyRef"]
    given = yaml.safe_load(values_file.read_text())["token"]
    if given.get("existingSecret"):
        assert ref["name"] == given["existingSecret"]
        assert not [d for d in docs if d["kind"] == "Secret"], "no Secret is created for an existing one"
    else:
        secret = only(docs, "Secret")
        assert secret["metadata"]["name"] == ref["name"]
        assert ref["key"] in secret["data"]
    assert ref["key"] == given.get("key", "token")
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    assert not any(e.get("envFrom") for e in [container(docs)])


def test_created_secret_holds_the_token_and_nothing_else_shows_it(helm: Tool) -> None:
    proc = helm.run(["template", "rel", str(CHART), "-f", str(VALUES_DIR / "created-secret.yaml")])
    assert proc.returncode == 0, proc.stderr
    assert CREATED_TOKEN not in proc.stdout, "the token must appear only base64-encoded inside the Secret"
    secret = only([d for d in yaml.safe_load_all(proc.stdout) if d], "Secret")
    assert base64.b64decode(secret["data"]["token"]).decode() == CREATED_TOKEN


def test_rendered_env_is_a_valid_runner_config(helm: Tool) -> None:
    """The chart's env, fed to the runner's own config loader, gives what the values asked for."""
    env = env_of(render_values(helm, VALUES_DIR / "created-secret.yaml"))
    plain = {name: e["value"] for name, e in env.items() if "value" in e}
    plain["RUNNER_API_TOKEN"] = "from-the-secret"
    config = load_config(env=plain)
    assert config.runner_id == "runr0000000000000000000002"
    assert config.api_url == "http://controlplane.runners.svc:8080"
    assert config.groups == ("build", "deploy", "sync")
    assert dict(config.concurrency) == {"build": 2, "deploy": 1}
    assert config.max_concurrency == 4
    assert config.drain_grace == 120
    assert config.log_format == "console"
    assert config.log_level == "DEBUG"
    assert config.health_addr == "0.0.0.0:9090"
    assert str(config.state_dir) == "/var/lib/byoc-runner"


def test_probes_hit_the_health_port(helm: Tool, values_file: Path) -> None:
    docs = render_values(helm, values_file)
    c = container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    host, _, port = env_of(docs)["RUNNER_HEALTH_ADDR"]["value"].rpartition(":")
    assert host == "0.0.0.0", "the kubelet probes the pod IP, so loopback would fail every probe"
    assert int(port) == ports["health"]


def test_non_root_read_only_with_writable_tmp_and_state(helm: Tool, values_file: Path) -> None:
    docs = render_values(helm, values_file)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc.get("privileged") is not True
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    state_dir = env_of(docs)["RUNNER_STATE_DIR"]["value"]
    state = volumes[mounts[state_dir]]
    assert "emptyDir" in state or "persistentVolumeClaim" in state


def test_rbac_is_namespaced_explicit_and_bound_to_the_pods_service_account(
    helm: Tool, values_file: Path
) -> None:
    docs = render_values(helm, values_file)
    kinds = {d["kind"] for d in docs}
    assert not {"ClusterRole", "ClusterRoleBinding"} & kinds
    roles = [d for d in docs if d["kind"] == "Role"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert roles
    assert len(roles) == len(bindings)
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"wildcard in {field} of {role['metadata']['namespace']}"
            assert rule["verbs"]
    sa_name = only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    sa = only(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == sa_name
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": "runners"}]
    wanted = yaml.safe_load(values_file.read_text()).get("rbac", {}).get("namespaces") or ["runners"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(wanted)
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(wanted)


def test_cluster_scoped_switch_renders_one_cluster_role_instead_of_the_roles(helm: Tool) -> None:
    base = ["-f", str(VALUES_DIR / "created-secret.yaml")]
    namespaced = render(helm, *base)
    assert not [d for d in namespaced if d["kind"].startswith("Cluster")], "nothing cluster-scoped by default"
    docs = render(helm, *base, "--set", "rbac.clusterScoped=true")
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    role, binding = only(docs, "ClusterRole"), only(docs, "ClusterRoleBinding")
    assert "namespace" not in role["metadata"]
    assert role["metadata"]["name"] == binding["metadata"]["name"] == binding["roleRef"]["name"]
    assert binding["roleRef"]["kind"] == "ClusterRole"
    sa_name = only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": "runners"}]
    values = yaml.safe_load((CHART / "values.yaml").read_text())["rbac"]
    assert role["rules"] == values["rules"] + values["clusterRules"]
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field]
        assert not {"bind", "escalate", "impersonate"} & set(rule["verbs"]), "documented as left out"
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert {
        ("", "namespaces"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
    } <= granted


def test_cluster_scoped_rules_refuse_wildcards(helm: Tool) -> None:
    proc = helm.run(
        [
            "template",
            "rel",
            str(CHART),
            "-f",
            str(VALUES_DIR / "created-secret.yaml"),
            "--set",
            "rbac.clusterScoped=true",
            "--set",
            "rbac.extraClusterRules[0].apiGroups[0]=*",
            "--set",
            "rbac.extraClusterRules[0].resources[0]=*",
            "--set",
            "rbac.extraClusterRules[0].verbs[0]=*",
        ]
    )
    assert proc.returncode != 0
    assert "wildcard" in proc.stderr


def test_sigterm_drain_fits_in_the_termination_grace(helm: Tool, values_file: Path) -> None:
    docs = render_values(helm, values_file)
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    drain = float(env_of(docs)["RUNNER_DRAIN_GRACE"]["value"])
    assert pod["terminationGracePeriodSeconds"] >= drain
    assert "lifecycle" not in container(docs), "SIGTERM drains: no preStop hook"
    # One runner id, one process: never two pods at once, not even during a rollout.
    assert deployment["spec"]["replicas"] <= 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_defaults_keep_optional_objects_off(helm: Tool) -> None:
    docs = render_values(helm, VALUES_DIR / "minimal-existing-secret.yaml")
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Role", "RoleBinding", "ServiceAccount"]
    c = container(docs)
    assert c["image"] == "byoc-runner:0.1.0"  # the chart's appVersion
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 630


def test_full_values_render_every_optional_object(helm: Tool) -> None:
    docs = render_values(helm, VALUES_DIR / "full.yaml", "--api-versions", "policy/v1/PodDisruptionBudget")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Role") == 3
    assert kinds.count("RoleBinding") == 3
    for kind in ("PersistentVolumeClaim", "Service", "ServiceMonitor", "PodDisruptionBudget"):
        assert kind in kinds
    assert only(docs, "PodDisruptionBudget")["apiVersion"] == "policy/v1"
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 1900
    assert pod["nodeSelector"] == {"workload": "runners"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "byoc-runner-sa"
    assert container(docs)["image"].endswith("@sha256:" + "0123456789abcdef" * 4)
    sa = only(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/byoc-runner")
    pvc = only(docs, "PersistentVolumeClaim")
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    monitor = only(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == "health"
    assert only(docs, "Service")["spec"]["ports"][0]["targetPort"] == "health"
    assert "cert-manager.io" in json.dumps([d for d in docs if d["kind"] == "Role"])
    env = env_of(docs)
    assert env["RUNNER_CONCURRENCY"]["value"] == "deploy=3,sandbox=1"
    assert env["RUNNER_TERRAFORM_VERSION"]["value"] == "1.11.4"
    assert env["AWS_REGION"]["value"] == "us-east-1"


def test_pdb_falls_back_to_v1beta1_on_kubernetes_1_20(helm: Tool) -> None:
    docs = render_values(helm, VALUES_DIR / "full.yaml", "--kube-version", "1.20.2")
    assert only(docs, "PodDisruptionBudget")["apiVersion"] == "policy/v1beta1"


def test_azure_workload_identity_label_reaches_the_pod(helm: Tool) -> None:
    docs = render_values(helm, VALUES_DIR / "workload-identity-azure.yaml")
    labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["azure.workload.identity/use"] == "true"
    assert "azure.workload.identity/client-id" in only(docs, "ServiceAccount")["metadata"]["annotations"]


BASE = [
    "--set",
    "runner.id=r1",
    "--set",
    "runner.apiUrl=https://api.example.com",
    "--set",
    "token.existingSecret=t",
]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "runner.apiUrl=https://api.example.com", "--set", "token.value=x"],
            "runner.id is required",
        ),
        (["--set", "runner.id=r1", "--set", "token.value=x"], "runner.apiUrl is required"),
        (
            ["--set", "runner.id=r1", "--set", "runner.apiUrl=https://api.example.com"],
            "a runner token is required",
        ),
        ([*BASE, "--set", "runner.apiUrl=ftp://api.example.com"], "must be an http(s) URL"),
        ([*BASE, "--set", "runner.apiUrl=https://u:p@api.example.com"], "must not carry credentials"),
        ([*BASE, "--set", "replicaCount=2"], "replicaCount"),
        (
            [*BASE, "--set", "runner.drainGrace=300", "--set", "terminationGracePeriodSeconds=100"],
            "at least runner.drainGrace",
        ),
        ([*BASE, "--set", "runner.groups={builds}"], "runner.groups"),
        ([*BASE, "--set", "runner.concurrency.build=0"], "runner.concurrency.build"),
        (
            [
                *BASE,
                "--set-json",
                'rbac.extraRules=[{"apiGroups":["*"],"resources":["pods"],"verbs":["get"]}]',
            ],
            'wildcard "*" in apiGroups',
        ),
        (
            [*BASE, "--set-json", 'rbac.extraRules=[{"apiGroups":[""],"resources":["pods"],"verbs":["*"]}]'],
            'wildcard "*" in verbs',
        ),
    ],
    ids=[
        "no-id",
        "no-url",
        "no-token",
        "bad-url",
        "url-with-credentials",
        "two-replicas",
        "grace-below-drain",
        "unknown-group",
        "zero-concurrency",
        "wildcard-group",
        "wildcard-verb",
    ],
)
def test_bad_values_fail_with_a_clear_message(helm: Tool, args: list[str], message: str) -> None:
    proc = helm.run(["template", "rel", str(CHART), *args])
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_values_schema_groups_are_the_runners_groups() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    groups = schema["properties"]["runner"]["properties"]["groups"]["items"]["enum"]
    assert set(groups) == KNOWN_GROUPS


def test_notes_render(helm: Tool, tmp_path: Path) -> None:
    """NOTES.txt is only rendered by install; render it through a ConfigMap in a copy of the chart."""
    chart = tmp_path / "byoc-runner"
    shutil.copytree(CHART, chart)
    (chart / "notes-under-test.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n'
    )
    docs = render(helm, "-f", str(VALUES_DIR / "created-secret.yaml"), chart=chart)
    notes = only(docs, "ConfigMap")["data"]["notes"]
    assert "runner id:   runr0000000000000000000002" in notes
    assert "groups:      build, deploy, sync" in notes
    assert "terminationGracePeriodSeconds 150" in notes
    assert "stored in this release's history" in notes  # the warning for token.value
    assert CREATED_TOKEN not in notes
