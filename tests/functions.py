"""Calling the app's functions the way the Python worker does: indexed from function_app, with built requests."""

from __future__ import annotations

import asyncio
import inspect
import json
from functools import cache
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
from azure.functions.decorators.function_app import Function

import function_app


@cache  # the app indexes its functions once, as the worker does; a second get_functions() call is refused
def functions_by_name() -> dict[str, Function]:
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def trigger_binding(name: str) -> dict[str, Any]:
    bindings: list[dict[str, Any]] = functions_by_name()[name].get_bindings_dict()["bindings"]
    return next(b for b in bindings if str(b["type"]).endswith("Trigger"))


def durable_client_binding(rpc_base_url: str = "http://127.0.0.1:9/runtime/webhooks/durabletask/") -> str:
    """The durable client binding JSON the host passes to a client function."""
    return json.dumps(
        {
            "taskHubName": "aoaibatch",
            "creationUrls": {},
            "managementUrls": {},
            "rpcBaseUrl": rpc_base_url,
            "baseUrl": rpc_base_url,
            "requiredQueryStringParameters": "",
        }
    )


def call_http(
    name: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    params: dict[str, str] | None = None,
    route_params: dict[str, str] | None = None,
    raw_body: bytes | None = None,
    client: str | None = None,
    headers: dict[str, str] | None = None,
) -> func.HttpResponse:
    """Invokes HTTP function `name` with a request built as the worker builds it (and a durable client binding
    for client functions)."""
    data = raw_body if raw_body is not None else (b"" if body is None else json.dumps(body).encode())
    query = f"?{urlencode(params)}" if params else ""
    request = func.HttpRequest(
        method=method,
        url=f"http://localhost:7071/api/{path}{query}",
        body=data,
        params=params or {},
        route_params=route_params or {},
        headers=headers if headers is not None else ({"Content-Type": "application/json"} if data else {}),
    )
    handler = functions_by_name()[name].get_user_function()
    if inspect.iscoroutinefunction(handler):
        response: func.HttpResponse = asyncio.run(handler(request, client=client or durable_client_binding()))
    else:
        response = handler(request)
    return response


def json_of(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())
