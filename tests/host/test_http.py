"""HTTP triggers: routing as the Functions host does it, keys, methods, requests and responses."""

from __future__ import annotations

import pytest

from tests.host.conftest import FUNCTION_KEY, MASTER_KEY, RunningHost


def test_an_anonymous_route_answers_without_a_key(host: RunningHost) -> None:
    response = host.api("GET", "hello", key=None)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["greeting"] == "Hello, world!"


def test_an_optional_route_parameter_and_the_query_reach_the_function(host: RunningHost) -> None:
    response = host.api("GET", "hello/Ada", key=None, params={"lang": "en"})

    assert response.json() == {"greeting": "Hello, Ada!", "params": {"lang": "en"}, "routeParams": {"name": "Ada"}}


@pytest.mark.parametrize(
    ("key", "header", "status"),
    [
        (None, None, 401),
        ("wrong", None, 401),
        (FUNCTION_KEY, None, 200),
        (MASTER_KEY, None, 200),
        (None, FUNCTION_KEY, 200),
        (None, "wrong", 401),
    ],
)
def test_a_function_level_route_needs_a_function_key_in_code_or_header(
    host: RunningHost, key: str | None, header: str | None, status: int
) -> None:
    headers = {"x-functions-key": header} if header else {}

    response = host.api("GET", "things/widget", key=key, headers=headers)

    assert response.status_code == status
    if status == 401:
        assert response.content == b""


def test_an_admin_route_needs_the_master_key(host: RunningHost) -> None:
    assert host.api("GET", "admin-only").status_code == 401
    assert host.api("GET", "admin-only", key=MASTER_KEY).json() == {"admin": True}


def test_a_literal_segment_wins_over_a_parameter(host: RunningHost) -> None:
    response = host.api("POST", "things/import")

    assert response.json() == {"route": "things/import", "method": "POST"}


def test_a_method_the_literal_route_lacks_falls_through_to_the_parameter_route(host: RunningHost) -> None:
    """As with ASP.NET routing in the Functions host: GET things/import is things/{thingId} with thingId=import."""
    response = host.api("GET", "things/import")

    assert response.json()["route"] == "things/{thingId}"
    assert response.json()["thingId"] == "import"


def test_a_parameter_value_may_contain_double_colons_and_encoded_characters(host: RunningHost) -> None:
    response = host.api("GET", "things/gpt-4o::batch")
    encoded = host.api("GET", "things/a%20b%3Ac")

    assert response.json()["thingId"] == "gpt-4o::batch"
    assert encoded.json()["thingId"] == "a b:c"


def test_a_constrained_parameter_and_a_catch_all(host: RunningHost) -> None:
    matched = host.api("GET", "things/42/parts/wheels/front/left")
    not_an_int = host.api("GET", "things/abc/parts/wheels")

    assert matched.json() == {
        "route": "things/{id:int}/parts/{*rest}",
        "routeParams": {"id": "42", "rest": "wheels/front/left"},
    }
    assert not_an_int.status_code == 404


def test_a_method_no_route_allows_is_404_like_the_functions_host(host: RunningHost) -> None:
    assert host.api("DELETE", "things/widget").status_code == 404
    assert host.api("GET", "echo", key=None).status_code == 404


def test_an_unknown_route_is_404(host: RunningHost) -> None:
    assert host.api("GET", "no/such/route").status_code == 404
    assert host.session.get(f"{host.base}/elsewhere", timeout=10).status_code == 404


def test_request_method_url_headers_body_and_query_reach_the_function(host: RunningHost) -> None:
    response = host.api("PATCH", "things/widget", data=b"new body", headers={"X-Test-Header": "value"})

    body = response.json()
    assert body["method"] == "PATCH"
    assert body["body"] == "new body"
    assert body["header"] == "value"
    assert body["params"] == {"code": FUNCTION_KEY}
    assert body["url"].startswith(f"{host.base}/api/things/widget?")


def test_the_response_keeps_status_headers_body_cookies_and_content_type(host: RunningHost) -> None:
    response = host.api(
        "PUT",
        "echo",
        key=None,
        params={"status": "201"},
        data=b'{"a": 1}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 201
    assert response.content == b'{"a": 1}'
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Echo"] == "yes"
    assert response.cookies.get("session") == "abc"


def test_a_function_returning_a_string_answers_200_text(host: RunningHost) -> None:
    response = host.api("GET", "text", key=None)

    assert response.status_code == 200
    assert response.text == "plain text"


def test_an_exception_is_an_empty_500_and_logged(host: RunningHost) -> None:
    response = host.api("GET", "boom", key=None)

    assert response.status_code == 500
    assert response.content == b""
    assert "this function always fails" in host.log_text()


def test_an_async_function_gets_its_context_and_the_app_settings(host: RunningHost) -> None:
    body = host.api("GET", "context", key=None).json()

    assert body["functionName"] == "with_context"
    assert len(body["invocationId"]) == 36
    assert body["setting"] == "from local.settings.json"


def test_each_execution_is_logged_with_name_outcome_and_duration(host: RunningHost) -> None:
    host.api("GET", "hello/logline", key=None)

    assert "Executed 'Functions.hello' (Succeeded, Id=" in host.log_text()


def test_admin_endpoints(host: RunningHost) -> None:
    ping = host.session.get(f"{host.base}/admin/host/ping", timeout=10)
    status = host.session.get(f"{host.base}/admin/host/status", params={"code": MASTER_KEY}, timeout=10)
    refused = host.session.get(f"{host.base}/admin/host/status", params={"code": FUNCTION_KEY}, timeout=10)

    assert ping.status_code == 200
    assert status.json()["state"] == "Running"
    assert "tick" in status.json()["functions"]
    assert refused.status_code == 401
