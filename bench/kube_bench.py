"""kubernetes-manifest-deploy apply-plan vs ``kubectl apply --server-side``, same 200 objects.

Against the kube tier's apiserver (``scripts/services.sh start``; admin kubeconfig at
``$SVC_DIR/kube/admin.kubeconfig``). Each round makes two fresh namespaces and applies the same
manifest (ConfigMaps, with ``--objects`` of them) into each:

* **runner**: the handler's ``apply-plan`` job as the executor drives it (prepare, execute,
  cleanup): the kubeconfig written and removed, discovery, server-side apply of every object in
  dependency order, the inventory ConfigMap written twice, prune, outputs;
* **kubectl**: ``kubectl apply --server-side -f manifest.yaml`` as one process (kubectl-1.32 from
  the tools dir), the bare tool a person would run.

Rounds alternate the two. Prints each round, the medians and the ratio runner / kubectl
(target <= 1.10).

Usage: ``python bench/kube_bench.py [--rounds N] [--objects N]``.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import yaml

from handlers.kube.deploy import KubernetesManifestDeployHandler
from runner.testing import run_handler

SVC_DIR = Path(os.environ.get("SVC_DIR", "/tmp/runner-test-svc"))
KUBECONFIG = Path(os.environ.get("RUNNER_TEST_KUBECONFIG", SVC_DIR / "kube" / "admin.kubeconfig"))
TOOLS = Path(os.environ.get("TOOLS_DIR", "/opt/runner-test-tools"))


def manifest(namespace: str, objects: int) -> str:
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    for i in range(objects - 1):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i:04d}", "namespace": namespace},
                "data": {"index": str(i), "payload": "x" * 256},
            }
        )
    return yaml.safe_dump_all(docs, sort_keys=False)


def apply_contents() -> str:
    raw = gzip.compress(json.dumps({"op": "apply", "plan": "{}", "k8s_content_diff": []}).encode(), mtime=0)
    return base64.b64encode(raw).decode()


async def runner_apply(namespace: str, objects: int, work: Path) -> float:
    plan = {
        "install_id": "bench",
        "component_id": namespace,
        "kubernetes_manifest": {
            "namespace": namespace,
            "manifest": manifest(namespace, objects),
            "cluster_info": {"kube_config": KUBECONFIG.read_text()},
        },
        "apply_plan_contents": apply_contents(),
    }
    start = time.perf_counter()
    run = await run_handler(
        KubernetesManifestDeployHandler(),
        plan,
        job_type="kubernetes-manifest-deploy",
        operation="apply-plan",
        workspace=work / f"ws-{namespace}",
        deadline=anyio.current_time() + 600,
    )
    elapsed = time.perf_counter() - start
    assert run.outputs is not None
    assert len(run.outputs["objects"]) == objects
    return elapsed


def kubectl_apply(kubectl: str, namespace: str, objects: int, work: Path) -> float:
    path = work / f"{namespace}.yaml"
    path.write_text(manifest(namespace, objects))
    start = time.perf_counter()
    subprocess.run(
        [
            kubectl,
            f"--kubeconfig={KUBECONFIG}",
            "apply",
            "--server-side",
            "--field-manager=bench",
            "-f",
            path,
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def delete_namespace(kubectl: str, namespace: str) -> None:
    subprocess.run(
        [kubectl, f"--kubeconfig={KUBECONFIG}", "delete", "namespace", namespace, "--wait=false"],
        check=False,
        capture_output=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--objects", type=int, default=200)
    args = parser.parse_args()
    kubectl = shutil.which("kubectl-1.32") or str(TOOLS / "bin" / "kubectl-1.32")
    if not KUBECONFIG.is_file() or not Path(kubectl).exists():
        print(f"kube_bench: needs the kube tier ({KUBECONFIG}) and {kubectl}", file=sys.stderr)
        return 2
    rows: list[tuple[float, float]] = []
    print(f"apply of {args.objects} objects, {args.rounds} rounds")
    print("round     runner    kubectl")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for index in range(args.rounds):
            ours, theirs = f"kb-r-{uuid.uuid4().hex[:6]}", f"kb-k-{uuid.uuid4().hex[:6]}"
            if index % 2 == 0:
                runner_s = anyio.run(runner_apply, ours, args.objects, work)
                kubectl_s = kubectl_apply(kubectl, theirs, args.objects, work)
            else:
                kubectl_s = kubectl_apply(kubectl, theirs, args.objects, work)
                runner_s = anyio.run(runner_apply, ours, args.objects, work)
            rows.append((runner_s, kubectl_s))
            print(f"{index + 1:>5}  {runner_s:>8.3f}s  {kubectl_s:>8.3f}s")
            delete_namespace(kubectl, ours)
            delete_namespace(kubectl, theirs)
    runner_med = statistics.median(r for r, _ in rows)
    kubectl_med = statistics.median(k for _, k in rows)
    print(f"median  runner apply-plan job      {runner_med:.3f}s")
    print(f"median  kubectl apply --server-side {kubectl_med:.3f}s")
    print(f"ratio   runner / kubectl            {runner_med / kubectl_med:.3f}  (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
