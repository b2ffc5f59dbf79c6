"""The Functions app as the Python worker indexes and calls it."""

from __future__ import annotations

from tests.functions import call_http, json_of, trigger_binding


def test_health_is_anonymous_get_route() -> None:
    binding = trigger_binding("health")

    assert binding["type"] == "httpTrigger"
    assert binding["route"] == "health"
    assert str(binding["authLevel"].value) == "anonymous"
    assert [str(m.value) for m in binding["methods"]] == ["GET"]


def test_health_answers_ok() -> None:
    response = call_http("health", "GET", "health")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert json_of(response) == {"status": "ok"}
