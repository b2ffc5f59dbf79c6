"""The Key Vault emulator (secrets, over HTTPS): azure-keyvault-secrets' SecretClient with ManagedIdentityCredential,
unchanged, and raw HTTP for what the SDK hides."""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import ApiVersion, SecretClient

from tests.conftest import RunningEmulator, identity_token

CONFIGURED_SECRET = ("configured-secret", "file-0123456789abcdef0123456789abcdef")  # tests/emulator-config.json
VERSION = re.compile(r"[0-9a-f]{32}")
NOT_FOUND_TAIL = (
    " was not found in this key vault. If you recently deleted this secret you may be able to recover "
    "it using the correct recovery command. For help resolving this issue, please see "
    "https://go.microsoft.com/fwlink/?linkid=2125182"
)


def fetch_token(emulator: RunningEmulator, resource: str = "https://vault.azure.net") -> str:
    return identity_token(emulator, resource)


@pytest.fixture
def client(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> SecretClient:
    """A SecretClient as a function app builds it: managed identity from IDENTITY_ENDPOINT / IDENTITY_HEADER; it
    trusts the emulator's CA and skips the vault-host check (127.0.0.1 cannot end with .vault.azure.net)."""
    for name in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    identity = emulator.endpoints["identity"]
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity["endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", identity["header"])
    vault = emulator.endpoints["keyVault"]
    return SecretClient(
        vault["url"], ManagedIdentityCredential(), connection_verify=vault["caBundle"], verify_challenge_resource=False
    )


class Vault:
    """Raw HTTPS access to the emulated vault."""

    def __init__(self, emulator: RunningEmulator, token: str | None) -> None:
        self.url = str(emulator.endpoints["keyVault"]["url"])
        # Per request, not session.verify: requests lets REQUESTS_CA_BUNDLE override a session's setting.
        self.ca_bundle = str(emulator.endpoints["keyVault"]["caBundle"])
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, api_version: str | None = "7.5", **kwargs: Any) -> requests.Response:
        params = dict(kwargs.pop("params", {}))
        if api_version is not None:
            params["api-version"] = api_version
        url = path if path.startswith("https://") else f"{self.url}{path}"
        return self.session.request(method, url, params=params, timeout=10, verify=self.ca_bundle, **kwargs)

    def set(self, name: str, value: str) -> dict[str, Any]:
        response = self.request("PUT", f"/secrets/{name}", json={"value": value})
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
def vault(emulator: RunningEmulator) -> Vault:
    return Vault(emulator, fetch_token(emulator))


def assert_kv_error(response: requests.Response, status: int, code: str, message: str | None = None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    error = response.json()["error"]
    assert error["code"] == code, error
    if message is not None:
        assert error["message"] == message
    return str(error["message"])


def assert_challenge(response: requests.Response, emulator: RunningEmulator) -> None:
    tenant = emulator.endpoints["tenantId"]
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.windows.net/{tenant}", resource="https://vault.azure.net"'
    )


# SecretClient, unchanged


def test_configured_secret_is_readable(client: SecretClient) -> None:
    secret = client.get_secret(CONFIGURED_SECRET[0])

    assert secret.value == CONFIGURED_SECRET[1]
    assert secret.name == CONFIGURED_SECRET[0]
    assert VERSION.fullmatch(secret.properties.version or "")
    assert secret.properties.enabled is True


def test_set_secret_then_get_latest_and_each_version(emulator: RunningEmulator, client: SecretClient) -> None:
    first = client.set_secret("storage-connection", "v1-value")
    second = client.set_secret("storage-connection", "v2-value")

    assert first.value == "v1-value"
    assert first.properties.version != second.properties.version
    assert all(VERSION.fullmatch(s.properties.version or "") for s in (first, second))
    vault_url = emulator.endpoints["keyVault"]["url"]
    assert second.id == f"{vault_url}/secrets/storage-connection/{second.properties.version}"
    assert second.properties.vault_url == vault_url
    assert client.get_secret("storage-connection").value == "v2-value"
    assert client.get_secret("storage-connection", first.properties.version).value == "v1-value"
    assert client.get_secret("storage-connection", second.properties.version).value == "v2-value"


