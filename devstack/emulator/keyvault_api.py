"""Key Vault secrets over HTTPS, with the bearer challenge that azure-keyvault-secrets' SecretClient expects."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from devstack.emulator.errors import ServiceError, keyvault_error
from devstack.emulator.state import EmulatorState
from devstack.emulator.tokens import VAULT_AUDIENCES, InvalidToken, bearer_token
from devstack.emulator.vault import SECRET_NAME, SecretVersion

# The api-versions the service answers, including the ones current SDKs default to (and still accept).
API_VERSIONS = {"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"}
LATEST_API_VERSION = "2026-04-01"
MAX_RESULTS = 25
NUMBER = re.compile(r"[0-9]{1,9}")


def routes(state: EmulatorState) -> list[web.RouteDef]:
    api = KeyVault(state)
    return [
        web.get("/secrets", api.list_secrets, name="keyvault:secrets.list"),
        web.put("/secrets/{name}", api.set_secret, name="keyvault:secrets.set"),
        web.put("/secrets/", api.set_without_name, name="keyvault:secrets.set-unnamed"),
        web.get("/secrets/{name}/versions", api.list_versions, name="keyvault:secrets.versions"),
        web.get("/secrets/{name}", api.get_secret, name="keyvault:secrets.get"),
        web.get("/secrets/{name}/", api.get_secret, name="keyvault:secrets.get-latest"),
        web.get("/secrets/{name}/{version}", api.get_secret, name="keyvault:secrets.get-version"),
    ]


class KeyVault:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def _challenge(self) -> dict[str, str]:
        authority = f"https://login.windows.net/{self.state.config.tenant_id}"
        return {"WWW-Authenticate": f'Bearer authorization="{authority}", resource="https://vault.azure.net"'}

    def _enter(self, request: web.Request) -> str:
        """Authenticates (before anything else: the SDK's first request carries no token and no body), checks
        the api-version, and returns the vault's base URL as this request reached it."""
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise ServiceError(
                keyvault_error(
                    401,
                    "Unauthorized",
                    "AKV10000: Request is missing a Bearer or PoP token.",
                    headers=self._challenge(),
                )
            )
        try:
            self.state.issuer.verify(token, VAULT_AUDIENCES)
        except InvalidToken as exc:
            if exc.reason == "audience":
                message = f"AKV10022: Invalid audience. Expected https://vault.azure.net, found: {exc.audience}."
            elif exc.reason == "expired":
                message = "AKV10032: Token expired."
            else:
                message = "AKV10000: Request is missing a Bearer or PoP token."
            raise ServiceError(keyvault_error(401, "Unauthorized", message, headers=self._challenge())) from exc
        version = request.query.get("api-version")
        if version is None:
            raise ServiceError(keyvault_error(400, "BadParameter", "The api-version parameter is missing."))
        if version not in API_VERSIONS:
            raise ServiceError(
                keyvault_error(
                    400,
                    "BadParameter",
                    f"The specified version ({version}) is not "
                    "recognized. Consider using the latest supported version "
                    f"({LATEST_API_VERSION}).",
                )
            )
        name = request.match_info.get("name")
        if name is not None and not SECRET_NAME.fullmatch(name):
            raise ServiceError(keyvault_error(400, "BadParameter", f"The request URI contains an invalid name: {name}"))
        return str(request.url.origin())

    async def get_secret(self, request: web.Request) -> web.Response:
        vault_url = self._enter(request)
        name = request.match_info["name"]
        version = request.match_info.get("version")
        secret = self.state.vault.version(name, version) if version else self.state.vault.latest(name)
        if secret is None:
            shown = f"{name}/{version}" if version else name
            return keyvault_error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {shown} was not found in this key "
                "vault. If you recently deleted this secret you may be able to recover it using the "
                "correct recovery command. For help resolving this issue, please see "
                "https://go.microsoft.com/fwlink/?linkid=2125182",
            )
        if not secret.enabled:
            return web.json_response(
                {
                    "error": {
                        "code": "Forbidden",
                        "message": "Operation get is not allowed on a disabled secret.",
                        "innererror": {"code": "SecretDisabled"},
                    }
                },
                status=403,
            )
        return web.json_response(secret.bundle(vault_url))

    async def set_secret(self, request: web.Request) -> web.Response:
        vault_url = self._enter(request)
        try:
            body: Any = json.loads(await request.read() or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            return keyvault_error(400, "BadParameter", "Property value is required and must be a string.")
        attributes = body.get("attributes")
        if attributes is None:
            attributes = {}
        problem = _attributes_problem(attributes)
        if problem:
            return keyvault_error(400, "BadParameter", problem)
        content_type = body.get("contentType")
        if content_type is not None and not isinstance(content_type, str):
            return keyvault_error(400, "BadParameter", "Property contentType must be a string.")
        tags = body.get("tags")
        if tags is not None and not (isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())):
            return keyvault_error(400, "BadParameter", "Property tags must be an object of strings.")
        secret = self.state.vault.set(
            request.match_info["name"],
            body["value"],
            content_type=content_type,
            tags=tags,
            enabled=attributes.get("enabled", True),
            not_before=attributes.get("nbf"),
            expires=attributes.get("exp"),
        )
        return web.json_response(secret.bundle(vault_url))

    async def set_without_name(self, request: web.Request) -> web.Response:
        """`PUT /secrets/` (an empty name): Key Vault has no such operation."""
        self._enter(request)
        return keyvault_error(405, "MethodNotAllowed", "HTTP PUT not allowed")

    async def list_secrets(self, request: web.Request) -> web.Response:
        vault_url = self._enter(request)
        items = [s.item(vault_url, with_version=False) for s in self.state.vault.names()]
        return self._page(request, vault_url, items)

    async def list_versions(self, request: web.Request) -> web.Response:
        vault_url = self._enter(request)
        versions: list[SecretVersion] = self.state.vault.versions(request.match_info["name"])
        return self._page(request, vault_url, [v.item(vault_url, with_version=True) for v in versions])

    def _page(self, request: web.Request, vault_url: str, items: list[dict[str, Any]]) -> web.Response:
        size_text = request.query.get("maxresults", str(MAX_RESULTS))
        if not NUMBER.fullmatch(size_text) or not 1 <= int(size_text) <= MAX_RESULTS:
            return keyvault_error(400, "BadParameter", f"maxresults must be between 1 and {MAX_RESULTS}.")
        size = int(size_text)
        skip_text = request.query.get("$skiptoken", "0")
        if not NUMBER.fullmatch(skip_text):
            return keyvault_error(400, "BadParameter", f"The skip token {skip_text} is not valid.")
        start = int(skip_text)
        page = items[start : start + size]
        next_link = None
        if start + size < len(items):
            query = request.url.query.copy()
            query["$skiptoken"] = str(start + size)
            query["maxresults"] = str(size)
            next_link = str(request.url.with_query(query))
        return web.json_response({"value": page, "nextLink": next_link})


def _attributes_problem(attributes: Any) -> str | None:
    """Why a set request's `attributes` cannot be stored, or None (enabled: boolean; nbf, exp: Unix seconds)."""
    if not isinstance(attributes, dict):
        return "Property attributes must be an object."
    if not isinstance(attributes.get("enabled", True), bool):
        return "Property attributes.enabled must be a boolean."
    for key in ("nbf", "exp"):
        value = attributes.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"Property attributes.{key} must be a number of seconds since 1970-01-01T00:00:00Z."
    return None
