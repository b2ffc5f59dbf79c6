"""The Functions app as the Python worker indexes and calls it."""

from __future__ import annotations

import json
from functools import cache

import azure.functions as func
from azure.functions.decorators.function_app import Function

import function_app


@cache  # the app indexes its functions once, as the worker does; a second get_functions() call is refused
def functions_by_name() -> dict[str, Function]:
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def test_health_is_anonymous_get_route() -> None:
    binding = functions_by_name()["health"].get_bindings_dict()["bindings"][0]

    assert binding["type"] == "httpTrigger"
    assert binding["route"] == "health"
    assert str(binding["authLevel"].value) == "anonymous"
    assert [str(m.value) for m in binding["methods"]] == ["GET"]


def test_health_answers_ok() -> None:
    health = functions_by_name()["health"].get_user_function()
    request = func.HttpRequest(method="GET", url="http://localhost/api/health", body=b"")

    response = health(request)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert json.loads(response.get_body()) == {"status": "ok"}