def test_set_secret_keeps_content_type_tags_and_dates(client: SecretClient) -> None:
    expires = int(time.time()) + 3600
    client.set_secret(
        "with-metadata",
        "x",
        content_type="text/plain",
        tags={"owner": "batch"},
        expires_on=_utc(expires),
        not_before=_utc(expires - 7200),
    )

    properties = client.get_secret("with-metadata").properties

    assert properties.content_type == "text/plain"
    assert properties.tags == {"owner": "batch"}
    assert properties.expires_on is not None
    assert int(properties.expires_on.timestamp()) == expires
    assert properties.not_before is not None
    assert int(properties.not_before.timestamp()) == expires - 7200
    assert properties.recovery_level == "Recoverable+Purgeable"
    assert properties.created_on is not None
    assert abs(properties.created_on.timestamp() - time.time()) < 60


def test_secret_names_are_case_insensitive(client: SecretClient) -> None:
    client.set_secret("MixedCase-Name", "value")

    assert client.get_secret("mixedcase-name").value == "value"


def test_unknown_secret_is_not_found(client: SecretClient) -> None:
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret("never-set")

    assert missing.value.status_code == 404
    assert missing.value.error is not None
    assert missing.value.error.code == "SecretNotFound"
    assert missing.value.message.startswith(f"(SecretNotFound) A secret with (name/id) never-set{NOT_FOUND_TAIL}")


def test_unknown_version_of_a_known_secret_is_not_found(client: SecretClient) -> None:
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret(CONFIGURED_SECRET[0], "0" * 32)

    assert missing.value.error is not None
    assert missing.value.error.code == "SecretNotFound"
    assert f"(name/id) {CONFIGURED_SECRET[0]}/{'0' * 32} was not found" in missing.value.message


def test_disabled_secret_cannot_be_read(client: SecretClient) -> None:
    client.set_secret("switched-off", "x", enabled=False)

    with pytest.raises(HttpResponseError) as refused:
        client.get_secret("switched-off")

    assert refused.value.status_code == 403
    assert "Operation get is not allowed on a disabled secret." in refused.value.message


def test_list_properties_of_secrets_pages_through_every_secret_once(
    emulator: RunningEmulator, vault: Vault, client: SecretClient
) -> None:
    names = [f"bulk-{i:02d}" for i in range(30)]  # more than one page of the service's 25
    for name in names:
        vault.set(name, f"value-of-{name}")

    pages = [list(page) for page in client.list_properties_of_secrets().by_page()]

    listed = [p.name for page in pages for p in page]
    assert [len(page) for page in pages] == [25, 6]
    assert sorted(listed) == sorted([*names, CONFIGURED_SECRET[0]])
    assert len(set(listed)) == len(listed)
    assert all(p.version is None for page in pages for p in page)  # list items carry no version
    lists = [e for e in emulator.requests_log(service="keyvault") if e["route"] == "secrets.list"]
    assert [(e["status"], "$skiptoken" in e["query"]) for e in lists] == [(200, False), (200, True)]


def test_list_properties_of_secret_versions_returns_every_version(client: SecretClient) -> None:
    versions = [client.set_secret("rotated", f"value-{i}").properties.version for i in range(4)]

    listed = list(client.list_properties_of_secret_versions("rotated"))

    assert sorted(p.version or "" for p in listed) == sorted(v or "" for v in versions)
    assert all(p.name == "rotated" for p in listed)
    assert all(p.id and p.id.endswith(f"/secrets/rotated/{p.version}") for p in listed)


def test_versions_of_an_unknown_secret_is_an_empty_list(vault: Vault, client: SecretClient) -> None:
    assert list(client.list_properties_of_secret_versions("never-set")) == []
    response = vault.request("GET", "/secrets/never-set/versions")
    assert response.status_code == 200
    assert response.json() == {"value": [], "nextLink": None}


@pytest.mark.parametrize("api_version", list(ApiVersion))
def test_every_api_version_the_sdk_offers_is_answered(emulator: RunningEmulator, api_version: ApiVersion) -> None:
    token = fetch_token(emulator)
    vault = Vault(emulator, token)

    response = vault.request("GET", f"/secrets/{CONFIGURED_SECRET[0]}/", api_version=api_version.value)

    assert response.status_code == 200, response.text
    assert response.json()["value"] == CONFIGURED_SECRET[1]


