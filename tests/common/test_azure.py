"""Azure: the plan's ``AzureAuth`` and the runner's own identity -> the ``ARM_*`` a child needs."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.common.azure import arm_env, azure_env, workload_identity
from runner.sdk.plans import AzureAuth
from tests.common.conftest import Secrets

pytestmark = pytest.mark.unit

SP = {"service_principal": {"subscription_id": "sub-1", "subscription_tenant_id": "tenant-1"}}
WORKLOAD = {
    "AZURE_CLIENT_ID": "client-1",
    "AZURE_TENANT_ID": "tenant-wi",
    "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
    "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/",
}


def auth(**fields: Any) -> AzureAuth:
    return AzureAuth.model_validate(fields)


def test_service_principal_names_subscription_and_tenant_only() -> None:
    """The reference's FetchEnv: nothing of the runner's environment without use_default."""
    assert arm_env(auth(**SP), {"ARM_CLIENT_SECRET": "x", **WORKLOAD}) == {
        "ARM_SUBSCRIPTION_ID": "sub-1",
        "ARM_TENANT_ID": "tenant-1",
    }
    assert azure_env(None, secrets=Secrets()) == {}


def test_use_default_passes_the_runner_identity_and_masks_its_secrets() -> None:
    secrets = Secrets()
    environ = {
        "ARM_CLIENT_ID": "c",
        "ARM_CLIENT_SECRET": "azure-secret-value",
        "HOME": "/root",
        "MSI_ENDPOINT": "m",
    }
    env = azure_env(auth(use_default=True, **SP), secrets=secrets, environ=environ)
    assert env == {
        "ARM_CLIENT_ID": "c",
        "ARM_CLIENT_SECRET": "azure-secret-value",
        "MSI_ENDPOINT": "m",
        "ARM_SUBSCRIPTION_ID": "sub-1",
        "ARM_TENANT_ID": "tenant-1",  # the plan's tenant wins
    }
    assert secrets.values == {"azure-secret-value"}


def test_workload_identity_is_spelled_for_azurerm() -> None:
    env = arm_env(auth(use_default=True), WORKLOAD)
    assert env["ARM_USE_OIDC"] == "true"
    assert env["ARM_OIDC_TOKEN_FILE_PATH"] == WORKLOAD["AZURE_FEDERATED_TOKEN_FILE"]
    assert env["ARM_CLIENT_ID"] == "client-1"
    assert env["ARM_TENANT_ID"] == "tenant-wi"
    assert env["AZURE_AUTHORITY_HOST"] == WORKLOAD["AZURE_AUTHORITY_HOST"]
    # ARM_* that already choose a method are left alone.
    chosen = arm_env(auth(use_default=True), {**WORKLOAD, "ARM_USE_MSI": "true"})
    assert "ARM_USE_OIDC" not in chosen
    assert "ARM_OIDC_TOKEN_FILE_PATH" not in chosen
    assert workload_identity({"AZURE_FEDERATED_TOKEN_FILE": "/t"}) is None  # no client id: not one
