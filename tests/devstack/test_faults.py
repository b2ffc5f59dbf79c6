"""Fault injection: rules set at start (config file) or at run time (/_emulator/faults), applied by route,
resource and service, in each service's own error shape."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from devstack.emulator.faults import FaultInjector, FaultRuleError
from tests.conftest import TEST_CONFIG, RunningEmulator, start_emulator, stop_emulator, wait_for
from tests.devstack.conftest import API_VERSION, DataPlane, batch_lines

EASTUS = "aoai-devstack-eastus"
SWEDEN = "aoai-devstack-swedencentral"
ARM_API_VERSION = "2023-05-01"
VAULT_API_VERSION = "7.4"


# Helpers ---------------------------------------------------------------------------------------------------------
def faults(emulator: RunningEmulator) -> list[dict[str, Any]]:
    response = requests.get(f"{emulator.control}/faults", timeout=10)
    assert response.status_code == 200
    return list(response.json()["value"])


def post_fault(emulator: RunningEmulator, rule: Any) -> requests.Response:
    return requests.post(f"{emulator.control}/faults", json=rule, timeout=10)


def bearer(emulator: RunningEmulator, audience: str) -> dict[str, str]:
    identity = emulator.endpoints["identity"]
    response = requests.get(
        identity["endpoint"],
        params={"api-version": "2019-08-01", "resource": audience},
        headers={"X-IDENTITY-HEADER": identity["header"]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def arm_deployments(emulator: RunningEmulator, headers: dict[str, str], account: str = EASTUS) -> requests.Response:
    arm = emulator.endpoints["arm"]
    url = (
        f"{arm['endpoint']}/subscriptions/{arm['subscriptionId']}/resourceGroups/{arm['resourceGroup']}"
        f"/providers/Microsoft.CognitiveServices/accounts/{account}/deployments"
    )
    return requests.get(url, params={"api-version": ARM_API_VERSION}, headers=headers, timeout=10)


def vault_get(emulator: RunningEmulator, headers: dict[str, str], name: str = "configured-secret") -> requests.Response:
    vault = emulator.endpoints["keyVault"]
    return requests.get(
        f"{vault['url']}/secrets/{name}",
        params={"api-version": VAULT_API_VERSION},
        headers=headers,
        verify=vault["caBundle"],
        timeout=10,
    )


def list_files(plane: DataPlane) -> requests.Response:
    return plane.request("GET", "files")


def uploaded(plane: DataPlane) -> str:
    return str(plane.upload(batch_lines(2))["id"])


# 429, 500, 503 in the Azure OpenAI shape -------------------------------------------------------------------------
def test_429_has_retry_after_and_retry_after_ms_in_the_azure_openai_error_shape(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    emulator.add_fault(service="openai", route="batches.list", status=429, retryAfter=7)

    response = eastus.request("GET", "batches")

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["retry-after-ms"] == "7000"
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    assert body["error"]["code"] == "429"
    assert "exceeded call rate limit" in body["error"]["message"]
    assert "Please retry after 7 seconds" in body["error"]["message"]


def test_a_fractional_retry_after_rounds_retry_after_up_and_keeps_milliseconds(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    emulator.add_fault(route="files.list", status=429, retryAfter=1.25)

    response = list_files(eastus)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.headers["retry-after-ms"] == "1250"


def test_429_without_retry_after_sends_no_retry_headers(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(route="files.list", status=429)

    response = list_files(eastus)

    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert "retry-after-ms" not in response.headers


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (500, "InternalServerError", "The server had an error while processing your request. Sorry about that!"),
        (
            503,
            "ServiceUnavailable",
            "The service is temporarily unable to process your request. Please try again later.",
        ),
    ],
)
def test_server_errors_use_the_azure_openai_error_shape(
    emulator: RunningEmulator, eastus: DataPlane, status: int, code: str, message: str
) -> None:
    emulator.add_fault(route="batches.create", status=status)

    response = eastus.create_batch(uploaded(eastus))

    assert response.status_code == status
    assert response.json() == {"error": {"code": code, "message": message}}
    assert emulator.batches(EASTUS) == []


def test_a_status_fault_answers_before_the_handler_so_nothing_is_created(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    emulator.add_fault(route="files.upload", status=503, retryAfter=1)

    response = eastus.request("POST", "files", data={"purpose": "batch"}, files={"file": ("in.jsonl", b"{}\n")})

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert list_files(eastus).json()["data"] == []


# times, probability, latency ---------------------------------------------------------------------------------
def test_times_limits_how_many_requests_fail_then_requests_succeed(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    rule = emulator.add_fault(route="files.list", status=503, times=2)

    statuses = [list_files(eastus).status_code for _ in range(4)]

    assert statuses == [503, 503, 200, 200]
    (listed,) = faults(emulator)
    assert listed["id"] == rule["id"]
    assert listed["hits"] == 2
    assert listed["times"] == 2


def test_times_zero_never_fires(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(route="files.list", status=500, times=0)

    assert list_files(eastus).status_code == 200


def test_probability_half_fails_some_requests_but_not_all(emulator: RunningEmulator, eastus: DataPlane) -> None:
    rule = emulator.add_fault(route="files.list", status=500, probability=0.5)

    statuses = [list_files(eastus).status_code for _ in range(40)]

    hits = statuses.count(500)
    assert set(statuses) == {200, 500}
    assert 0 < hits < 40
    assert faults(emulator)[0]["hits"] == hits
    assert len(emulator.requests_log(fault=rule["id"])) == hits


def test_probability_zero_never_fires_and_one_always_fires(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(route="files.list", status=500, probability=0)
    emulator.add_fault(route="batches.list", status=500, probability=1)

    assert [list_files(eastus).status_code for _ in range(5)] == [200] * 5
    assert [eastus.request("GET", "batches").status_code for _ in range(5)] == [500] * 5


def test_latency_delays_the_response_by_at_least_latency_ms(emulator: RunningEmulator, eastus: DataPlane) -> None:
    rule = emulator.add_fault(route="files.list", latencyMs=300)

    started = time.monotonic()
    response = list_files(eastus)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.3
    (entry,) = emulator.requests_log(route="files.list")
    assert (entry["fault"], entry["status"]) == (rule["id"], 200)
    # Other routes are left alone.
    assert eastus.request("GET", "batches").status_code == 200
    assert emulator.requests_log(route="batches.list")[0]["fault"] is None


def test_latency_with_a_status_delays_then_fails(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(route="files.list", latencyMs=200, status=503)

    started = time.monotonic()
    response = list_files(eastus)

    assert time.monotonic() - started >= 0.2
    assert response.status_code == 503


# Dropped connections and lost replies ----------------------------------------------------------------------------
def test_drop_gives_the_client_a_connection_error_and_creates_nothing(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    file_id = uploaded(eastus)
    rule = emulator.add_fault(route="batches.create", drop=True)

    with pytest.raises(requests.ConnectionError):
        eastus.create_batch(file_id)

    assert emulator.batches(EASTUS) == []
    (entry,) = emulator.requests_log(route="batches.create")
    assert entry["fault"] == rule["id"]
    assert entry["dropped"] is True
    assert entry["status"] is None
    assert "handledStatus" not in entry


def test_the_emulator_keeps_serving_after_a_dropped_connection(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(route="files.list", drop=True, times=1)

    with pytest.raises(requests.ConnectionError):
        list_files(eastus)

    assert list_files(eastus).status_code == 200


def cut_short(plane: DataPlane, path: str, content_type: str, body: bytes, declared: int) -> None:
    """Sends a POST whose body stops short of the `declared` length, then closes the connection: a client killed
    while it sends (kill -9 of a host mid-upload)."""
    url = urlsplit(plane.url(path))
    head = (
        f"POST {url.path}?api-version={API_VERSION} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"api-key: {plane.session.headers['api-key']}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=10) as connection:
        connection.sendall(head.encode() + body)


@pytest.mark.parametrize("route", ["files.upload", "batches.create"])
def test_a_client_gone_mid_body_is_logged_as_such_and_is_no_emulator_error(
    emulator: RunningEmulator, eastus: DataPlane, route: str
) -> None:
    # The emulator holds the request first, so that the client is gone before the body is read.
    emulator.add_fault(route=route, latencyMs=200, times=1)
    if route == "files.upload":
        boundary = "cut"
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n\r\n'
        cut_short(eastus, "files", f"multipart/form-data; boundary={boundary}", part.encode() + b'{"a"', 4096)
    else:
        cut_short(eastus, "batches", "application/json", b'{"input_file_id": "file-', 4096)

    (entry,) = wait_for(
        lambda: [e for e in emulator.requests_log(route=route) if e["status"] is not None],
        what="the cut-short request's end",
    )
    assert entry["status"] == 499  # nginx's "client closed request": the emulator had nobody to answer
    assert entry["clientGone"] is True
    assert emulator.batches(EASTUS) == []
    files = list_files(eastus)  # and it keeps serving
    assert (files.status_code, files.json()["data"]) == (200, [])


def test_after_handler_500_on_create_batch_creates_the_batch_but_the_client_sees_500(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    file_id = uploaded(eastus)
    rule = emulator.add_fault(route="batches.create", status=500, afterHandler=True, times=1)

    response = eastus.create_batch(file_id, metadata={"job": "exactly-once"})

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "InternalServerError"
    (batch,) = emulator.batches(EASTUS)
    assert batch["input_file_id"] == file_id
    assert batch["metadata"] == {"job": "exactly-once"}
    (entry,) = emulator.requests_log(route="batches.create")
    assert entry["fault"] == rule["id"]
    assert entry["status"] == 500
    assert entry["handledStatus"] == 200
    assert entry["batch"]["id"] == batch["id"]
    # A client that simply retries now holds two batches for one job: what exactly-once tests must catch.
    assert eastus.create_batch(file_id, metadata={"job": "exactly-once"}).status_code == 200
    assert len(emulator.batches(EASTUS)) == 2


def test_after_handler_drop_creates_the_batch_but_the_client_sees_a_connection_error(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    file_id = uploaded(eastus)
    rule = emulator.add_fault(route="batches.create", drop=True, afterHandler=True)

    with pytest.raises(requests.ConnectionError):
        eastus.create_batch(file_id)

    (batch,) = emulator.batches(EASTUS)
    assert batch["input_file_id"] == file_id
    (entry,) = emulator.requests_log(route="batches.create")
    assert entry["fault"] == rule["id"]
    assert entry["handledStatus"] == 200
    assert entry["dropped"] is True
    assert entry["status"] is None
    assert entry["batch"]["id"] == batch["id"]


def test_after_handler_replaces_an_error_reply_too(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(route="batches.get", status=503, afterHandler=True)

    response = eastus.request("GET", "batches/batch_missing")

    assert response.status_code == 503
    (entry,) = emulator.requests_log(route="batches.get")
    assert (entry["status"], entry["handledStatus"]) == (503, 404)


# Scoping -----------------------------------------------------------------------------------------------------
def test_a_rule_for_one_resource_does_not_touch_the_other(
    emulator: RunningEmulator, eastus: DataPlane, sweden: DataPlane
) -> None:
    emulator.add_fault(resource=SWEDEN, status=500)

    assert list_files(sweden).status_code == 500
    assert sweden.request("GET", "batches").status_code == 500
    assert list_files(eastus).status_code == 200
    assert eastus.request("GET", "batches").status_code == 200


def test_a_rule_for_one_route_does_not_touch_other_routes(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(route="batches.create", status=500)

    file_id = uploaded(eastus)
    assert list_files(eastus).status_code == 200
    assert eastus.request("GET", "batches").status_code == 200
    assert eastus.create_batch(file_id).status_code == 500


def test_a_route_pattern_matches_every_route_it_names(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(route="batches.*", status=503)

    assert eastus.request("GET", "batches").status_code == 503
    assert eastus.request("GET", "batches/batch_x").status_code == 503
    assert list_files(eastus).status_code == 200


def test_a_method_scoped_rule_only_hits_that_method(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(resource=EASTUS, method="post", status=500)

    assert list_files(eastus).status_code == 200
    response = eastus.request("POST", "files", data={"purpose": "batch"}, files={"file": ("in.jsonl", b"{}\n")})
    assert response.status_code == 500


def test_an_arm_429_is_subscription_requests_throttled_and_leaves_the_data_plane_alone(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    headers = bearer(emulator, "https://management.azure.com/")
    emulator.add_fault(service="arm", status=429, retryAfter=3)

    response = arm_deployments(emulator, headers)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert "retry-after-ms" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "SubscriptionRequestsThrottled"
    assert "Please try again after '3' seconds" in error["message"]
    assert list_files(eastus).status_code == 200


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "InvalidAuthenticationToken"),
        (403, "AuthorizationFailed"),
        (404, "ResourceNotFound"),
        (503, "ServiceUnavailable"),
        (500, "InternalServerError"),
        (400, "BadRequest"),
    ],
)
def test_injected_arm_errors_carry_the_code_arm_uses_for_that_status(
    emulator: RunningEmulator, status: int, code: str
) -> None:
    headers = bearer(emulator, "https://management.azure.com/")
    emulator.add_fault(service="arm", route="deployments.list", status=status)

    response = arm_deployments(emulator, headers)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(("status", "code"), [(401, "401"), (404, "404"), (400, "400")])
def test_injected_azure_openai_client_errors_use_the_status_as_code(
    emulator: RunningEmulator, eastus: DataPlane, status: int, code: str
) -> None:
    emulator.add_fault(route="files.list", status=status)

    response = list_files(eastus)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_an_arm_rule_scoped_to_one_account_spares_the_other(emulator: RunningEmulator) -> None:
    headers = bearer(emulator, "https://management.azure.com/")
    emulator.add_fault(service="arm", resource=SWEDEN, route="deployments.list", status=500)

    failed = arm_deployments(emulator, headers, SWEDEN)

    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "InternalServerError"
    assert arm_deployments(emulator, headers, EASTUS).status_code == 200


def test_a_key_vault_fault_uses_the_key_vault_error_shape(emulator: RunningEmulator) -> None:
    headers = bearer(emulator, "https://vault.azure.net")
    emulator.add_fault(service="keyvault", route="secrets.get*", status=429, retryAfter=2)

    response = vault_get(emulator, headers)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "Throttled"
    (entry,) = emulator.requests_log(service="keyvault")
    assert entry["resource"] == emulator.endpoints["keyVault"]["name"]
    assert entry["route"] == "secrets.get"


def test_a_key_vault_rule_does_not_touch_other_services(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(service="keyvault", status=503)

    assert list_files(eastus).status_code == 200
    headers = bearer(emulator, "https://vault.azure.net")
    response = vault_get(emulator, headers)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ServiceUnavailable"


def test_an_identity_fault_uses_the_managed_identity_error_shape(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="identity", route="token", status=500, times=1)
    identity = emulator.endpoints["identity"]

    response = requests.get(
        identity["endpoint"],
        params={"api-version": "2019-08-01", "resource": "https://vault.azure.net"},
        headers={"X-IDENTITY-HEADER": identity["header"]},
        timeout=10,
    )

    assert response.status_code == 500
    body = response.json()
    assert body["statusCode"] == 500
    assert body["message"] == "An unexpected error occured while fetching the AAD Token."
    assert "correlationId" in body
    assert bearer(emulator, "https://vault.azure.net")["Authorization"].startswith("Bearer ")


def test_faults_never_touch_the_control_routes(emulator: RunningEmulator) -> None:
    emulator.add_fault(status=500)

    assert requests.get(f"{emulator.control}/health", timeout=10).status_code == 200
    assert len(faults(emulator)) == 1
    assert emulator.requests_log() == []


def test_the_first_matching_rule_wins(emulator: RunningEmulator, eastus: DataPlane) -> None:
    first = emulator.add_fault(route="files.list", status=429, times=1)
    second = emulator.add_fault(route="files.*", status=503)

    assert [list_files(eastus).status_code for _ in range(2)] == [429, 503]
    assert [entry["fault"] for entry in emulator.requests_log(route="files.list")] == [first["id"], second["id"]]


# Listing, deleting, validating rules -------------------------------------------------------------------------
def test_added_rules_are_listed_in_order_with_their_fields(emulator: RunningEmulator) -> None:
    first = emulator.add_fault(
        service="openai", resource=EASTUS, route="batches.create", status=429, retryAfter=5, probability=0.25, times=3
    )
    second = emulator.add_fault(id="slow-files", route="files.*", latencyMs=50)

    assert first == {
        "id": first["id"],
        "service": "openai",
        "resource": EASTUS,
        "route": "batches.create",
        "method": "*",
        "status": 429,
        "retryAfter": 5,
        "latencyMs": 0,
        "drop": False,
        "afterHandler": False,
        "probability": 0.25,
        "times": 3,
        "hits": 0,
    }
    assert second["id"] == "slow-files"
    assert [rule["id"] for rule in faults(emulator)] == [first["id"], "slow-files"]
    assert faults(emulator) == [first, second]


def test_generated_ids_never_collide_with_chosen_ones(emulator: RunningEmulator) -> None:
    chosen = emulator.add_fault(id="fault-2", route="files.list", status=500)
    generated = [emulator.add_fault(route="files.list", status=500)["id"] for _ in range(2)]

    assert chosen["id"] == "fault-2"
    assert len({chosen["id"], *generated}) == 3


def test_deleting_a_rule_stops_it(emulator: RunningEmulator, eastus: DataPlane) -> None:
    rule = emulator.add_fault(route="files.list", status=500)
    kept = emulator.add_fault(route="batches.list", status=500)
    assert list_files(eastus).status_code == 500

    response = requests.delete(f"{emulator.control}/faults/{rule['id']}", timeout=10)

    assert response.status_code == 204
    assert list_files(eastus).status_code == 200
    assert [r["id"] for r in faults(emulator)] == [kept["id"]]
    assert eastus.request("GET", "batches").status_code == 500


def test_deleting_an_unknown_rule_is_404(emulator: RunningEmulator) -> None:
    response = requests.delete(f"{emulator.control}/faults/fault-999", timeout=10)

    assert response.status_code == 404
    assert "fault-999" in response.json()["detail"]


def test_deleting_all_rules_clears_them(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.add_fault(route="files.list", status=500)
    emulator.add_fault(route="batches.list", status=500)

    response = requests.delete(f"{emulator.control}/faults", timeout=10)

    assert response.status_code == 204
    assert faults(emulator) == []
    assert list_files(eastus).status_code == 200


def test_reset_removes_rules_added_at_run_time(emulator: RunningEmulator) -> None:
    emulator.add_fault(route="files.list", status=500)

    emulator.reset()

    assert faults(emulator) == []


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"route": "files.list"}, "needs status, drop or latencyMs"),
        ({"status": 200}, "status must be an HTTP error status (400-599)"),
        ({"status": 600}, "status must be an HTTP error status (400-599)"),
        ({"status": "500"}, "status must be an HTTP error status"),
        ({"status": True}, "status must be an HTTP error status"),
        ({"status": 429, "retryAfter": -1}, "retryAfter must be a non-negative number"),
        ({"status": 429, "retryAfter": "5"}, "retryAfter must be a non-negative number"),
        ({"latencyMs": -5}, "latencyMs must be a non-negative number"),
        ({"status": 500, "probability": 1.5}, "probability must be a number between 0 and 1"),
        ({"status": 500, "probability": "half"}, "probability must be a number between 0 and 1"),
        ({"status": 500, "times": -1}, "times must be a non-negative integer"),
        ({"status": 500, "times": 1.5}, "times must be a non-negative integer"),
        ({"drop": "yes"}, "drop must be true or false"),
        ({"status": 500, "afterHandler": 1}, "afterHandler must be true or false"),
        ({"status": 500, "drop": True}, "either drops the connection or answers with a status"),
        ({"afterHandler": True, "latencyMs": 10}, "afterHandler needs status or drop"),
        ({"service": "blob", "status": 500}, "service must be one of openai, arm, keyvault, identity or '*'"),
        ({"method": 5, "status": 500}, "method must be a non-empty string"),
        ({"route": "batch.create", "status": 500}, "route 'batch.create' matches no route"),
        (
            {"service": "arm", "route": "batches.create", "status": 500},
            "route 'batches.create' matches no route of service 'arm'",
        ),
        ({"resource": "aoai-devstack-westus", "status": 500}, "resource 'aoai-devstack-westus' matches no resource"),
        ({"service": "identity", "resource": EASTUS, "status": 500}, "matches no resource of service 'identity'"),
        (
            {"route": "token", "resource": EASTUS, "status": 500},
            "resource 'aoai-devstack-eastus' matches no resource of the services with route 'token'",
        ),
        ({"statusCode": 500}, "unknown fault rule fields: ['statusCode']"),
        ({"id": "", "status": 500}, "id must be a non-empty string"),
    ],
)
def test_a_bad_rule_is_refused_with_400_naming_the_problem(
    emulator: RunningEmulator, rule: dict[str, Any], problem: str
) -> None:
    response = post_fault(emulator, rule)

    assert response.status_code == 400
    assert problem in response.json()["detail"]
    assert faults(emulator) == []


@pytest.mark.parametrize(("body", "problem"), [(b"{", "in JSON"), (b"[]", "a JSON object"), (b'"x"', "a JSON object")])
def test_a_body_that_is_not_a_rule_object_is_refused_with_400(
    emulator: RunningEmulator, body: bytes, problem: str
) -> None:
    response = requests.post(
        f"{emulator.control}/faults", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )

    assert response.status_code == 400
    assert problem in response.json()["detail"]


def test_a_duplicate_rule_id_is_refused(emulator: RunningEmulator) -> None:
    emulator.add_fault(id="throttle", status=429)

    response = post_fault(emulator, {"id": "throttle", "status": 500})

    assert response.status_code == 400
    assert "'throttle' already exists" in response.json()["detail"]
    assert [rule["status"] for rule in faults(emulator)] == [429]


# Faults from the config file, and a seeded emulator ------------------------------------------------------------
CONFIG_FAULTS = [
    {
        "id": "sweden-throttled",
        "service": "openai",
        "resource": SWEDEN,
        "route": "batches.create",
        "status": 429,
        "retryAfter": 2,
        "times": 1,
    },
    {"id": "flaky-files", "resource": SWEDEN, "route": "files.list", "status": 500, "probability": 0.5},
]


@pytest.fixture(scope="module")
def configured_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    """An emulator of its own, with fault rules in its config file and a fixed fault seed."""
    state_dir = tmp_path_factory.mktemp("faulty")
    config = state_dir / "config.json"
    config.write_text(json.dumps({**json.loads(TEST_CONFIG.read_text()), "faults": CONFIG_FAULTS}))
    emulator = start_emulator(state_dir, time_scale=20, config=config, extra_args=["--fault-seed", "7"])
    yield emulator
    stop_emulator(emulator)


@pytest.fixture
def configured(configured_process: RunningEmulator) -> Iterator[RunningEmulator]:
    yield configured_process
    configured_process.reset()
    assert "Error handling request" not in configured_process.log_text()


def plane(emulator: RunningEmulator, name: str) -> DataPlane:
    resource = emulator.resource(name)
    return DataPlane(resource["endpoint"], resource["apiKey"])


def test_faults_from_the_config_file_apply_from_the_start(configured: RunningEmulator) -> None:
    sweden = plane(configured, SWEDEN)
    file_id = str(sweden.upload(batch_lines(1, "gpt-4o-mini-batch"))["id"])

    throttled = sweden.create_batch(file_id)
    accepted = sweden.create_batch(file_id)

    assert throttled.status_code == 429
    assert throttled.headers["retry-after-ms"] == "2000"
    assert accepted.status_code == 200
    assert [rule["id"] for rule in faults(configured)] == ["sweden-throttled", "flaky-files"]
    assert faults(configured)[0]["hits"] == 1


def test_faults_from_the_config_file_come_back_after_reset(configured: RunningEmulator) -> None:
    sweden = plane(configured, SWEDEN)
    file_id = str(sweden.upload(batch_lines(1, "gpt-4o-mini-batch"))["id"])
    assert sweden.create_batch(file_id).status_code == 429
    requests.delete(f"{configured.control}/faults", timeout=10).raise_for_status()
    configured.add_fault(route="files.get", status=500)

    configured.reset()

    assert [(rule["id"], rule["hits"]) for rule in faults(configured)] == [("sweden-throttled", 0), ("flaky-files", 0)]
    file_id = str(sweden.upload(batch_lines(1, "gpt-4o-mini-batch"))["id"])
    assert sweden.create_batch(file_id).status_code == 429
    assert sweden.create_batch(file_id).status_code == 200


def test_a_seeded_probability_fails_about_half_and_repeats_after_reset(configured: RunningEmulator) -> None:
    sweden, eastus = plane(configured, SWEDEN), plane(configured, EASTUS)

    first = [list_files(sweden).status_code for _ in range(40)]
    configured.reset()
    second = [list_files(sweden).status_code for _ in range(40)]

    assert 10 <= first.count(500) <= 30
    assert first == second  # --fault-seed: the same draws after every reset
    assert all(list_files(eastus).status_code == 200 for _ in range(5))


# The rules themselves, in process ------------------------------------------------------------------------------
def test_replace_restarts_ids_and_reseeds_the_draws() -> None:
    injector = FaultInjector([], seed=3)
    injector.add({"status": 500, "probability": 0.5})
    first = [injector.pick("openai", EASTUS, "files.list", "GET") is not None for _ in range(30)]

    injector.replace([{"status": 500, "probability": 0.5}])

    assert [rule.id for rule in injector.rules] == ["fault-1"]
    assert [injector.pick("openai", EASTUS, "files.list", "GET") is not None for _ in range(30)] == first


def test_rules_are_checked_against_the_known_routes_and_resources() -> None:
    injector = FaultInjector([])
    injector.set_targets(
        {"openai": {"batches.create", "files.list"}, "identity": {"token"}}, {"openai": {EASTUS}, "identity": set()}
    )

    assert injector.add({"route": "batches.*", "resource": "aoai-*", "status": 500}).route == "batches.*"
    with pytest.raises(FaultRuleError, match="route 'token' matches no route of service 'openai'"):
        injector.add({"service": "openai", "route": "token", "status": 500})
    with pytest.raises(FaultRuleError, match="resource 'other' matches no resource"):
        injector.add({"resource": "other", "status": 500})


def test_without_known_targets_any_route_name_is_accepted_and_matched_exactly() -> None:
    injector = FaultInjector([{"route": "anything", "status": 500}])
    assert injector.pick("openai", EASTUS, "anything", "GET") is injector.rules[0]
    assert injector.pick("openai", EASTUS, "other", "GET") is None
