"""Azure Resource Manager: the Cognitive Services account and its deployments (api-version 2023-05-01)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from devstack.emulator.config import Deployment, Resource
from devstack.emulator.errors import ServiceError, arm_error
from devstack.emulator.state import EmulatorState
from devstack.emulator.tokens import ARM_AUDIENCES, InvalidToken, bearer_token

API_VERSIONS = ("2025-06-01", "2024-10-01", "2023-05-01", "2022-12-01", "2022-10-01", "2021-10-01")
# ARM matches the fixed segments of a resource path case-insensitively (ids often come back as `resourcegroups`).
ACCOUNT_PATH = (
    "/{_s:(?i:subscriptions)}/{subscription}/{_g:(?i:resourcegroups)}/{group}/{_p:(?i:providers)}"
    r"/{_n:(?i:microsoft\.cognitiveservices)}/{_a:(?i:accounts)}/{account}"
)
DEPLOYMENTS_PATH = ACCOUNT_PATH + "/{_d:(?i:deployments)}"
ALLOWED_AUDIENCES = (
    "'https://management.core.windows.net/','https://management.core.windows.net',"
    "'https://management.azure.com/','https://management.azure.com'"
)
SKIP_TOKEN = re.compile(r"[0-9]{1,9}")


def routes(state: EmulatorState) -> list[web.RouteDef]:
    api = ResourceManager(state)
    return [
        web.get(ACCOUNT_PATH, api.get_account, name="arm:accounts.get"),
        web.get(DEPLOYMENTS_PATH, api.list_deployments, name="arm:deployments.list"),
        web.get(f"{DEPLOYMENTS_PATH}/{{deployment}}", api.get_deployment, name="arm:deployments.get"),
    ]


def resource_id(resource: Resource) -> str:
    return (
        f"/subscriptions/{resource.subscription_id}/resourceGroups/{resource.resource_group}/providers/"
        f"Microsoft.CognitiveServices/accounts/{resource.name}"
    )


def deployment_json(resource: Resource, deployment: Deployment) -> dict[str, Any]:
    """A deployment as ARM returns it (key order as the live service: id, type, name, sku, properties, …)."""
    properties: dict[str, Any] = {
        "model": {
            "format": deployment.model_format,
            "name": deployment.model_name,
            "version": deployment.model_version,
        },
        "versionUpgradeOption": "OnceNewDefaultVersionAvailable",
    }
    if deployment.capabilities is not None:
        properties["capabilities"] = capabilities(deployment.capabilities)
    properties["provisioningState"] = deployment.provisioning_state
    properties["raiPolicyName"] = "Microsoft.DefaultV2"
    properties["rateLimits"] = [
        {"key": "request", "renewalPeriod": 10, "count": max(1, deployment.sku_capacity)},
        {"key": "token", "renewalPeriod": 60, "count": deployment.sku_capacity * 1000},
    ]
    stamp = datetime(2026, 1, 5, 9, 30, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return {
        "id": f"{resource_id(resource)}/deployments/{deployment.name}",
        "type": "Microsoft.CognitiveServices/accounts/deployments",
        "name": deployment.name,
        "sku": {"name": deployment.sku_name, "capacity": deployment.sku_capacity},
        "properties": properties,
        "systemData": {
            "createdBy": "devstack@example.com",
            "createdByType": "User",
            "createdAt": stamp,
            "lastModifiedBy": "devstack@example.com",
            "lastModifiedByType": "User",
            "lastModifiedAt": stamp,
        },
        "etag": f'"{uuid.uuid5(uuid.NAMESPACE_URL, repr(deployment.to_json()))}"',
    }


def capabilities(configured: dict[str, object]) -> dict[str, str]:
    """What the deployment can do, with string values as ARM reports them. A deployment configured without
    capabilities has none in its ARM body, as older deployments and api surfaces do; clients must fall back."""
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in configured.items()}


def _dotnet_time(moment: int) -> str:
    """UTC time as ARM's messages print it: `11/28/2025 5:28:45 AM`."""
    when = datetime.fromtimestamp(moment, UTC)
    hour = when.hour % 12 or 12
    return (
        f"{when.month}/{when.day}/{when.year} {hour}:{when.minute:02}:{when.second:02} "
        f"{'AM' if when.hour < 12 else 'PM'}"
    )


