"""Managed identity as App Service and Azure Functions expose it (IDENTITY_ENDPOINT + X-IDENTITY-HEADER)."""

from __future__ import annotations

import hmac
import uuid

from aiohttp import web

from devstack.emulator.state import EmulatorState

API_VERSION = "2019-08-01"
# Resources Entra issues tokens for in this emulation (anything else is "not a known resource" to Entra).
KNOWN_RESOURCES = (
    "https://management.azure.com",
    "https://management.core.windows.net",
    "https://cognitiveservices.azure.com",
    "https://vault.azure.net",
    "https://storage.azure.com",
    "https://monitor.azure.com",
)


def routes(state: EmulatorState) -> list[web.RouteDef]:
    async def handler(request: web.Request) -> web.Response:
        return await token(state, request)

    return [web.get("/msi/token", handler, name="identity:token")]


def _failure(status: int, message: str) -> web.Response:
    return web.json_response(
        {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}, status=status
    )


async def token(state: EmulatorState, request: web.Request) -> web.Response:
    # Header bytes that are not UTF-8 arrive as surrogate escapes; encoding them back compares the raw bytes.
    header = request.headers.get("X-IDENTITY-HEADER", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(header, state.config.identity_header.encode()):
        return _failure(
            401, "The X-IDENTITY-HEADER header is missing or does not match the identity endpoint's secret."
        )
    if request.query.get("api-version") != API_VERSION:
        return _failure(400, f"The api-version is not supported. Use {API_VERSION}.")
    resource = request.query.get("resource", "")
    if not resource:
        return _failure(400, "The 'resource' query parameter is required.")
    if resource.rstrip("/") not in KNOWN_RESOURCES:
        return _failure(500, "An unexpected error occured while fetching the AAD Token.")  # sic, as Azure spells it
    issued = state.issuer.issue(resource, client_id=request.query.get("client_id"))
    return web.json_response(
        {
            "access_token": issued.access_token,
            "expires_on": str(issued.expires_on),
            "resource": issued.resource,
            "token_type": "Bearer",
            "client_id": issued.client_id,
        }
    )
