"""The managed-identity emulator (App Service / Functions protocol, api-version 2019-08-01), through azure-identity's
credentials unchanged and through raw HTTP."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from devstack.emulator import tokens
from devstack.emulator.tokens import ARM_AUDIENCES, VAULT_AUDIENCES, InvalidToken, TokenIssuer
from tests.conftest import RunningEmulator

API_VERSION = "2019-08-01"
DAY = 24 * 3600
# Variables azure-identity reads to pick a credential; none may leak in from the machine running the tests.
CREDENTIAL_VARIABLES = (
    "IDENTITY_SERVER_THUMBPRINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_AUTHORITY_HOST",
)


@pytest.fixture
def identity_env(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment App Service gives a function app with a system-assigned identity, pointing at the emulator."""
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    identity = emulator.endpoints["identity"]
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity["endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", identity["header"])
    return {"IDENTITY_ENDPOINT": identity["endpoint"], "IDENTITY_HEADER": identity["header"]}


def request_token(emulator: RunningEmulator, **overrides: Any) -> requests.Response:
    """GET /msi/token as msal does; keyword arguments replace (or, when None, drop) query parameters and the
    X-IDENTITY-HEADER header (`header=`)."""
    identity = emulator.endpoints["identity"]
    header = overrides.pop("header", identity["header"])
    params = {"resource": "https://vault.azure.net", "api-version": API_VERSION, **overrides}
    headers = {"Metadata": "true"}
    if header is not None:
        headers["X-IDENTITY-HEADER"] = header
    return requests.get(
        identity["endpoint"], params={k: v for k, v in params.items() if v is not None}, headers=headers, timeout=10
    )


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def assert_identity_failure(response: requests.Response, status: int) -> dict[str, Any]:
    """The App Service identity endpoint's error envelope: {statusCode, message, correlationId}."""
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert set(body) == {"statusCode", "message", "correlationId"}
    assert body["statusCode"] == status
    assert str(uuid.UUID(body["correlationId"])) == body["correlationId"]
    return body


@pytest.mark.parametrize(
    ("scope", "audience"),
    [
        ("https://management.azure.com/.default", "https://management.azure.com"),
        ("https://cognitiveservices.azure.com/.default", "https://cognitiveservices.azure.com"),
        ("https://vault.azure.net/.default", "https://vault.azure.net"),
    ],
)
def test_managed_identity_credential_gets_a_v1_token_for_the_scope_resource(
    emulator: RunningEmulator, identity_env: dict[str, str], scope: str, audience: str
) -> None:
    before = time.time()
    access = ManagedIdentityCredential().get_token(scope)

    claims = claims_of(access.token)
    tenant = emulator.endpoints["tenantId"]
    assert claims["aud"] == audience
    assert claims["tid"] == tenant
    assert claims["iss"] == f"https://sts.windows.net/{tenant}/"
    assert claims["ver"] == "1.0"
    assert claims["idtyp"] == "app"
    assert claims["sub"] == claims["oid"]
    assert claims["exp"] == access.expires_on
    assert before - 5 <= claims["iat"] <= time.time() + 5
    assert claims["exp"] - claims["iat"] == DAY
    assert jwt.get_unverified_header(access.token)["typ"] == "JWT"
    logged = emulator.requests_log(service="identity")
    assert [(e["route"], e["query"]["resource"], e["status"]) for e in logged] == [("token", audience, 200)]


def test_credential_caches_the_token_until_it_nears_expiry(
    emulator: RunningEmulator, identity_env: dict[str, str]
) -> None:
    """msal only caches when expires_on parses as epoch seconds: one request serves repeated get_token calls."""
    credential = ManagedIdentityCredential()
    first = credential.get_token("https://management.azure.com/.default")
    second = credential.get_token("https://management.azure.com/.default")

    assert second.token == first.token
    assert len(emulator.requests_log(service="identity")) == 1


def test_credential_tokens_of_one_identity_share_principal_and_app(
    emulator: RunningEmulator, identity_env: dict[str, str]
) -> None:
    credential = ManagedIdentityCredential()
    arm = claims_of(credential.get_token("https://management.azure.com/.default").token)
    vault = claims_of(credential.get_token("https://vault.azure.net/.default").token)

    assert arm["oid"] == vault["oid"]
    assert arm["appid"] == vault["appid"]
    assert arm["uti"] != vault["uti"]
    uuid.UUID(arm["oid"])
    uuid.UUID(arm["appid"])


def test_default_azure_credential_picks_up_the_app_service_identity(
    emulator: RunningEmulator, identity_env: dict[str, str]
) -> None:
    credential = DefaultAzureCredential(
        exclude_cli_credential=True,
        exclude_developer_cli_credential=True,
        exclude_powershell_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_shared_token_cache_credential=True,
        exclude_interactive_browser_credential=True,
        exclude_broker_credential=True,
    )
    access = credential.get_token("https://cognitiveservices.azure.com/.default")

    claims = claims_of(access.token)
    assert claims["aud"] == "https://cognitiveservices.azure.com"
    assert claims["tid"] == emulator.endpoints["tenantId"]
    assert [e["status"] for e in emulator.requests_log(service="identity")] == [200]


def test_token_response_has_the_app_service_shape(emulator: RunningEmulator) -> None:
    response = request_token(emulator, resource="https://vault.azure.net")

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert body["resource"] == "https://vault.azure.net"
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_on"], str)  # a string of epoch seconds on the wire, as App Service sends it
    claims = claims_of(body["access_token"])
    assert int(body["expires_on"]) == claims["exp"]
    assert body["client_id"] == claims["appid"]


