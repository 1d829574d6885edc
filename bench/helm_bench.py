"""helm-chart-deploy apply-plan vs bare ``helm upgrade --install``, same chart and values.

Against the kube tier's apiserver (``scripts/services.sh start``) with a docker-registry on
loopback holding the chart artifact. Each round installs the same chart (tests/helm's: a ConfigMap
and a post-install hook) with the same values into two fresh namespaces:

* **runner**: the handler's ``apply-plan`` job as the executor drives it (prepare, execute,
  cleanup): the pinned helm from the tools-dir cache (stat-checked against its recorded SHA256),
  the kubeconfig written and removed, the helm homes, the chart artifact pulled from the
  registry, the values files written, ``helm upgrade --install --wait --atomic``, then
  ``helm get metadata`` for the outputs;
* **helm**: ``helm upgrade --install --wait --atomic`` of the same ``chart.tgz`` and values as
  one process, the bare tool a person would run.

Rounds alternate the two. Prints each round, the medians and the ratio runner / helm
(target <= 1.10).

Usage: ``python bench/helm_bench.py [--rounds N]``.
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

from handlers.helm.deploy import HelmDeployHandler
from runner.sdk import ToolSettings
from runner.testing import make_context, run_handler

# The test tier's chart and registry helpers, importable when run as ``python bench/helm_bench.py``.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helm.conftest import (  # noqa: E402
    package_chart,
    push_chart_artifact,
    registry_config,
    write_chart,
)
from tests.support.registry import start_registry  # noqa: E402

SVC_DIR = Path(os.environ.get("SVC_DIR", "/tmp/runner-test-svc"))
KUBECONFIG = Path(os.environ.get("RUNNER_TEST_KUBECONFIG", SVC_DIR / "kube" / "admin.kubeconfig"))
TOOLS = Path(os.environ.get("TOOLS_DIR", "/opt/runner-test-tools"))
VALUES_FILE = "greeting: bench\ncolor: green\n"


def kubectl(*args: str) -> None:
    subprocess.run(
        [str(TOOLS / "bin" / "kubectl-1.32"), f"--kubeconfig={KUBECONFIG}", *args],
        check=True,
        capture_output=True,
    )


def run_bare(helm: str, chart: Path, ns: str, work: Path) -> float:
    values = work / f"values-{ns}.yaml"
    values.write_text(VALUES_FILE)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work),
        "KUBECONFIG": str(KUBECONFIG),
        "HELM_CACHE_HOME": str(work / "c"),
        "HELM_CONFIG_HOME": str(work / "cf"),
        "HELM_DATA_HOME": str(work / "d"),
    }
    start = time.perf_counter()
    subprocess.run(
        [
            helm,
            "upgrade",
            "--install",
            "demo",
            str(chart),
            "--namespace",
            ns,
            "--create-namespace",
            "--wait",
            "--atomic",
            "--timeout=300s",
            "--values",
            str(values),
            "--set-string",
            "extra=x",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


async def run_job(source: dict[str, Any], ns: str, work: Path, tools: ToolSettings) -> float:
    contents = base64.b64encode(gzip.compress(json.dumps({"op": "install"}).encode())).decode()
    plan = {
        **source,
        "helm": {
            "name": "demo",
            "namespace": ns,
            "create_namespace": True,
            "values_files": [VALUES_FILE],
            "values": [{"name": "extra", "value": "x", "type": "string"}],
            "cluster_info": {"kube_config": KUBECONFIG.read_text()},
        },
        "apply_plan_contents": contents,
    }
    ws = work / f"ws-{ns}"
    ws.mkdir()
    start = time.perf_counter()
    ctx = make_context(
        "helm-chart-deploy",
        plan,
        workspace=ws,
        operation="apply-plan",
        tools=tools,
        env={"RUNNER_HELM_VERSION": os.environ.get("HELM_BENCH_VERSION", "3.17.2")},
    )
    await run_handler(HelmDeployHandler(), ctx=ctx)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    helm = shutil.which("helm") or str(TOOLS / "bin" / "helm")
    if not KUBECONFIG.is_file() or not Path(helm).is_file():
        print(f"helm_bench: needs the kube tier ({KUBECONFIG}) and {helm}", file=sys.stderr)
        return 2
    os.environ["PATH"] = f"{Path(helm).parent}:{os.environ['PATH']}"
    namespaces: list[str] = []
    with tempfile.TemporaryDirectory(prefix="helm-bench-") as tmp:
        work = Path(tmp)
        registry = start_registry(work / "registry")
        try:
            art = package_chart(helm, write_chart(work / "src"), work / "chart")
            anyio.run(push_chart_artifact, art, registry, "bench/helm", "bench1")
            source = {"src_registry": registry_config(registry, "bench/helm"), "src_tag": "bench1"}
            tools = ToolSettings(tools_dir=work / "tools", child_grace=5.0)
            # Warm both sides once (the helm cache fill, the first registry pull), not timed.
            ns = f"hb-warm-{uuid.uuid4().hex[:6]}"
            namespaces.append(ns)
            anyio.run(run_job, source, ns, work, tools)
            print(f"helm upgrade --install (chart demo, values file + 1 value), {args.rounds} rounds")
            print("round     runner       helm")
            runner_t, bare_t = [], []
            for index in range(args.rounds):
                a, b = f"hb-r-{uuid.uuid4().hex[:6]}", f"hb-h-{uuid.uuid4().hex[:6]}"
                namespaces += [a, b]
                if index % 2:
                    bare_s = run_bare(helm, art / "chart.tgz", b, work)
                    runner_s = anyio.run(run_job, source, a, work, tools)
                else:
                    runner_s = anyio.run(run_job, source, a, work, tools)
                    bare_s = run_bare(helm, art / "chart.tgz", b, work)
                runner_t.append(runner_s)
                bare_t.append(bare_s)
                print(f"{index + 1:>5}  {runner_s:>8.3f}s  {bare_s:>8.3f}s")
        finally:
            registry.stop()
            for ns in namespaces:
                kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")
    runner_med, bare_med = statistics.median(runner_t), statistics.median(bare_t)
    print(f"median  runner apply-plan job       {runner_med:.3f}s")
    print(f"median  helm upgrade --install      {bare_med:.3f}s")
    print(f"ratio   runner / helm               {runner_med / bare_med:.3f}  (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
