"""byoc-runner: a runner agent for bring-your-own-cloud deployments."""

__version__ = "0.1.0"
