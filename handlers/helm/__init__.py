"""The helm family: ``helm-chart-deploy`` and ``helm-chart-build``, driving the real ``helm``
binary through the SDK's process runner (docs/helm.md)."""