# Paging over raw HTTP


def test_maxresults_pages_follow_absolute_next_links(vault: Vault) -> None:
    for i in range(4):
        vault.set(f"paged-{i}", "x")

    pages = [vault.request("GET", "/secrets", params={"maxresults": "2"}).json()]
    while pages[-1]["nextLink"]:
        link = pages[-1]["nextLink"]
        parts = urlsplit(link)
        assert f"{parts.scheme}://{parts.netloc}" == vault.url
        assert parts.path == "/secrets"
        query = parse_qs(parts.query)
        assert query["maxresults"] == ["2"]
        assert "$skiptoken" in query
        pages.append(vault.request("GET", link, api_version=None).json())
        assert len(pages) < 10

    assert [len(page["value"]) for page in pages] == [2, 2, 1]
    assert pages[-1]["nextLink"] is None  # present and null on the last page, as Key Vault sends it
    ids = [item["id"] for page in pages for item in page["value"]]
    assert ids == sorted(
        f"{vault.url}/secrets/{name}" for name in [*(f"paged-{i}" for i in range(4)), CONFIGURED_SECRET[0]]
    )
    assert all("value" not in item for page in pages for item in page["value"])


@pytest.mark.parametrize("maxresults", ["0", "26", "-1", "two", "\u00b2"])
def test_maxresults_outside_1_to_25_is_refused(vault: Vault, maxresults: str) -> None:
    response = vault.request("GET", "/secrets", params={"maxresults": maxresults})

    assert_kv_error(response, 400, "BadParameter", "maxresults must be between 1 and 25.")


@pytest.mark.parametrize("skiptoken", ["abc", "\u00b2", "-3"])
def test_skiptoken_the_vault_did_not_issue_is_refused(vault: Vault, skiptoken: str) -> None:
    response = vault.request("GET", "/secrets", params={"$skiptoken": skiptoken})

    assert_kv_error(response, 400, "BadParameter")


# Authentication and validation over raw HTTP


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/secrets/anything/"), ("GET", "/secrets"), ("PUT", "/secrets/anything")]
)
def test_unauthenticated_request_gets_the_bearer_challenge(emulator: RunningEmulator, method: str, path: str) -> None:
    """The SDK's first request carries no token, and for a set no body either (Content-Length: 0)."""
    response = Vault(emulator, token=None).request(method, path, data=b"" if method == "PUT" else None)

    assert_kv_error(response, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
    assert_challenge(response, emulator)


@pytest.mark.parametrize("resource", ["https://management.azure.com/", "https://cognitiveservices.azure.com"])
def test_token_for_another_audience_is_refused(emulator: RunningEmulator, resource: str) -> None:
    response = Vault(emulator, fetch_token(emulator, resource)).request("GET", f"/secrets/{CONFIGURED_SECRET[0]}/")

    assert_kv_error(
        response,
        401,
        "Unauthorized",
        f"AKV10022: Invalid audience. Expected https://vault.azure.net, found: {resource}.",
    )
    assert_challenge(response, emulator)


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "\u00e9.\u00e9.\u00e9"])
def test_token_the_identity_emulator_did_not_sign_is_refused(emulator: RunningEmulator, token: str) -> None:
    response = Vault(emulator, token).request("GET", f"/secrets/{CONFIGURED_SECRET[0]}/")

    assert_kv_error(response, 401, "Unauthorized")
    assert_challenge(response, emulator)
    assert CONFIGURED_SECRET[1] not in response.text


@pytest.mark.parametrize(
    ("method", "name"),
    [("GET", "bad_name"), ("GET", "dot.name"), ("PUT", "bad_name"), ("PUT", "trailing%0A"), ("GET", "x" * 128)],
)
def test_invalid_secret_name_is_a_bad_parameter(vault: Vault, method: str, name: str) -> None:
    response = vault.request(method, f"/secrets/{name}", json={"value": "x"} if method == "PUT" else None)

    shown = name.replace("%0A", "\n")
    assert_kv_error(response, 400, "BadParameter", f"The request URI contains an invalid name: {shown}")


