"""Libraries shared by handler families: what several job types need and none should own.

- ``handlers.common.aws``: the one AWS credential resolver (the plan's ``AWSAuth`` -> an identity
  for a child's environment or an in-process boto3 session); docs/credentials.md.
- ``handlers.common.azure``: the plan's ``AzureAuth`` -> ``ARM_*`` variables for children.
- ``handlers.common.entra``: Entra ID tokens for the runner's Azure identity (client secret,
  workload identity, managed identity) and the ACR token exchange, without an Azure SDK.
- ``handlers.common.eks``: an EKS bearer token, made the way ``aws eks get-token`` makes it.
- ``handlers.common.kubeconfig``: a kubeconfig from ``cluster_info`` (static, endpoint + CA +
  token, EKS, AKS, in-cluster), built as a dict and written 0600 into the job's workspace.
- ``handlers.common.masking``: which environment values are secrets.

Like a handler, these import only the handler SDK (``runner.sdk``) and each other.
"""
