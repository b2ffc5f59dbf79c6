"""The emulator's own control routes (/_emulator/...): request log, reset, deployments, speeds, clock."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from tests.conftest import TIME_SCALE, RunningEmulator, wait_for
from tests.devstack.conftest import API_VERSION, DataPlane, batch_lines

EASTUS = "aoai-devstack-eastus"
SWEDEN = "aoai-devstack-swedencentral"
# Emulated Unix times are floats near 2e9: readings compared across processes may differ in the last bits.
ROUNDING = 1e-3
# Speeds of tests/emulator-config.json.
CONFIGURED_SPEEDS = {
    "validationSeconds": 10.0,
    "requestsPerSecond": 10.0,
    "finalizingSeconds": 10.0,
    "cancellingSeconds": 20.0,
    "fileProcessingSeconds": 2.0,
}
CHAT_DEPLOYMENT = {
    "model": {"format": "OpenAI", "name": "gpt-4o-mini", "version": "2024-07-18"},
    "sku": {"name": "GlobalStandard", "capacity": 20},
    "capabilities": {"chatCompletion": "true"},
}


# Helpers ---------------------------------------------------------------------------------------------------------
def token(emulator: RunningEmulator, audience: str) -> str:
    identity = emulator.endpoints["identity"]
    response = requests.get(
        identity["endpoint"],
        params={"api-version": "2019-08-01", "resource": audience},
        headers={"X-IDENTITY-HEADER": identity["header"]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def arm_url(emulator: RunningEmulator, account: str, tail: str = "") -> str:
    arm = emulator.endpoints["arm"]
    return (
        f"{arm['endpoint']}/subscriptions/{arm['subscriptionId']}/resourceGroups/{arm['resourceGroup']}"
        f"/providers/Microsoft.CognitiveServices/accounts/{account}{tail}"
    )


def vault(emulator: RunningEmulator, method: str, path: str, bearer: str, **kwargs: Any) -> requests.Response:
    keyvault = emulator.endpoints["keyVault"]
    return requests.request(
        method,
        f"{keyvault['url']}{path}",
        params={"api-version": "7.4"},
        headers={"Authorization": f"Bearer {bearer}"},
        verify=keyvault["caBundle"],
        timeout=10,
        **kwargs,
    )


def control(emulator: RunningEmulator, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{emulator.control}{path}", timeout=10, **kwargs)


def deployments(emulator: RunningEmulator, resource: str) -> dict[str, dict[str, Any]]:
    response = control(emulator, "GET", f"/resources/{resource}/deployments")
    assert response.status_code == 200
    return {d["name"]: d for d in response.json()["value"]}


def speeds(emulator: RunningEmulator, resource: str) -> dict[str, float]:
    """The current speeds (an empty PATCH changes nothing and answers with all of them)."""
    response = control(emulator, "PATCH", f"/resources/{resource}/speeds", json={})
    assert response.status_code == 200
    return dict(response.json())


def chat(plane: DataPlane, deployment: str) -> requests.Response:
    return plane.request(
        "POST", f"deployments/{deployment}/chat/completions", json={"messages": [{"role": "user", "content": "Hello"}]}
    )


# Request log -----------------------------------------------------------------------------------------------------
def test_every_request_is_logged_in_order_with_service_resource_route_method_status_and_auth(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    file_id = eastus.upload(batch_lines(2))["id"]
    batch_id = eastus.create_batch(file_id).json()["id"]
    eastus.batch(batch_id)
    sweden_files = emulator.resource(SWEDEN)["endpoint"] + "/openai/files"
    requests.get(sweden_files, params={"api-version": API_VERSION}, timeout=10)
    requests.get(sweden_files, params={"api-version": API_VERSION}, headers={"api-key": "wrong"}, timeout=10)
    arm_token = token(emulator, "https://management.azure.com/")
    requests.get(
        arm_url(emulator, EASTUS, "/deployments"),
        params={"api-version": "2023-05-01"},
        headers={"Authorization": f"Bearer {arm_token}"},
        timeout=10,
    )

    # Without the GETs by which the upload helper waits for the file to be processed.
    log = [entry for entry in emulator.requests_log() if entry["route"] != "files.get"]

    assert [(e["service"], e["resource"], e["route"], e["method"], e["status"], e["auth"]) for e in log] == [
        ("openai", EASTUS, "files.upload", "POST", 201, "api-key"),
        ("openai", EASTUS, "batches.create", "POST", 200, "api-key"),
        ("openai", EASTUS, "batches.get", "GET", 200, "api-key"),
        ("openai", SWEDEN, "files.list", "GET", 401, "none"),
        ("openai", SWEDEN, "files.list", "GET", 401, "api-key"),
        ("identity", "*", "token", "GET", 200, "none"),
        ("arm", EASTUS, "deployments.list", "GET", 200, "bearer"),
    ]
    assert [e["seq"] for e in log] == sorted(e["seq"] for e in log)
    assert len({e["seq"] for e in log}) == len(log)
    assert all(e["fault"] is None for e in log)
    assert log[0]["path"] == f"/{EASTUS}/openai/files"
    assert log[0]["query"] == {"api-version": API_VERSION}
    assert log[0]["file"] == {"id": file_id, "filename": "input.jsonl", "bytes": len(batch_lines(2))}
    assert log[1]["body"] == {"input_file_id": file_id, "endpoint": "/chat/completions", "completion_window": "24h"}
    assert log[1]["batch"]["id"] == batch_id
    assert log[2]["path"] == f"/{EASTUS}/openai/batches/{batch_id}"


def test_the_log_tells_bearer_from_other_authorization_schemes(emulator: RunningEmulator) -> None:
    files = emulator.resource(EASTUS)["endpoint"] + "/openai/files"
    for scheme in ("Bearer not-a-jwt", "Basic dXNlcjpwYXNz"):
        requests.get(files, params={"api-version": API_VERSION}, headers={"Authorization": scheme}, timeout=10)

    log = emulator.requests_log()

    assert [(e["auth"], e["status"]) for e in log] == [("bearer", 401), ("other", 401)]
    assert "dXNlcjpwYXNz" not in json.dumps(log)


def test_log_times_are_emulated_time(emulator: RunningEmulator, eastus: DataPlane) -> None:
    before = emulator.clock_now()
    eastus.request("GET", "files")
    eastus.request("GET", "batches")
    after = emulator.clock_now()

    times = [entry["time"] for entry in emulator.requests_log()]

    assert before <= times[0] <= times[1] <= after


def test_the_log_filters_by_service_resource_route_method_and_fault(
    emulator: RunningEmulator, eastus: DataPlane, sweden: DataPlane
) -> None:
    rule = emulator.add_fault(resource=SWEDEN, route="batches.list", status=503)
    eastus.request("GET", "files")
    sweden.request("GET", "files")
    sweden.request("GET", "batches")
    eastus.upload(batch_lines(1))
    token(emulator, "https://vault.azure.net")

    def routes(**filters: str) -> list[tuple[str, str]]:
        return [(e["resource"], e["route"]) for e in emulator.requests_log(**filters)]

    assert routes(service="identity") == [("*", "token")]
    assert routes(resource=SWEDEN) == [(SWEDEN, "files.list"), (SWEDEN, "batches.list")]
    assert routes(route="files.list") == [(EASTUS, "files.list"), (SWEDEN, "files.list")]
    assert routes(method="post") == [(EASTUS, "files.upload")]
    assert routes(service="openai", resource=EASTUS, route="files.list") == [(EASTUS, "files.list")]
    assert routes(fault=rule["id"]) == [(SWEDEN, "batches.list")]
    assert routes(service="arm") == []


def test_an_unknown_log_filter_is_refused(emulator: RunningEmulator) -> None:
    response = control(emulator, "GET", "/requests", params={"statuscode": "500"})

    assert response.status_code == 400
    assert "statuscode" in response.json()["detail"]


def test_a_faulted_request_shows_the_fault_id_and_the_injected_status(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    rule = emulator.add_fault(route="files.list", status=429, retryAfter=1, times=1)
    eastus.request("GET", "files")
    eastus.request("GET", "files")

    faulted, passed = emulator.requests_log(route="files.list")

    assert (faulted["fault"], faulted["status"]) == (rule["id"], 429)
    assert (passed["fault"], passed["status"]) == (None, 200)


def test_clearing_the_log_empties_it_and_logging_goes_on(emulator: RunningEmulator, eastus: DataPlane) -> None:
    eastus.request("GET", "files")
    (first,) = emulator.requests_log()

    assert control(emulator, "DELETE", "/requests").status_code == 204
    assert emulator.requests_log() == []

    eastus.request("GET", "batches")
    (entry,) = emulator.requests_log()
    assert entry["route"] == "batches.list"
    assert entry["seq"] > first["seq"]


def test_control_requests_are_not_logged(emulator: RunningEmulator) -> None:
    control(emulator, "GET", "/health")
    control(emulator, "GET", "/faults")
    control(emulator, "GET", f"/resources/{EASTUS}/batches")

    assert emulator.requests_log() == []


def test_key_vault_secret_values_are_never_logged(emulator: RunningEmulator) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    bearer = token(emulator, "https://vault.azure.net")

    stored = vault(
        emulator,
        "PUT",
        "/secrets/api-key-eastus",
        bearer,
        json={"value": secret, "contentType": "text/plain", "tags": {"owner": "tests"}},
    )
    read = vault(emulator, "GET", "/secrets/api-key-eastus", bearer)

    assert stored.status_code == 200, stored.text
    assert read.json()["value"] == secret
    set_entry, get_entry = emulator.requests_log(service="keyvault")
    assert (set_entry["route"], set_entry["method"], set_entry["status"], set_entry["auth"]) == (
        "secrets.set",
        "PUT",
        200,
        "bearer",
    )
    assert set_entry["body"] == {"value": "<redacted>", "contentType": "text/plain", "tags": {"owner": "tests"}}
    assert get_entry["route"] == "secrets.get"
    log_text = json.dumps(emulator.requests_log())
    assert secret not in log_text
    assert bearer not in log_text


def test_a_body_over_the_size_limit_is_logged_with_its_413(emulator: RunningEmulator) -> None:
    bearer = token(emulator, "https://vault.azure.net")

    response = vault(emulator, "PUT", "/secrets/huge", bearer, json={"value": "x" * (1024 * 1024 + 1)})

    assert response.status_code == 413
    (entry,) = emulator.requests_log(service="keyvault")
    assert (entry["route"], entry["status"], entry["body"]) == ("secrets.set", 413, None)


def test_credentials_are_never_logged(emulator: RunningEmulator, eastus: DataPlane, sweden: DataPlane) -> None:
    eastus.request("GET", "files")
    sweden.upload(batch_lines(1, "gpt-4o-mini-batch"), wait=False)
    cognitive = token(emulator, "https://cognitiveservices.azure.com")
    requests.get(
        emulator.resource(EASTUS)["endpoint"] + "/openai/batches",
        params={"api-version": API_VERSION},
        headers={"Authorization": f"Bearer {cognitive}"},
        timeout=10,
    )

    log_text = json.dumps(emulator.requests_log())

    assert len(emulator.requests_log()) == 4
    for name in (EASTUS, SWEDEN):
        assert emulator.resource(name)["apiKey"] not in log_text
    assert emulator.endpoints["identity"]["header"] not in log_text
    assert cognitive not in log_text


# Reset -----------------------------------------------------------------------------------------------------------
def test_reset_restores_configured_deployments_and_speeds_and_removes_files_batches_and_log(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    configured = deployments(emulator, EASTUS)
    file_id = eastus.upload(batch_lines(1))["id"]
    assert eastus.create_batch(file_id).status_code == 200
    emulator.put_deployment(EASTUS, "extra-chat", **CHAT_DEPLOYMENT)
    assert control(emulator, "DELETE", f"/resources/{EASTUS}/deployments/gpt-4o").status_code == 204
    emulator.set_speeds(EASTUS, validationSeconds=99, requestsPerSecond=1)

    response = control(emulator, "POST", "/reset")

    assert response.status_code == 200
    assert deployments(emulator, EASTUS) == configured
    assert speeds(emulator, EASTUS) == CONFIGURED_SPEEDS
    assert emulator.batches(EASTUS) == []
    assert eastus.request("GET", "files").json()["data"] == []
    assert [e["route"] for e in emulator.requests_log()] == ["files.list"]


def test_reset_keeps_keys_and_the_clock(emulator: RunningEmulator, eastus: DataPlane) -> None:
    clock_before = control(emulator, "GET", "/clock").json()

    emulator.reset()

    assert eastus.request("GET", "files").status_code == 200  # the same api-key still works
    clock_after = control(emulator, "GET", "/clock").json()
    assert (clock_after["epoch"], clock_after["scale"]) == (clock_before["epoch"], clock_before["scale"])
    assert clock_after["now"] >= clock_before["now"]


# Deployments -------------------------------------------------------------------------------------------------
def test_put_deployment_creates_then_replaces_and_the_services_see_it(
    emulator: RunningEmulator, eastus: DataPlane
) -> None:
    created = control(emulator, "PUT", f"/resources/{EASTUS}/deployments/extra-chat", json=CHAT_DEPLOYMENT)
    replaced = control(
        emulator,
        "PUT",
        f"/resources/{EASTUS}/deployments/extra-chat",
        json={**CHAT_DEPLOYMENT, "sku": {"name": "Standard", "capacity": 5}},
    )

    assert created.status_code == 201
    assert created.json()["name"] == "extra-chat"
    assert created.json()["sku"] == {"name": "GlobalStandard", "capacity": 20}
    assert replaced.status_code == 200
    assert deployments(emulator, EASTUS)["extra-chat"]["sku"] == {"name": "Standard", "capacity": 5}
    assert "extra-chat" not in deployments(emulator, SWEDEN)
    assert chat(eastus, "extra-chat").status_code == 200
    arm = requests.get(
        arm_url(emulator, EASTUS, "/deployments/extra-chat"),
        params={"api-version": "2023-05-01"},
        headers={"Authorization": f"Bearer {token(emulator, 'https://management.azure.com/')}"},
        timeout=10,
    )
    assert arm.status_code == 200
    assert arm.json()["sku"] == {"name": "Standard", "capacity": 5}


def test_delete_deployment_removes_it(emulator: RunningEmulator, eastus: DataPlane) -> None:
    assert chat(eastus, "gpt-4o").status_code == 200

    response = control(emulator, "DELETE", f"/resources/{EASTUS}/deployments/gpt-4o")

    assert response.status_code == 204
    assert "gpt-4o" not in deployments(emulator, EASTUS)
    missing = chat(eastus, "gpt-4o")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "DeploymentNotFound"
    again = control(emulator, "DELETE", f"/resources/{EASTUS}/deployments/gpt-4o")
    assert again.status_code == 404
    assert "gpt-4o" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"model": {"name": "gpt-4o"}}, "needs sku.name"),
        ({"sku": {"name": "Standard"}}, "needs model.name"),
        ({**CHAT_DEPLOYMENT, "capabilities": {"chatCompletion": True}}, "capabilities must be an object of strings"),
        ({**CHAT_DEPLOYMENT, "enqueuedTokenLimit": "lots"}, "enqueuedTokenLimit must be a non-negative integer"),
        ({**CHAT_DEPLOYMENT, "sku": {"name": "Standard", "capacity": "x"}}, "sku.capacity must be a non-negative"),
        ([CHAT_DEPLOYMENT], "a deployment (a JSON object)"),
    ],
)
def test_a_bad_deployment_is_refused_with_400(emulator: RunningEmulator, body: Any, problem: str) -> None:
    response = control(emulator, "PUT", f"/resources/{EASTUS}/deployments/broken", json=body)

    assert response.status_code == 400
    assert problem in response.json()["detail"]
    assert "broken" not in deployments(emulator, EASTUS)


def test_a_deployment_name_azure_would_refuse_is_refused(emulator: RunningEmulator) -> None:
    response = control(emulator, "PUT", f"/resources/{EASTUS}/deployments/-leading-hyphen", json=CHAT_DEPLOYMENT)

    assert response.status_code == 400
    assert "not a valid Azure deployment name" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/batches"),
        ("GET", "/deployments"),
        ("PUT", "/deployments/x"),
        ("DELETE", "/deployments/x"),
        ("PATCH", "/speeds"),
    ],
)
def test_control_routes_of_an_unknown_resource_are_404(emulator: RunningEmulator, method: str, path: str) -> None:
    response = control(emulator, method, f"/resources/aoai-nowhere{path}", json={})

    assert response.status_code == 404
    assert response.json() == {"status": 404, "detail": "no resource aoai-nowhere"}


# Speeds ------------------------------------------------------------------------------------------------------
def test_patch_speeds_changes_only_the_given_settings_of_that_resource(emulator: RunningEmulator) -> None:
    response = control(
        emulator, "PATCH", f"/resources/{EASTUS}/speeds", json={"validationSeconds": 0, "requestsPerSecond": 2.5}
    )

    assert response.status_code == 200
    assert response.json() == {**CONFIGURED_SPEEDS, "validationSeconds": 0.0, "requestsPerSecond": 2.5}
    assert speeds(emulator, SWEDEN) == CONFIGURED_SPEEDS


def test_patched_speeds_apply_to_new_uploads(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.set_speeds(EASTUS, fileProcessingSeconds=3600)
    slow = eastus.upload(batch_lines(1), wait=False)
    emulator.set_speeds(EASTUS, fileProcessingSeconds=0)
    fast = eastus.upload(batch_lines(1))

    files = {f["id"]: f["status"] for f in eastus.request("GET", "files").json()["data"]}

    assert files == {slow["id"]: "pending", fast["id"]: "processed"}


@pytest.mark.parametrize(
    ("patch", "problem"),
    [
        ({"validationSeconds": -1}, "speed validationSeconds must be a non-negative number"),
        ({"validationSeconds": "fast"}, "speed validationSeconds must be a non-negative number"),
        ({"finalizingSeconds": True}, "speed finalizingSeconds must be a non-negative number"),
        ({"requestsPerSecond": 0}, "speed requestsPerSecond must be positive"),
        ({"validationSeconds": 5, "requestsPerSecond": 0}, "speed requestsPerSecond must be positive"),
        ({"validation_seconds": 5}, "unknown speed settings: ['validation_seconds']"),
        ({"warpFactor": 9}, "unknown speed settings: ['warpFactor']"),
    ],
)
def test_bad_speeds_are_refused_with_400_and_change_nothing(
    emulator: RunningEmulator, patch: dict[str, Any], problem: str
) -> None:
    response = control(emulator, "PATCH", f"/resources/{EASTUS}/speeds", json=patch)

    assert response.status_code == 400
    assert problem in response.json()["detail"]
    assert speeds(emulator, EASTUS) == CONFIGURED_SPEEDS


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b"5", b"not json", b'{"validationSeconds": NaN}', b'{"validationSeconds": Infinity}']
)
def test_speeds_that_are_not_a_json_object_of_finite_numbers_are_refused(
    emulator: RunningEmulator, body: bytes
) -> None:
    response = control(
        emulator, "PATCH", f"/resources/{EASTUS}/speeds", data=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert speeds(emulator, EASTUS) == CONFIGURED_SPEEDS


# Clock and health --------------------------------------------------------------------------------------------
def test_clock_reports_now_epoch_and_scale_consistent_with_the_time_scale(emulator: RunningEmulator) -> None:
    real_before = time.time()
    clock = control(emulator, "GET", "/clock").json()
    real_after = time.time()

    assert set(clock) == {"now", "epoch", "scale"}
    assert clock["scale"] == TIME_SCALE
    assert clock["epoch"] <= real_before
    assert clock["epoch"] + (real_before - clock["epoch"]) * TIME_SCALE <= clock["now"]
    assert clock["now"] <= clock["epoch"] + (real_after - clock["epoch"]) * TIME_SCALE
    assert emulator.endpoints["emulator"]["clock"] == {
        "DEVSTACK_EPOCH": repr(clock["epoch"]),
        "DEVSTACK_TIME_SCALE": repr(float(TIME_SCALE)),
    }


def test_emulated_time_advances_scale_times_faster_than_real_time(emulator: RunningEmulator) -> None:
    """Two readings of the emulator's clock, bracketed by readings of the real one: the emulated interval is the
    real interval between the emulator's two readings times the scale, whatever that real interval turned out to be."""
    before_first = time.time()
    emulated_start = emulator.clock_now()
    after_first = time.time()
    before_last = after_first

    def four_emulated_seconds_later() -> float | None:  # a fifth of a real second at 20x
        nonlocal before_last
        before_last = time.time()
        reading = emulator.clock_now()
        return reading if reading >= emulated_start + 0.2 * TIME_SCALE else None

    emulated_end = wait_for(four_emulated_seconds_later, what="the emulated clock to advance four seconds")
    after_last = time.time()

    # The emulator read its clock within [before_first, after_first] and then within [before_last, after_last].
    emulated = emulated_end - emulated_start
    assert (before_last - after_first) * TIME_SCALE - ROUNDING <= emulated
    assert emulated <= (after_last - before_first) * TIME_SCALE + ROUNDING


def test_health_lists_the_resources(emulator: RunningEmulator) -> None:
    response = control(emulator, "GET", "/health")

    assert response.json() == {"status": "ok", "resources": [EASTUS, SWEDEN]}
