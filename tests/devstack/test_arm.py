"""The Azure Resource Manager emulator: Cognitive Services accounts and deployments (api-version 2023-05-01),
authenticated with tokens from the managed-identity emulator."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import jwt
import pytest
import requests
from aiohttp.test_utils import make_mocked_request
from azure.identity import ManagedIdentityCredential

from devstack.clock import VirtualClock
from devstack.emulator import tokens
from devstack.emulator.arm_api import ResourceManager
from devstack.emulator.config import EmulatorConfig
from devstack.emulator.errors import ServiceError
from devstack.emulator.state import EmulatorState
from tests.conftest import TEST_CONFIG, RunningEmulator, identity_token

API_VERSION = "2023-05-01"
EASTUS = "aoai-devstack-eastus"
SWEDEN = "aoai-devstack-swedencentral"
DEPLOYMENT_TYPE = "Microsoft.CognitiveServices/accounts/deployments"
ALLOWED_AUDIENCES = (
    "'https://management.core.windows.net/','https://management.core.windows.net',"
    "'https://management.azure.com/','https://management.azure.com'"
)
# What the emulator under test was started with (tests/emulator-config.json over the default config).
CONFIG = EmulatorConfig.load(TEST_CONFIG)


def fetch_token(emulator: RunningEmulator, resource: str = "https://management.azure.com") -> str:
    return identity_token(emulator, resource)


class Arm:
    """Raw HTTP access to the emulated ARM endpoint, as azure-mgmt-* clients make it."""

    def __init__(self, emulator: RunningEmulator, token: str | None) -> None:
        self.emulator = emulator
        arm = emulator.endpoints["arm"]
        self.endpoint = str(arm["endpoint"])
        self.subscription = str(arm["subscriptionId"])
        self.group = str(arm["resourceGroup"])
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def account_id(self, account: str = EASTUS, group: str | None = None, subscription: str | None = None) -> str:
        return (
            f"/subscriptions/{subscription or self.subscription}/resourceGroups/{group or self.group}"
            f"/providers/Microsoft.CognitiveServices/accounts/{account}"
        )

    def get(self, path: str, api_version: str | None = API_VERSION, **params: str) -> requests.Response:
        if api_version is not None:
            params["api-version"] = api_version
        url = path if path.startswith("http") else f"{self.endpoint}{path}"
        return self.session.get(url, params=params, timeout=10)

    def deployment_pages(self, account: str = EASTUS) -> list[dict[str, Any]]:
        """Every page of the deployments list, following nextLink until a page has none."""
        pages = []
        response = self.get(f"{self.account_id(account)}/deployments")
        while True:
            assert response.status_code == 200, response.text
            pages.append(response.json())
            next_link = pages[-1].get("nextLink")
            if not next_link:
                return pages
            assert len(pages) < 20, "nextLink never ends"
            response = self.session.get(next_link, timeout=10)  # as azure-mgmt does: the link, verbatim

    def deployments(self, account: str = EASTUS) -> list[dict[str, Any]]:
        return [item for page in self.deployment_pages(account) for item in page["value"]]


@pytest.fixture
def arm(emulator: RunningEmulator) -> Arm:
    return Arm(emulator, fetch_token(emulator))


@pytest.fixture
def identity_env(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    identity = emulator.endpoints["identity"]
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity["endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", identity["header"])
    return {"IDENTITY_ENDPOINT": identity["endpoint"], "IDENTITY_HEADER": identity["header"]}


def assert_arm_error(response: requests.Response, status: int, code: str, message: str | None = None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code, body
    if message is not None:
        assert body["error"]["message"] == message
    return str(body["error"]["message"])


def assert_challenge(response: requests.Response, emulator: RunningEmulator, description: str) -> None:
    tenant = emulator.endpoints["tenantId"]
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization_uri="https://login.windows.net/{tenant}", error="invalid_token", '
        f'error_description="{description}"'
    )


# Listing deployments


def test_list_deployments_pages_through_every_configured_deployment_exactly_once(
    emulator: RunningEmulator, identity_env: dict[str, str]
) -> None:
    arm = Arm(emulator, ManagedIdentityCredential().get_token("https://management.azure.com/.default").token)

    pages = arm.deployment_pages(EASTUS)

    configured = CONFIG.resources[EASTUS].deployments
    assert CONFIG.arm_page_size == 2
    assert len(pages) == -(-len(configured) // 2) >= 3
    assert all(len(page["value"]) == 2 for page in pages[:-1])
    assert all("nextLink" in page for page in pages[:-1])
    assert "nextLink" not in pages[-1]  # as the real service: no nextLink key at all on the last page
    listed = [item["name"] for page in pages for item in page["value"]]
    assert sorted(listed) == sorted(configured)
    assert len(listed) == len(set(listed))
    for item in (item for page in pages for item in page["value"]):
        deployment = configured[item["name"]]
        assert item["id"] == f"{arm.account_id(EASTUS)}/deployments/{deployment.name}"
        assert item["type"] == DEPLOYMENT_TYPE
        assert item["sku"] == {"name": deployment.sku_name, "capacity": deployment.sku_capacity}
        assert item["properties"]["model"] == {
            "format": deployment.model_format,
            "name": deployment.model_name,
            "version": deployment.model_version,
        }
        assert item["properties"]["provisioningState"] == deployment.provisioning_state
        if deployment.capabilities is None:
            assert "capabilities" not in item["properties"]
        else:
            assert all(isinstance(v, str) for v in item["properties"]["capabilities"].values())


def test_listed_deployments_carry_their_configured_values(arm: Arm) -> None:
    listed = {item["name"]: item for item in arm.deployments(EASTUS)}

    batch = listed["gpt-4o-batch"]
    assert batch["sku"] == {"name": "GlobalBatch", "capacity": 250}
    assert batch["properties"]["model"] == {"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"}
    assert batch["properties"]["capabilities"] == {"chatCompletion": "true"}
    assert batch["properties"]["provisioningState"] == "Succeeded"
    assert listed["text-embedding-3-small"]["properties"]["capabilities"] == {"embeddings": "true"}
    assert listed["gpt-4-retiring"]["properties"]["provisioningState"] == "Failed"
    assert listed["gpt-4o-mini-dz-batch"]["sku"] == {"name": "DataZoneBatch", "capacity": 100}


def test_deployment_configured_without_capabilities_has_none_in_its_body(arm: Arm) -> None:
    """Older deployments report no capabilities; clients fall back to the model name."""
    listed = {item["name"]: item for item in arm.deployments(EASTUS)}

    assert "capabilities" not in listed["gpt-35-turbo-legacy"]["properties"]


def test_deployment_has_the_live_services_shape(arm: Arm) -> None:
    item = arm.deployments(EASTUS)[0]

    assert list(item) == ["id", "type", "name", "sku", "properties", "systemData", "etag"]
    assert re.fullmatch(r'"[0-9a-f-]{36}"', item["etag"])
    assert {"createdAt", "createdBy", "createdByType", "lastModifiedAt"} <= set(item["systemData"])
    assert item["properties"]["versionUpgradeOption"] == "OnceNewDefaultVersionAvailable"
    limits = {rule["key"]: rule for rule in item["properties"]["rateLimits"]}
    assert set(limits) == {"request", "token"}
    assert limits["token"]["renewalPeriod"] == 60


def test_single_page_account_has_no_next_link(arm: Arm) -> None:
    pages = arm.deployment_pages(SWEDEN)

    assert len(pages) == 1
    assert pages[0] == {"value": pages[0]["value"]}
    assert [item["name"] for item in pages[0]["value"]] == list(CONFIG.resources[SWEDEN].deployments)


def test_next_link_is_absolute_and_keeps_the_api_version(arm: Arm) -> None:
    first = arm.get(f"{arm.account_id()}/deployments").json()

    next_link = first["nextLink"]
    assert next_link.startswith(f"{arm.endpoint}{arm.account_id()}/deployments?")
    assert f"api-version={API_VERSION}" in next_link
    assert "$skipToken=" in next_link


@pytest.mark.parametrize("skip_token", ["abc", "-1", "\u00b2", "1.5"])
def test_skip_token_that_the_service_did_not_issue_is_refused(arm: Arm, skip_token: str) -> None:
    response = arm.get(f"{arm.account_id()}/deployments", **{"$skipToken": skip_token})

    assert_arm_error(response, 400, "InvalidSkipToken")


def test_skip_token_past_the_end_gives_an_empty_last_page(arm: Arm) -> None:
    response = arm.get(f"{arm.account_id()}/deployments", **{"$skipToken": "100"})

    assert response.status_code == 200
    assert response.json() == {"value": []}


# Changes made at run time


def test_deployment_added_at_run_time_is_listed(emulator: RunningEmulator, arm: Arm) -> None:
    emulator.put_deployment(
        SWEDEN,
        "gpt-4.1-nano-batch",
        model={"format": "OpenAI", "name": "gpt-4.1-nano", "version": "2025-04-14"},
        sku={"name": "GlobalBatch", "capacity": 40},
        capabilities={"chatCompletion": "true"},
    )

    listed = {item["name"]: item for item in arm.deployments(SWEDEN)}

    assert set(listed) == {"gpt-4o-mini-batch", "gpt-4.1-nano-batch"}
    added = listed["gpt-4.1-nano-batch"]
    assert added["sku"] == {"name": "GlobalBatch", "capacity": 40}
    assert added["properties"]["model"]["name"] == "gpt-4.1-nano"
    assert added["id"] == f"{arm.account_id(SWEDEN)}/deployments/gpt-4.1-nano-batch"


def test_deployment_changed_at_run_time_shows_its_new_values_and_etag(emulator: RunningEmulator, arm: Arm) -> None:
    path = f"{arm.account_id(EASTUS)}/deployments/gpt-4o"
    before = arm.get(path).json()

    emulator.put_deployment(
        EASTUS,
        "gpt-4o",
        model={"format": "OpenAI", "name": "gpt-4o", "version": "2024-11-20"},
        sku={"name": "GlobalStandard", "capacity": 75},
        provisioningState="Creating",
    )

    after = arm.get(path).json()
    assert after["sku"] == {"name": "GlobalStandard", "capacity": 75}
    assert after["properties"]["model"]["version"] == "2024-11-20"
    assert after["properties"]["provisioningState"] == "Creating"
    assert after["etag"] != before["etag"]
    listed = [item for item in arm.deployments(EASTUS) if item["name"] == "gpt-4o"]
    assert listed == [after]


def test_reset_forgets_deployments_added_at_run_time(emulator: RunningEmulator, arm: Arm) -> None:
    emulator.put_deployment(SWEDEN, "temporary", model={"name": "gpt-4o-mini"}, sku={"name": "GlobalBatch"})
    assert len(arm.deployments(SWEDEN)) == 2

    emulator.reset()

    assert [item["name"] for item in arm.deployments(SWEDEN)] == ["gpt-4o-mini-batch"]


# Single resources


def test_get_single_deployment(arm: Arm) -> None:
    response = arm.get(f"{arm.account_id(EASTUS)}/deployments/text-embedding-3-small")

    assert response.status_code == 200, response.text
    item = response.json()
    assert item["name"] == "text-embedding-3-small"
    assert item["id"] == f"{arm.account_id(EASTUS)}/deployments/text-embedding-3-small"
    assert item["sku"] == {"name": "Standard", "capacity": 120}
    assert item["properties"]["model"] == {"format": "OpenAI", "name": "text-embedding-3-small", "version": "1"}
    assert item == next(d for d in arm.deployments(EASTUS) if d["name"] == "text-embedding-3-small")


def test_unknown_deployment_is_not_found(arm: Arm) -> None:
    response = arm.get(f"{arm.account_id(EASTUS)}/deployments/gpt-5")

    assert_arm_error(
        response, 404, "NotFound", f"Specified resource '{arm.account_id(EASTUS)}/deployments/gpt-5' cannot be found."
    )


@pytest.mark.parametrize("account", [EASTUS, SWEDEN])
def test_get_account(emulator: RunningEmulator, arm: Arm, account: str) -> None:
    response = arm.get(arm.account_id(account))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == arm.account_id(account)
    assert body["name"] == account
    assert body["type"] == "Microsoft.CognitiveServices/accounts"
    assert body["kind"] == "OpenAI"
    assert body["sku"] == {"name": "S0"}
    assert body["location"] == CONFIG.resources[account].location
    assert body["properties"]["provisioningState"] == "Succeeded"
    assert body["properties"]["customSubDomainName"] == account
    assert body["properties"]["endpoint"] == emulator.resource(account)["endpoint"] + "/"


def test_paths_are_case_insensitive_as_in_arm(arm: Arm) -> None:
    lowered = (
        arm.account_id(EASTUS.upper())
        .replace("resourceGroups", "resourcegroups")
        .replace("Microsoft.CognitiveServices", "microsoft.cognitiveservices")
    )

    account = arm.get(lowered)
    deployment = arm.get(f"{lowered}/DEPLOYMENTS/GPT-4O")

    assert account.status_code == 200, account.text
    assert account.json()["name"] == EASTUS
    assert deployment.status_code == 200, deployment.text
    assert deployment.json()["name"] == "gpt-4o"


# Authentication


def test_missing_token_is_refused_with_a_challenge(emulator: RunningEmulator) -> None:
    arm = Arm(emulator, token=None)

    response = arm.get(f"{arm.account_id()}/deployments")

    assert_arm_error(
        response, 401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
    )
    assert_challenge(response, emulator, "The authentication failed because of missing 'Authorization' header.")


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   "])
def test_authorization_without_a_bearer_token_counts_as_missing(emulator: RunningEmulator, authorization: str) -> None:
    arm = Arm(emulator, token=None)

    response = arm.session.get(
        f"{arm.endpoint}{arm.account_id()}/deployments",
        params={"api-version": API_VERSION},
        headers={"Authorization": authorization},
        timeout=10,
    )

    assert_arm_error(response, 401, "AuthenticationFailed")


@pytest.mark.parametrize("resource", ["https://cognitiveservices.azure.com", "https://vault.azure.net/"])
def test_token_for_another_audience_is_refused(emulator: RunningEmulator, resource: str) -> None:
    arm = Arm(emulator, fetch_token(emulator, resource))

    response = arm.get(f"{arm.account_id()}/deployments")

    message = (
        f"The access token has been obtained for wrong audience or resource '{resource}'. It should exactly "
        f"match with one of the allowed audiences {ALLOWED_AUDIENCES}."
    )
    assert_arm_error(response, 401, "InvalidAuthenticationTokenAudience", message)
    assert_challenge(response, emulator, message)


@pytest.mark.parametrize(
    "resource",
    ["https://management.azure.com/", "https://management.core.windows.net/", "https://management.core.windows.net"],
)
def test_every_arm_audience_is_accepted(emulator: RunningEmulator, resource: str) -> None:
    arm = Arm(emulator, fetch_token(emulator, resource))

    assert len(arm.deployments(SWEDEN)) == 1


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "\u00e9\u00e9.x.y",  # goes out as latin-1 bytes that are not UTF-8
        jwt.encode(
            {"aud": "https://management.azure.com", "exp": int(time.time()) + 3600}, "forged-" * 6, algorithm="HS256"
        ),
        jwt.encode({"aud": "https://management.azure.com", "exp": int(time.time()) + 3600}, None, algorithm="none"),
    ],
)
def test_token_the_identity_emulator_did_not_sign_is_refused(emulator: RunningEmulator, token: str) -> None:
    arm = Arm(emulator, token)

    response = arm.get(f"{arm.account_id()}/deployments")

    assert_arm_error(response, 401, "InvalidAuthenticationToken", "The access token is invalid.")
    assert_challenge(response, emulator, "The access token is invalid.")


def test_authentication_comes_before_api_version_and_lookup(emulator: RunningEmulator) -> None:
    arm = Arm(emulator, token=None)

    response = arm.get(arm.account_id("missing", group="missing"), api_version=None)

    assert_arm_error(response, 401, "AuthenticationFailed")


def test_expired_token_is_refused_with_both_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: the emulator's signing key never leaves its process, so an expired token is made here."""
    config = EmulatorConfig.load(TEST_CONFIG)
    state = EmulatorState(config, VirtualClock(epoch=time.time()))
    past = time.time() - 2 * 24 * 3600
    with monkeypatch.context() as patch:
        patch.setattr(tokens.time, "time", lambda: past)
        expired = state.issuer.issue("https://management.azure.com")
    resource = config.resources[EASTUS]
    path = (
        f"/subscriptions/{resource.subscription_id}/resourceGroups/{resource.resource_group}/providers/"
        f"Microsoft.CognitiveServices/accounts/{resource.name}/deployments?api-version={API_VERSION}"
    )
    request = make_mocked_request(
        "GET",
        path,
        headers={"Authorization": f"Bearer {expired.access_token}"},
        match_info={
            "subscription": resource.subscription_id,
            "group": resource.resource_group,
            "account": resource.name,
        },
    )

    with pytest.raises(ServiceError) as refused:
        ResourceManager(state)._enter(request)

    response = refused.value.response
    assert response.status == 401
    error = json.loads(response.body)["error"]  # type: ignore[arg-type]
    assert error["code"] == "ExpiredAuthenticationToken"
    moment = r"\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}:\d{2} [AP]M"
    assert re.fullmatch(
        f"The access token expiry UTC time '{moment}' is earlier than current UTC time '{moment}'.", error["message"]
    )
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# api-version and lookup


