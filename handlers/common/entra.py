"""Entra ID (Azure AD) access tokens for the runner's own Azure identity, without an Azure SDK.

A plan's ``AzureAuth`` never carries a secret: the identity is the runner's. Three OAuth flows
cover where a runner runs, tried in the order azidentity's ``DefaultAzureCredential`` tries
them (``EnvironmentCredential``, ``WorkloadIdentityCredential``, ``ManagedIdentityCredential``):

1. **client secret**: ``AZURE_CLIENT_ID`` + ``AZURE_TENANT_ID`` + ``AZURE_CLIENT_SECRET``, the
   client-credentials grant at ``<authority>/<tenant>/oauth2/v2.0/token``;
2. **workload identity** (AKS, the chart's ``azure.workloadIdentity``): ``AZURE_CLIENT_ID`` +
   ``AZURE_TENANT_ID`` + ``AZURE_FEDERATED_TOKEN_FILE``, the same grant with the projected
   service-account token as the client assertion (read anew each time: the kubelet rotates it);
3. **managed identity** (a VM's, as the reference's ``kubelogin --login msi``): the instance
   metadata endpoint, ``Metadata: true``; ``AZURE_CLIENT_ID`` picks a user-assigned identity.

The authority is ``AZURE_AUTHORITY_HOST`` (default ``https://login.microsoftonline.com/``) and
the metadata endpoint ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` (default ``http://169.254.169.254/``),
the variables the Azure SDKs read (tests point them at loopback). When the environment names no
tenant, the plan's ``service_principal.subscription_tenant_id`` is used.

Consumers: an AKS bearer token (scope ``<AKS server app>/.default``, ``handlers.common.kubeconfig``
with ``aks="token"``), and an ACR refresh token (``acr_refresh_token``: the Entra token exchanged
at the registry's ``/oauth2/exchange``; the registry login is then the user
``00000000-0000-0000-0000-000000000000`` with that token as password).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx

from handlers.common.masking import SecretSink
from runner.sdk import HandlerError

DEFAULT_AUTHORITY = "https://login.microsoftonline.com/"
DEFAULT_IMDS = "http://169.254.169.254/"
IMDS_API_VERSION = "2018-02-01"
ACR_USERNAME = "00000000-0000-0000-0000-000000000000"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

Flow = Literal["client-secret", "workload-identity", "managed-identity"]


class EntraError(HandlerError):
    """No Entra ID token could be had for the runner's identity."""


@dataclass(frozen=True)
class EntraToken:
    token: str = field(repr=False)
    expires_on: float
    flow: Flow


@dataclass(frozen=True)
class FlowChoice:
    """Which flow, decided from the environment alone."""

    flow: Flow
    tenant: str = ""
    client_id: str = ""
    secret: str = field(default="", repr=False)
    assertion_file: str = ""


def choose_flow(environ: Mapping[str, str], tenant: str = "") -> FlowChoice:
    client_id = environ.get("AZURE_CLIENT_ID", "")
    tenant = environ.get("AZURE_TENANT_ID", "") or tenant
    if client_id and tenant and environ.get("AZURE_CLIENT_SECRET"):
        return FlowChoice("client-secret", tenant, client_id, secret=environ["AZURE_CLIENT_SECRET"])
    if client_id and tenant and environ.get("AZURE_FEDERATED_TOKEN_FILE"):
        return FlowChoice(
            "workload-identity", tenant, client_id, assertion_file=environ["AZURE_FEDERATED_TOKEN_FILE"]
        )
    return FlowChoice("managed-identity", tenant, client_id)


def _base(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _expiry(body: Mapping[str, Any]) -> float:
    if body.get("expires_on"):
        return float(body["expires_on"])
    return time.time() + float(body.get("expires_in") or 3600)


def _answer(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not isinstance(body, dict):
        # Entra's error bodies carry a code and a description, never the secret sent.
        detail = body.get("error_description") or body.get("error") or response.reason_phrase
        raise EntraError(f"{what}: HTTP {response.status_code}: {detail}")
    return body


async def entra_token(
    scope: str,
    *,
    secrets: SecretSink,
    tenant: str = "",
    environ: Mapping[str, str],
    client: httpx.AsyncClient,
) -> EntraToken:
    """An access token for ``scope`` (e.g. ``<app id>/.default``) as the runner's identity."""
    choice = choose_flow(environ, tenant)
    secrets.register(choice.secret)
    if choice.flow == "managed-identity":
        resource = scope.removesuffix("/.default")
        params = {"api-version": IMDS_API_VERSION, "resource": resource}
        if choice.client_id:
            params["client_id"] = choice.client_id
        url = _base(environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", "") or DEFAULT_IMDS)
        try:
            response = await client.get(
                url + "metadata/identity/oauth2/token", params=params, headers={"Metadata": "true"}
            )
        except httpx.HTTPError as exc:
            raise EntraError(
                f"managed identity: the instance metadata endpoint is unreachable: {exc}"
            ) from None
        body = _answer(response, "managed identity")
    else:
        form = {"grant_type": "client_credentials", "client_id": choice.client_id, "scope": scope}
        if choice.flow == "client-secret":
            form["client_secret"] = choice.secret
        else:
            try:
                assertion = (await anyio.Path(choice.assertion_file).read_text()).strip()
            except OSError as exc:
                raise EntraError(
                    f"workload identity: cannot read AZURE_FEDERATED_TOKEN_FILE: {exc}"
                ) from None
            secrets.register(assertion)
            form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
            form["client_assertion"] = assertion
        authority = _base(environ.get("AZURE_AUTHORITY_HOST", "") or DEFAULT_AUTHORITY)
        try:
            response = await client.post(f"{authority}{choice.tenant}/oauth2/v2.0/token", data=form)
        except httpx.HTTPError as exc:
            raise EntraError(f"{choice.flow}: the Entra ID authority is unreachable: {exc}") from None
        body = _answer(response, choice.flow)
    token = str(body.get("access_token") or "")
    if not token:
        raise EntraError(f"{choice.flow}: the answer has no access_token")
    secrets.register(token)
    return EntraToken(token, _expiry(body), choice.flow)


async def acr_refresh_token(
    registry_url: str,
    entra: EntraToken,
    *,
    secrets: SecretSink,
    tenant: str = "",
    client: httpx.AsyncClient,
) -> str:
    """The registry's refresh token for an Entra token (``POST <registry>/oauth2/exchange``);
    log in as ``ACR_USERNAME`` with it. ``registry_url``: ``https://<name>.azurecr.io``."""
    service = httpx.URL(registry_url).host
    form = {"grant_type": "access_token", "service": service, "access_token": entra.token}
    if tenant:
        form["tenant"] = tenant
    try:
        response = await client.post(registry_url.rstrip("/") + "/oauth2/exchange", data=form)
    except httpx.HTTPError as exc:
        raise EntraError(f"ACR {service}: token exchange unreachable: {exc}") from None
    body = _answer(response, f"ACR {service} token exchange")
    refresh = str(body.get("refresh_token") or "")
    if not refresh:
        raise EntraError(f"ACR {service}: the exchange answered no refresh_token")
    secrets.register(refresh)
    return refresh
