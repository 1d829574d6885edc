"""Entra ID tokens without an Azure SDK: the three flows against a loopback stand-in for the
authority, the instance metadata endpoint and an ACR ``/oauth2/exchange`` (the wire shapes the
Azure SDKs and ACR use), then the AKS kubeconfig made with such a token."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from handlers.common.entra import (
    ACR_USERNAME,
    CLIENT_ASSERTION_TYPE,
    EntraError,
    acr_refresh_token,
    choose_flow,
    entra_token,
)
from handlers.common.kubeconfig import AKS_SERVER_ID, resolve_kubeconfig
from runner.sdk.plans import ClusterInfo
from tests.common.conftest import Secrets

AKS_SCOPE = f"{AKS_SERVER_ID}/.default"


@dataclass
class FakeAzure:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    state = FakeAzure("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            state.requests.append(
                {"method": "GET", "path": url.path, "query": query, "metadata": self.headers.get("Metadata")}
            )
            if url.path != "/metadata/identity/oauth2/token" or self.headers.get("Metadata") != "true":
                self.reply(
                    400,
                    {
                        "error": "invalid_request",
                        "error_description": "Required metadata header not specified",
                    },
                )
                return
            self.reply(
                200, {"access_token": "imds-token-for-" + query["resource"], "expires_on": "1900000000"}
            )

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            state.requests.append({"method": "POST", "path": self.path, "form": form})
            if self.path == "/oauth2/exchange":
                self.reply(200, {"refresh_token": "acr-refresh-" + form["access_token"]})
            elif form.get("client_secret") == "wrong":
                self.reply(
                    401,
                    {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret"},
                )
            else:
                self.reply(200, {"access_token": f"aad-token-{form['client_id']}", "expires_in": 3599})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def token(environ: dict[str, str], secrets: Secrets, tenant: str = "", scope: str = AKS_SCOPE) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient(timeout=10) as client:
            return await entra_token(scope, secrets=secrets, tenant=tenant, environ=environ, client=client)

    return anyio.run(go)


@pytest.mark.unit
def test_flow_choice_follows_default_azure_credential() -> None:
    base = {"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"}
    assert (
        choose_flow({**base, "AZURE_CLIENT_SECRET": "s", "AZURE_FEDERATED_TOKEN_FILE": "/f"}).flow
        == "client-secret"
    )
    assert choose_flow({**base, "AZURE_FEDERATED_TOKEN_FILE": "/f"}).flow == "workload-identity"
    assert (
        choose_flow({"AZURE_CLIENT_ID": "c", "AZURE_FEDERATED_TOKEN_FILE": "/f"}, tenant="plan").tenant
        == "plan"
    )
    assert choose_flow({"AZURE_FEDERATED_TOKEN_FILE": "/f"}).flow == "managed-identity"  # no client id
    assert "sp-secret-value" not in repr(choose_flow({**base, "AZURE_CLIENT_SECRET": "sp-secret-value"}))


@pytest.mark.integration
def test_client_secret_flow(azure: FakeAzure) -> None:
    secrets = Secrets()
    environ = {
        "AZURE_CLIENT_ID": "app-1",
        "AZURE_TENANT_ID": "tenant-1",
        "AZURE_CLIENT_SECRET": "sp-secret",
        "AZURE_AUTHORITY_HOST": azure.url,
    }
    got = token(environ, secrets)
    assert (got.token, got.flow) == ("aad-token-app-1", "client-secret")
    [request] = azure.requests
    assert request["path"] == "/tenant-1/oauth2/v2.0/token"
    assert request["form"] == {
        "grant_type": "client_credentials",
        "client_id": "app-1",
        "scope": AKS_SCOPE,
        "client_secret": "sp-secret",
    }
    assert {"sp-secret", "aad-token-app-1"} <= secrets.values
    with pytest.raises(EntraError, match="client-secret: HTTP 401: AADSTS7000215") as info:
        token({**environ, "AZURE_CLIENT_SECRET": "wrong"}, Secrets())
    assert "wrong" not in str(info.value)


@pytest.mark.integration
def test_workload_identity_sends_the_projected_token(azure: FakeAzure, tmp_path: Path) -> None:
    federated = tmp_path / "azure-identity-token"
    federated.write_text("projected.sa.jwt\n")
    secrets = Secrets()
    environ = {
        "AZURE_CLIENT_ID": "wi-client",
        "AZURE_FEDERATED_TOKEN_FILE": str(federated),
        "AZURE_AUTHORITY_HOST": azure.url,
    }
    got = token(environ, secrets, tenant="plan-tenant")
    assert got.flow == "workload-identity"
    [request] = azure.requests
    assert request["path"] == "/plan-tenant/oauth2/v2.0/token"  # the plan's tenant: the env names none
    assert request["form"]["client_assertion"] == "projected.sa.jwt"
    assert request["form"]["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assert "client_secret" not in request["form"]
    assert "projected.sa.jwt" in secrets.values
    federated.unlink()
    with pytest.raises(EntraError, match="cannot read AZURE_FEDERATED_TOKEN_FILE"):
        token(environ, Secrets(), tenant="plan-tenant")


@pytest.mark.integration
def test_managed_identity_through_instance_metadata(azure: FakeAzure) -> None:
    secrets = Secrets()
    got = token({"AZURE_POD_IDENTITY_AUTHORITY_HOST": azure.url, "AZURE_CLIENT_ID": "user-assigned"}, secrets)
    assert got.token == f"imds-token-for-{AKS_SERVER_ID}"
    assert got.expires_on == 1900000000.0
    [request] = azure.requests
    assert request["metadata"] == "true"
    assert request["query"] == {
        "api-version": "2018-02-01",
        "resource": AKS_SERVER_ID,
        "client_id": "user-assigned",
    }
    with pytest.raises(EntraError, match="instance metadata endpoint is unreachable"):
        token({"AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9/"}, Secrets())


@pytest.mark.integration
def test_acr_exchange(azure: FakeAzure) -> None:
    secrets = Secrets()
    environ = {
        "AZURE_CLIENT_ID": "app-1",
        "AZURE_TENANT_ID": "t",
        "AZURE_CLIENT_SECRET": "s",
        "AZURE_AUTHORITY_HOST": azure.url,
    }
    aad = token(environ, secrets, scope="https://containerregistry.azure.net/.default")

    async def exchange() -> str:
        async with httpx.AsyncClient(timeout=10) as client:
            return await acr_refresh_token(azure.url, aad, secrets=secrets, tenant="t", client=client)

    refresh = anyio.run(exchange)
    assert refresh == "acr-refresh-aad-token-app-1"
    assert refresh in secrets.values
    assert azure.requests[-1]["form"] == {
        "grant_type": "access_token",
        "service": "127.0.0.1",
        "access_token": aad.token,
        "tenant": "t",
    }
    assert ACR_USERNAME == "00000000-0000-0000-0000-000000000000"


@pytest.mark.integration
def test_aks_kubeconfig_with_an_entra_token(azure: FakeAzure) -> None:
    secrets = Secrets()
    info = ClusterInfo.model_validate(
        {
            "id": "aks",
            "endpoint": "aks.hcp.westeurope.azmk8s.io:443",
            "azure_auth": {
                "use_default": True,
                "service_principal": {"subscription_tenant_id": "tenant-aks"},
            },
        }
    )
    environ = {"AZURE_CLIENT_ID": "wi", "AZURE_CLIENT_SECRET": "s", "AZURE_AUTHORITY_HOST": azure.url}
    config = anyio.run(lambda: resolve_kubeconfig(info, secrets=secrets, aks="token", environ=environ))
    assert config["users"][0]["user"] == {"token": "aad-token-wi"}
    assert azure.requests[0]["path"] == "/tenant-aks/oauth2/v2.0/token"
    assert azure.requests[0]["form"]["scope"] == AKS_SCOPE
    assert "aad-token-wi" in secrets.values