def test_missing_api_version_is_refused(arm: Arm) -> None:
    response = arm.get(f"{arm.account_id()}/deployments", api_version=None)

    assert_arm_error(
        response,
        400,
        "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.",
    )


@pytest.mark.parametrize("api_version", ["2099-01-01", "latest", ""])
def test_unsupported_api_version_is_refused_with_the_supported_list(arm: Arm, api_version: str) -> None:
    response = arm.get(f"{arm.account_id()}/deployments", api_version=api_version)

    message = assert_arm_error(response, 400, "InvalidApiVersionParameter")
    assert message.startswith(f"The api-version '{api_version}' is invalid. The supported versions are '")
    supported = message.split("'")[3].split(",")
    assert API_VERSION in supported
    assert supported == sorted(supported, reverse=True)


@pytest.mark.parametrize("path", ["", "/deployments", "/deployments/gpt-4o"])
def test_unknown_account_is_not_found(arm: Arm, path: str) -> None:
    response = arm.get(arm.account_id("aoai-missing") + path)

    assert_arm_error(
        response,
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.CognitiveServices/accounts/aoai-missing' under resource group "
        f"'{arm.group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


@pytest.mark.parametrize("path", ["", "/deployments"])
def test_unknown_resource_group_is_not_found(arm: Arm, path: str) -> None:
    response = arm.get(arm.account_id(EASTUS, group="rg-missing") + path)

    assert_arm_error(response, 404, "ResourceGroupNotFound", "Resource group 'rg-missing' could not be found.")


def test_unknown_subscription_is_not_found(arm: Arm) -> None:
    subscription = "00000000-0000-0000-0000-000000000000"

    response = arm.get(arm.account_id(EASTUS, subscription=subscription) + "/deployments")

    assert_arm_error(response, 404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")


def test_requests_are_logged_as_arm_with_bearer_auth(emulator: RunningEmulator, arm: Arm) -> None:
    pages = arm.deployment_pages(EASTUS)

    logged = emulator.requests_log(service="arm")
    assert [(e["route"], e["resource"], e["auth"], e["status"]) for e in logged] == [
        ("deployments.list", EASTUS, "bearer", 200)
    ] * len(pages)