class ResourceManager:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def _unauthorized(self, code: str, message: str, description: str | None = None) -> ServiceError:
        """A 401 with the bearer challenge ARM sends on every authentication failure."""
        tenant = self.state.config.tenant_id
        challenge = (
            f'Bearer authorization_uri="https://login.windows.net/{tenant}", error="invalid_token", '
            f'error_description="{description or message}"'
        )
        return ServiceError(arm_error(401, code, message, headers={"WWW-Authenticate": challenge}))

    def _enter(self, request: web.Request) -> Resource:
        """Authenticates, checks the api-version, then finds the account, in the order ARM does."""
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise self._unauthorized(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                "The authentication failed because of missing 'Authorization' header.",
            )
        try:
            self.state.issuer.verify(token, ARM_AUDIENCES)
        except InvalidToken as exc:
            if exc.reason == "audience":
                raise self._unauthorized(
                    "InvalidAuthenticationTokenAudience",
                    "The access token has been obtained "
                    f"for wrong audience or resource '{exc.audience}'. It should exactly match "
                    f"with one of the allowed audiences {ALLOWED_AUDIENCES}.",
                ) from exc
            if exc.reason == "expired" and exc.expires is not None:
                now = int(datetime.now(UTC).timestamp())
                raise self._unauthorized(
                    "ExpiredAuthenticationToken",
                    "The access token expiry UTC time "
                    f"'{_dotnet_time(exc.expires)}' is earlier than current UTC time "
                    f"'{_dotnet_time(now)}'.",
                ) from exc
            raise self._unauthorized("InvalidAuthenticationToken", "The access token is invalid.") from exc
        version = request.query.get("api-version")
        if version is None:
            raise ServiceError(
                arm_error(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            )
        if version not in API_VERSIONS:
            raise ServiceError(
                arm_error(
                    400,
                    "InvalidApiVersionParameter",
                    f"The api-version '{version}' is invalid. The supported versions are '{','.join(API_VERSIONS)}'.",
                )
            )
        subscription = request.match_info["subscription"].lower()
        group = request.match_info["group"]
        account = request.match_info["account"]
        resources = [r for r in self.state.config.resources.values() if r.subscription_id.lower() == subscription]
        if not resources:
            raise ServiceError(
                arm_error(
                    404,
                    "SubscriptionNotFound",
                    f"The subscription '{request.match_info['subscription']}' could not be found.",
                )
            )
        resources = [r for r in resources if r.resource_group.lower() == group.lower()]
        if not resources:
            raise ServiceError(arm_error(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found."))
        for resource in resources:
            if resource.name.lower() == account.lower():
                return resource
        raise ServiceError(
            arm_error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.CognitiveServices/accounts/"
                f"{account}' under resource group '{group}' was not found. For more details "
                "please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        )

    async def get_account(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        endpoint = f"{request.url.origin()}/{resource.name}/"
        return web.json_response(
            {
                "id": resource_id(resource),
                "name": resource.name,
                "type": "Microsoft.CognitiveServices/accounts",
                "location": resource.location,
                "kind": "OpenAI",
                "sku": {"name": "S0"},
                "properties": {
                    "endpoint": endpoint,
                    "customSubDomainName": resource.name,
                    "provisioningState": "Succeeded",
                    "publicNetworkAccess": "Enabled",
                    "disableLocalAuth": False,
                },
            }
        )

    async def list_deployments(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        deployments = list(resource.deployments.values())
        size = max(1, self.state.config.arm_page_size)
        skip = request.query.get("$skipToken", "0")
        if not SKIP_TOKEN.fullmatch(skip):
            return arm_error(
                400,
                "InvalidSkipToken",
                f"The skip token '{skip}' is not valid. Use the nextLink of the previous page as it is.",
            )
        start = int(skip)
        body: dict[str, Any] = {"value": [deployment_json(resource, d) for d in deployments[start : start + size]]}
        if start + size < len(deployments):
            query = request.url.query.copy()
            query["$skipToken"] = str(start + size)
            body["nextLink"] = str(request.url.with_query(query))
        return web.json_response(body)

    async def get_deployment(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        name = request.match_info["deployment"]
        deployment = resource.deployment(name) or next(
            (d for d in resource.deployments.values() if d.name.lower() == name.lower()), None
        )
        if deployment is None:
            return arm_error(
                404, "NotFound", f"Specified resource '{resource_id(resource)}/deployments/{name}' cannot be found."
            )
        return web.json_response(deployment_json(resource, deployment))