@pytest.mark.parametrize(
    "resource",
    ["https://management.azure.com/", "https://management.core.windows.net/", "https://management.core.windows.net"],
)
def test_audience_is_the_resource_exactly_as_requested(emulator: RunningEmulator, resource: str) -> None:
    response = request_token(emulator, resource=resource)

    assert response.status_code == 200, response.text
    assert response.json()["resource"] == resource
    assert claims_of(response.json()["access_token"])["aud"] == resource


# "\u00e9t\u00e9" goes out as latin-1 bytes, which are not UTF-8: the emulator must still answer 401, not crash.
@pytest.mark.parametrize("header", [None, "", "not-the-identity-header", "\u00e9t\u00e9"])
def test_missing_or_wrong_identity_header_is_refused(emulator: RunningEmulator, header: str | None) -> None:
    body = assert_identity_failure(request_token(emulator, header=header), 401)

    assert "X-IDENTITY-HEADER" in body["message"]
    assert "access_token" not in body


def test_identity_header_of_another_process_is_refused(emulator: RunningEmulator) -> None:
    right = emulator.endpoints["identity"]["header"]
    body = assert_identity_failure(request_token(emulator, header=right[:-1] + ("0" if right[-1] != "0" else "1")), 401)

    assert "X-IDENTITY-HEADER" in body["message"]


@pytest.mark.parametrize("api_version", ["2017-09-01", "2019-08-02", "", None])
def test_other_api_versions_are_refused(emulator: RunningEmulator, api_version: str | None) -> None:
    body = assert_identity_failure(request_token(emulator, **{"api-version": api_version}), 400)

    assert "2019-08-01" in body["message"]


def test_missing_resource_is_refused(emulator: RunningEmulator) -> None:
    body = assert_identity_failure(request_token(emulator, resource=None), 400)

    assert "resource" in body["message"]


@pytest.mark.parametrize("resource", ["https://example.com", "https://management.azure.com/.default", "vault"])
def test_unknown_resource_fails_with_azures_message(emulator: RunningEmulator, resource: str) -> None:
    body = assert_identity_failure(request_token(emulator, resource=resource), 500)

    assert body["message"] == "An unexpected error occured while fetching the AAD Token."  # sic: Azure's spelling


def test_credential_surfaces_the_unknown_resource_message(
    emulator: RunningEmulator, identity_env: dict[str, str]
) -> None:
    credential = ManagedIdentityCredential(retry_total=0)  # azure-core would retry the 500 with back-off otherwise

    with pytest.raises(ClientAuthenticationError, match="An unexpected error occured while fetching the AAD Token"):
        credential.get_token("https://example.com/.default")


def test_wrong_header_is_checked_before_anything_else(emulator: RunningEmulator) -> None:
    assert_identity_failure(
        request_token(emulator, header="wrong", resource="https://example.com", **{"api-version": "2017-09-01"}), 401
    )


# The token issuer in-process: what the ARM, Key Vault and OpenAI emulators accept and why they refuse the rest.


def test_issuer_accepts_its_own_token_for_an_allowed_audience() -> None:
    issuer = TokenIssuer("tenant-1")
    issued = issuer.issue("https://vault.azure.net")

    claims = issuer.verify(issued.access_token, VAULT_AUDIENCES)

    assert claims["aud"] == "https://vault.azure.net"
    assert claims["exp"] == issued.expires_on
    assert claims["tid"] == "tenant-1"


def test_issuer_refuses_another_audience_and_names_it() -> None:
    issuer = TokenIssuer("tenant-1")
    token = issuer.issue("https://management.azure.com/").access_token

    with pytest.raises(InvalidToken) as refused:
        issuer.verify(token, VAULT_AUDIENCES)

    assert refused.value.reason == "audience"
    assert refused.value.audience == "https://management.azure.com/"


def test_issuer_refuses_an_expired_token_and_reports_its_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    issuer = TokenIssuer("tenant-1")
    two_days_ago = time.time() - 2 * DAY
    with monkeypatch.context() as patch:
        patch.setattr(tokens.time, "time", lambda: two_days_ago)
        issued = issuer.issue("https://management.azure.com")

    with pytest.raises(InvalidToken) as refused:
        issuer.verify(issued.access_token, ARM_AUDIENCES)

    assert refused.value.reason == "expired"
    assert refused.value.expires == issued.expires_on == int(two_days_ago) + DAY


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "\udce9\udce9.\udce9",  # non-UTF-8 header bytes, as aiohttp hands them over
        jwt.encode(
            {"aud": "https://vault.azure.net", "exp": int(time.time()) + 600}, "another-key-" * 4, algorithm="HS256"
        ),
        jwt.encode({"aud": "https://vault.azure.net", "exp": int(time.time()) + 600}, None, algorithm="none"),
    ],
)
def test_issuer_refuses_tokens_it_did_not_sign_as_malformed(token: str) -> None:
    issuer = TokenIssuer("tenant-1")

    with pytest.raises(InvalidToken) as refused:
        issuer.verify(token, VAULT_AUDIENCES)

    assert refused.value.reason == "malformed"


def test_tokens_of_another_emulator_process_are_refused() -> None:
    token = TokenIssuer("tenant-1").issue("https://vault.azure.net").access_token

    with pytest.raises(InvalidToken) as refused:
        TokenIssuer("tenant-1").verify(token, VAULT_AUDIENCES)

    assert refused.value.reason == "malformed"
