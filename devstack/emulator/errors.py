"""Error replies in the shape each Azure service uses."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def openai_error(
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    type_: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Azure OpenAI data plane: `{"error": {"code", "message", "param"?, "type"?}}`."""
    error: dict[str, Any] = {"code": code, "message": message}
    if param is not None:
        error["param"] = param
    if type_ is not None:
        error["type"] = type_
    return web.json_response({"error": error}, status=status, headers=headers)


def v1_error(
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    type_: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Azure OpenAI v1 API (`/openai/v1/...`): the v1 OpenAPI's `AzureErrorResponse`, `{"error": {"code", "message",
    "param", "type"}}` with `param` null when no parameter is at fault and `type` "error" unless the error has an
    OpenAI type (invalid_request_error); `inner_error`, optional there, is left out (nothing to put in it)."""
    error = {"code": code, "message": message, "param": param, "type": type_ or "error"}
    return web.json_response({"error": error}, status=status, headers=headers)


def arm_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """Azure Resource Manager: `{"error": {"code", "message"}}`."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def keyvault_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """Key Vault: `{"error": {"code", "message"}}`."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


class ServiceError(Exception):
    """Raised by a handler to answer with `response` (an error in the emulated service's own shape)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response