def test_longest_valid_name_is_accepted(vault: Vault) -> None:
    name = "n" * 127

    assert vault.set(name, "x")["id"].split("/")[-2] == name


def test_put_without_a_name_is_not_allowed(vault: Vault) -> None:
    assert_kv_error(
        vault.request("PUT", "/secrets/", json={"value": "x"}), 405, "MethodNotAllowed", "HTTP PUT not allowed"
    )


@pytest.mark.parametrize("api_version", ["1.0", "7.99", "2030-01-01", ""])
def test_unsupported_api_version_is_refused(vault: Vault, api_version: str) -> None:
    response = vault.request("GET", f"/secrets/{CONFIGURED_SECRET[0]}/", api_version=api_version)

    assert_kv_error(
        response,
        400,
        "BadParameter",
        f"The specified version ({api_version}) is not recognized. "
        "Consider using the latest supported version (2026-04-01).",
    )


def test_missing_api_version_is_refused(vault: Vault) -> None:
    assert_kv_error(vault.request("GET", "/secrets", api_version=None), 400, "BadParameter")


@pytest.mark.parametrize(
    "body",
    [
        {"val": "x"},
        {"value": 42},
        {"value": "x", "attributes": "enabled"},
        {"value": "x", "attributes": {"enabled": "false"}},
        {"value": "x", "attributes": {"exp": "tomorrow"}},
        {"value": "x", "attributes": {"nbf": True}},
        {"value": "x", "contentType": 7},
        {"value": "x", "tags": {"n": 1}},
        ["x"],
    ],
)
def test_malformed_set_body_is_a_bad_parameter(vault: Vault, body: Any) -> None:
    response = vault.request("PUT", "/secrets/malformed", json=body)

    assert_kv_error(response, 400, "BadParameter")
    assert vault.request("GET", "/secrets/malformed/").status_code == 404


def test_set_body_that_is_not_json_is_a_bad_parameter(vault: Vault) -> None:
    response = vault.request(
        "PUT", "/secrets/malformed", data=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert_kv_error(response, 400, "BadParameter")


def test_plain_http_to_the_vault_port_fails(emulator: RunningEmulator) -> None:
    """Key Vault is TLS only, and SecretClient refuses bearer tokens over plain http anyway."""
    plain = emulator.endpoints["keyVault"]["url"].replace("https://", "http://")

    with pytest.raises(requests.ConnectionError):
        requests.get(f"{plain}/secrets", params={"api-version": "7.5"}, timeout=5)


def test_vault_certificate_is_not_trusted_without_the_ca_bundle(emulator: RunningEmulator) -> None:
    public_roots = requests.certs.where()  # explicit: REQUESTS_CA_BUNDLE could name the emulator's bundle

    with pytest.raises(requests.exceptions.SSLError):
        requests.get(
            f"{emulator.endpoints['keyVault']['url']}/secrets",
            params={"api-version": "7.5"},
            timeout=5,
            verify=public_roots,
        )


def test_request_log_never_contains_secret_values(
    emulator: RunningEmulator, vault: Vault, client: SecretClient
) -> None:
    values = ["sdk-secret-value-8c1f", "raw-secret-value-51d2", "refused-secret-value-77aa"]
    client.set_secret("from-sdk", values[0], content_type="text/plain")
    vault.set("from-raw", values[1])
    vault.request("PUT", "/secrets/refused", json={"value": values[2], "attributes": "bad"})
    client.get_secret("from-sdk")
    list(client.list_properties_of_secrets())

    response = requests.get(f"{emulator.control}/requests", params={"service": "keyvault"}, timeout=10)

    assert response.status_code == 200
    text = response.text
    assert all(value not in text for value in [*values, CONFIGURED_SECRET[1]])
    logged = response.json()["value"]
    sets = [e for e in logged if e["route"] == "secrets.set" and e["body"] is not None]
    assert [e["body"]["value"] for e in sets] == ["<redacted>"] * 3
    assert [e["status"] for e in sets] == [200, 200, 400]
    assert {e["service"] for e in logged} == {"keyvault"}
    assert json.dumps(logged).count('"auth": "bearer"') >= 5


def _utc(seconds: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC)
