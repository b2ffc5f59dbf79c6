"""Azure Resource Manager: the Cognitive Services account and its deployments (api-version 2023-05-01)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from devstack.emulator.config import Deployment, Resource
from devstack.emulator.errors import ServiceError, arm_error
from devstack.emulator.state import EmulatorState
from devstack.emulator.tokens import ARM_AUDIENCES, InvalidToken, bearer_token

API_VERSIONS = ("2025-06-01", "2024-10-01", "2023-05-01", "2022-12-01", "2022-10-01", "2021-10-01")
ACCOUNT_PATH = ("/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.CognitiveServices"
                "/accounts/{account}")
ALLOWED_AUDIENCES = ("'https://management.core.windows.net/','https://management.core.windows.net',"
                     "'https://management.azure.com/','https://management.azure.com'")


def routes(state: EmulatorState) -> list[web.RouteDef]:
    api = ResourceManager(state)
    return [
        web.get(ACCOUNT_PATH, api.get_account, name="arm:accounts.get"),
        web.get(f"{ACCOUNT_PATH}/deployments", api.list_deployments, name="arm:deployments.list"),
        web.get(f"{ACCOUNT_PATH}/deployments/{{deployment}}", api.get_deployment, name="arm:deployments.get"),
    ]


def resource_id(resource: Resource) -> str:
    return (f"/subscriptions/{resource.subscription_id}/resourceGroups/{resource.resource_group}/providers/"
            f"Microsoft.CognitiveServices/accounts/{resource.name}")


def deployment_json(resource: Resource, deployment: Deployment) -> dict[str, Any]:
    """A deployment as ARM returns it (key order as the live service: id, type, name, sku, properties, …)."""
    properties: dict[str, Any] = {
        "model": {"format": deployment.model_format, "name": deployment.model_name,
                  "version": deployment.model_version},
        "versionUpgradeOption": "OnceNewDefaultVersionAvailable",
    }
    if deployment.capabilities is not None:
        properties["capabilities"] = dict(deployment.capabilities)
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
        "systemData": {"createdBy": "devstack@example.com", "createdByType": "User", "createdAt": stamp,
                       "lastModifiedBy": "devstack@example.com", "lastModifiedByType": "User",
                       "lastModifiedAt": stamp},
        "etag": f'"{uuid.uuid5(uuid.NAMESPACE_URL, repr(deployment.to_json()))}"',
    }


class ResourceManager:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def _enter(self, request: web.Request) -> Resource:
        """Authenticates, checks the api-version, then finds the account, in the order ARM does."""
        tenant = self.state.config.tenant_id
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            challenge = (f'Bearer authorization_uri="https://login.windows.net/{tenant}", error="invalid_token", '
                         "error_description=\"The authentication failed because of missing 'Authorization' header.\"")
            raise ServiceError(arm_error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' "
                                         "header is missing.", headers={"WWW-Authenticate": challenge}))
        try:
            self.state.issuer.verify(token, ARM_AUDIENCES)
        except InvalidToken as exc:
            if exc.reason == "audience":
                raise ServiceError(arm_error(401, "InvalidAuthenticationTokenAudience", "The access token has been "
                                             f"obtained for wrong audience or resource '{exc.audience}'. It should "
                                             f"exactly match with one of the allowed audiences {ALLOWED_AUDIENCES}."))
            if exc.reason == "expired":
                raise ServiceError(arm_error(401, "ExpiredAuthenticationToken", "The access token expiry UTC time "
                                             "is earlier than current UTC time.")) from exc
            raise ServiceError(arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.")) from exc
        version = request.query.get("api-version")
        if version is None:
            raise ServiceError(arm_error(400, "MissingApiVersionParameter", "The api-version query parameter "
                                         "(?api-version=) is required for all requests."))
        if version not in API_VERSIONS:
            raise ServiceError(arm_error(400, "InvalidApiVersionParameter", f"The api-version '{version}' is "
                                         f"invalid. The supported versions are '{','.join(API_VERSIONS)}'."))
        subscription = request.match_info["subscription"]
        group = request.match_info["group"]
        account = request.match_info["account"]
        resources = list(self.state.config.resources.values())
        if not any(r.subscription_id.lower() == subscription.lower() for r in resources):
            raise ServiceError(arm_error(404, "SubscriptionNotFound", f"The subscription '{subscription}' could "
                                         "not be found."))
        if not any(r.resource_group.lower() == group.lower() for r in resources):
            raise ServiceError(arm_error(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be "
                                         "found."))
        for resource in resources:
            if (resource.name.lower() == account.lower() and resource.resource_group.lower() == group.lower()
                    and resource.subscription_id.lower() == subscription.lower()):
                return resource
        raise ServiceError(arm_error(404, "ResourceNotFound", f"The Resource 'Microsoft.CognitiveServices/accounts/"
                                     f"{account}' under resource group '{group}' was not found. For more details "
                                     "please go to https://aka.ms/ARMResourceNotFoundFix"))

    async def get_account(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        endpoint = f"{request.url.origin()}/{resource.name}/"
        return web.json_response({
            "id": resource_id(resource), "name": resource.name, "type": "Microsoft.CognitiveServices/accounts",
            "location": resource.location, "kind": "OpenAI", "sku": {"name": "S0"},
            "properties": {"endpoint": endpoint, "customSubDomainName": resource.name,
                           "provisioningState": "Succeeded", "publicNetworkAccess": "Enabled",
                           "disableLocalAuth": False},
        })

    async def list_deployments(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        deployments = list(resource.deployments.values())
        size = max(1, self.state.config.arm_page_size)
        skip = request.query.get("$skipToken", "0")
        start = int(skip) if skip.isdigit() else 0
        body: dict[str, Any] = {"value": [deployment_json(resource, d) for d in deployments[start: start + size]]}
        if start + size < len(deployments):
            query = request.url.query.copy()
            query["$skipToken"] = str(start + size)
            body["nextLink"] = str(request.url.with_query(query))
        return web.json_response(body)

    async def get_deployment(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        name = request.match_info["deployment"]
        deployment = resource.deployment(name)
        if deployment is None:
            return arm_error(404, "DeploymentNotFound", f"The specified deployment '{name}' was not found in "
                             f"account '{resource.name}'.")
        return web.json_response(deployment_json(resource, deployment))
