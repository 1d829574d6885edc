"""Azure credentials: what a plan's ``AzureAuth`` turns into for each consumer.

A plan carries little about Azure: ``service_principal{subscription_id, subscription_tenant_id}``
and ``use_default`` (docs/runner-api.md §9), and never a secret. The identity itself is the
runner's: a VM's managed identity, or an AKS workload identity (the chart's
``azure.workloadIdentity``), or ``ARM_*``/``AZURE_*`` variables the operator set.

- **terraform** (azurerm, azuread): ``azure_env``. The service principal's subscription and
  tenant become ``ARM_SUBSCRIPTION_ID``/``ARM_TENANT_ID`` (the reference's only output,
  ``pkg/azure/credentials/fetch_env.go``). With ``use_default`` the runner's own ``ARM_*``,
  ``AZURE_*``, ``MSI_*`` and ``IDENTITY_*`` variables pass through (secret-looking ones masked),
  and a workload identity (``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``,
  ``AZURE_FEDERATED_TOKEN_FILE``, as AKS injects them) is also spelled the way azurerm reads it
  (``ARM_USE_OIDC``, ``ARM_CLIENT_ID``, ``ARM_TENANT_ID``, ``ARM_OIDC_TOKEN_FILE_PATH``), unless
  ``ARM_*`` variables already choose.
- **AKS**: ``handlers.common.kubeconfig`` writes a ``kubelogin`` exec entry (as the reference
  does), or, with ``aks="token"``, a bearer token made by ``handlers.common.entra``.
- **ACR**: ``handlers.common.entra.acr_refresh_token`` turns the runner's Entra ID token into a
  registry token (``/oauth2/exchange``). The OCI handlers do not use it yet: ``acr``
  registries take ``OCIAuth`` (``handlers/oci/registry.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from handlers.common.masking import SecretSink, register_env_secrets
from runner.sdk.plans import AzureAuth

#: The runner's variables that make up its Azure identity (azurerm, azidentity, kubelogin read them).
DEFAULT_PREFIXES = ("ARM_", "AZURE_", "MSI_", "IDENTITY_")


@dataclass(frozen=True)
class WorkloadIdentity:
    client_id: str
    tenant_id: str
    token_file: str


def workload_identity(environ: Mapping[str, str]) -> WorkloadIdentity | None:
    """The AKS workload identity the webhook injected into the runner's pod, if any."""
    token_file = environ.get("AZURE_FEDERATED_TOKEN_FILE", "")
    client_id = environ.get("AZURE_CLIENT_ID", "")
    if not token_file or not client_id:
        return None
    return WorkloadIdentity(client_id, environ.get("AZURE_TENANT_ID", ""), token_file)


def arm_env(auth: AzureAuth, environ: Mapping[str, str]) -> dict[str, str]:
    """``azure_env`` as a pure function of the plan and the runner's environment."""
    env: dict[str, str] = {}
    if auth.use_default:
        env.update({k: v for k, v in environ.items() if k.startswith(DEFAULT_PREFIXES) and v})
        workload = workload_identity(environ)
        chosen = any(k in env for k in ("ARM_USE_OIDC", "ARM_USE_MSI", "ARM_CLIENT_SECRET", "ARM_USE_CLI"))
        if workload is not None and not chosen:
            env["ARM_USE_OIDC"] = "true"
            env["ARM_OIDC_TOKEN_FILE_PATH"] = workload.token_file
            env.setdefault("ARM_CLIENT_ID", workload.client_id)
            if workload.tenant_id:
                env.setdefault("ARM_TENANT_ID", workload.tenant_id)
    sp = auth.service_principal
    if sp is not None:
        if sp.subscription_id:
            env["ARM_SUBSCRIPTION_ID"] = sp.subscription_id
        if sp.subscription_tenant_id:
            env["ARM_TENANT_ID"] = sp.subscription_tenant_id
    return env


def azure_env(
    auth: AzureAuth | None, *, secrets: SecretSink, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The ``ARM_*`` (and inherited ``AZURE_*``) variables for a child acting with ``auth``."""
    if auth is None:
        return {}
    env = arm_env(auth, os.environ if environ is None else environ)
    register_env_secrets(env, secrets)
    return env
