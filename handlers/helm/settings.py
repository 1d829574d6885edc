"""``RUNNER_HELM_*``: the helm family's own settings (runner.sdk.settings explains families)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from runner.sdk import HandlerSettings


@dataclasses.dataclass(frozen=True)
class HelmSettings(HandlerSettings):
    """How the helm family finds its binary and waits."""

    prefix: ClassVar[str] = "RUNNER_HELM_"

    #: The helm version a job uses when neither the plan nor the app config names one
    #: (``3.17.2``); unset: the ``helm`` on PATH, whatever its version.
    version: str | None = None
    #: A mirror laid out like get.helm.sh (``helm-v<V>-<os>-<arch>.tar.gz`` and its
    #: ``.sha256sum``) to download a version from, SHA256-checked, into the tools dir.
    mirror_url: str | None = None
    #: Seconds kept back from the job's deadline for helm's own rollback after a failed
    #: ``--wait`` (``--atomic``), so the job reports before the control plane times it out.
    rollback_reserve: float = 20.0
    #: helm-chart-build also pushes the chart as a native Helm OCI chart
    #: (``<dst repository>/<name>:<version>``, handlers/helm/oci_chart.py), beside the reference's
    #: ``artifact/nuon``, so plain ``helm install oci://...`` can use it.
    push_oci_chart: bool = False
