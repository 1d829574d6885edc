"""Kubernetes job types: kubernetes-manifest-deploy (docs/kubernetes.md).

Decisions are pure and unit-tested (``manifest``: parsing and ordering; ``diff``: the plan's
ResourceDiff; ``inventory``: what to prune; ``readiness``: when a workload is ready); the one
module that talks to a cluster is ``cluster`` (kubernetes_asyncio's dynamic client); ``deploy``
is the handler that strings them together.
"""
