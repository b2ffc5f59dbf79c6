"""The v1 API (`/openai/v1/...`) beside api-version 2024-10-21: one resource seen through both, with v1's own paths,
api-version handling, auth, chat with the deployment in `model`, batch endpoint and line urls, and error shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from devstack.emulator.batches import ResourceState
from devstack.emulator.config import EmulatorConfig
from tests.conftest import RunningEmulator, identity_token, wait_for
from tests.devstack.conftest import DataPlane, batch_lines

EASTUS = "aoai-devstack-eastus"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
MESSAGES = [{"role": "user", "content": "Name a prime number."}]


def run_to_end(plane: DataPlane, batch_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (b := plane.batch(batch_id))["status"] in TERMINAL and b, timeout=30, what=f"batch {batch_id} to end"
    )


def create(plane: DataPlane, content: str, **body: Any) -> requests.Response:
    file_id = plane.upload(content)["id"]
    return plane.request(
        "POST",
        "batches",
        json={"input_file_id": file_id, "endpoint": "/chat/completions", "completion_window": "24h", **body},
    )


# Files ---------------------------------------------------------------------------------------------------------
def test_upload_answers_200_without_location_as_the_v1_spec_says(eastus_v1: DataPlane) -> None:
    content = batch_lines(2)

    response = eastus_v1.request("POST", "files", data={"purpose": "batch"}, files={"file": ("in.jsonl", content)})

    assert response.status_code == 200
    assert "Location" not in response.headers
    uploaded = response.json()
    assert uploaded["id"].startswith("file-")
    assert (uploaded["object"], uploaded["purpose"], uploaded["bytes"]) == ("file", "batch", len(content))
    assert uploaded["status"] == "pending"
    assert "expires_at" not in uploaded


def test_files_are_one_set_seen_through_both_apis(eastus: DataPlane, eastus_v1: DataPlane) -> None:
    through_v1 = eastus_v1.upload(batch_lines(1))["id"]
    through_ga = eastus.upload(batch_lines(2))["id"]

    ga_view = eastus.request("GET", f"files/{through_v1}")
    v1_list = eastus_v1.request("GET", "files").json()
    v1_content = eastus_v1.request("GET", f"files/{through_ga}/content")
    deleted = eastus_v1.request("DELETE", f"files/{through_ga}")

    assert ga_view.status_code == 200
    assert ga_view.json()["id"] == through_v1
    assert {f["id"] for f in v1_list["data"]} == {through_v1, through_ga}
    assert v1_content.content == batch_lines(2).encode()
    assert deleted.json() == {"deleted": True, "id": through_ga, "object": "file"}
    assert eastus.request("GET", f"files/{through_ga}").status_code == 404


def test_list_has_the_v1_paging_fields_and_ga_keeps_its_shape(eastus: DataPlane, eastus_v1: DataPlane) -> None:
    first = eastus_v1.upload(batch_lines(1))["id"]
    second = eastus_v1.upload(batch_lines(1))["id"]

    v1_list = eastus_v1.request("GET", "files").json()
    ga_list = eastus.request("GET", "files").json()

    assert [f["id"] for f in v1_list["data"]] == [first, second]
    assert (v1_list["object"], v1_list["first_id"], v1_list["last_id"], v1_list["has_more"]) == (
        "list",
        first,
        second,
        False,
    )
    assert set(ga_list) == {"data", "object"}


@pytest.mark.parametrize("style", ["openai-sdk", "learn-curl"])
def test_upload_with_expires_after_reports_expires_at(eastus_v1: DataPlane, style: str) -> None:
    fields = (
        {"expires_after[anchor]": "created_at", "expires_after[seconds]": "1209600"}
        if style == "openai-sdk"
        else {"expires_after.anchor": "created_at", "expires_after.seconds": "1209600"}
    )

    response = eastus_v1.request(
        "POST", "files", data={"purpose": "batch", **fields}, files={"file": ("in.jsonl", batch_lines(1))}
    )

    assert response.status_code == 200
    uploaded = response.json()
    assert uploaded["expires_at"] == uploaded["created_at"] + 1209600
    assert eastus_v1.request("GET", f"files/{uploaded['id']}").json()["expires_at"] == uploaded["expires_at"]


@pytest.mark.parametrize(
    "fields",
    [
        {"expires_after[anchor]": "created_at", "expires_after[seconds]": "1209599"},
        {"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"},
        {"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "1209600"},
        {"expires_after[seconds]": "1209600"},
        {"expires_after[anchor]": "created_at", "expires_after[seconds]": "two weeks"},
    ],
)
def test_upload_with_expiry_outside_14_to_30_days_is_400(
    eastus_v1: DataPlane, emulator: RunningEmulator, fields: dict[str, str]
) -> None:
    response = eastus_v1.request(
        "POST", "files", data={"purpose": "batch", **fields}, files={"file": ("in.jsonl", batch_lines(1))}
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "expires_after"
    assert eastus_v1.request("GET", "files").json()["data"] == []


def test_ga_ignores_expires_after(eastus: DataPlane) -> None:
    response = eastus.request(
        "POST",
        "files",
        data={"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "1"},
        files={"file": ("in.jsonl", batch_lines(1))},
    )

    assert response.status_code == 201
    assert "expires_at" not in response.json()


def test_files_past_their_expiry_are_deleted() -> None:
    config = EmulatorConfig.load()
    resource = ResourceState(config.resources[EASTUS], config)
    kept = resource.add_file("kept.jsonl", "batch", b"{}\n", 1000.0)
    expiring = resource.add_file("expiring.jsonl", "batch", b"{}\n", 1000.0, expires_after=1209600)

    resource.advance_all(1000.0 + 1209599)
    assert set(resource.files) == {kept.id, expiring.id}
    resource.advance_all(1000.0 + 1209600)
    assert set(resource.files) == {kept.id}


def test_files_set_to_expire_do_not_count_against_the_500_file_limit(eastus: DataPlane, eastus_v1: DataPlane) -> None:
    for i in range(500):
        eastus.upload(f"{i}\n", wait=False)

    refused = eastus.request("POST", "files", data={"purpose": "batch"}, files={"file": ("x.jsonl", "x\n")})
    expiring = eastus_v1.request(
        "POST",
        "files",
        data={"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "1209600"},
        files={"file": ("x.jsonl", "x\n")},
    )

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "quotaExceeded"
    assert "limit of 500 batch files" in refused.json()["error"]["message"]
    assert expiring.status_code == 200


def test_unknown_file_is_404_in_the_v1_error_shape(eastus_v1: DataPlane) -> None:
    response = eastus_v1.request("GET", "files/file-0123456789abcdef0123456789abcdef")

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "notFound",
            "message": "File with id 'file-0123456789abcdef0123456789abcdef' was not found.",
            "param": None,
            "type": "error",
        }
    }


# Batches -------------------------------------------------------------------------------------------------------
def test_batch_with_v1_line_urls_runs_to_completion(eastus_v1: DataPlane) -> None:
    # Learn's v1 example: lines say "/v1/chat/completions", the create body "/chat/completions".
    created = create(eastus_v1, batch_lines(4, url="/v1/chat/completions"), metadata={"run": "v1"})

    assert created.status_code == 200
    batch = created.json()
    assert (batch["status"], batch["endpoint"], batch["metadata"]) == ("validating", "/chat/completions", {"run": "v1"})
    assert batch["object"] == "batch"
    done = run_to_end(eastus_v1, batch["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"completed": 4, "failed": 0, "total": 4}
    lines = eastus_v1.content_lines(done["output_file_id"])
    assert sorted(line["custom_id"] for line in lines) == [f"task-{i}" for i in range(4)]
    assert all(line["response"]["status_code"] == 200 for line in lines)


def test_batch_lines_may_mix_both_urls_on_v1(eastus_v1: DataPlane) -> None:
    content = batch_lines(2, url="/v1/chat/completions") + batch_lines(2).replace("task-", "other-")

    done = run_to_end(eastus_v1, create(eastus_v1, content).json()["id"])

    assert done["status"] == "completed"
    assert done["request_counts"]["completed"] == 4


def test_the_sdk_endpoint_value_is_taken_and_reported_as_azure_does(eastus_v1: DataPlane) -> None:
    created = create(eastus_v1, batch_lines(1, url="/v1/chat/completions"), endpoint="/v1/chat/completions")

    assert created.status_code == 200
    assert created.json()["endpoint"] == "/chat/completions"


@pytest.mark.parametrize("endpoint", ["/v1/embeddings", "/embeddings", "/v1/responses", "chat/completions"])
def test_other_endpoints_are_400_naming_endpoint(
    eastus_v1: DataPlane, emulator: RunningEmulator, endpoint: str
) -> None:
    response = create(eastus_v1, batch_lines(1), endpoint=endpoint)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "endpoint"
    assert response.json()["error"]["type"] == "error"
    assert emulator.batches(EASTUS) == []


def test_a_line_url_other_than_chat_completions_fails_validation_with_url_mismatch(eastus_v1: DataPlane) -> None:
    content = batch_lines(1, url="/v1/chat/completions") + batch_lines(1, url="/v1/embeddings").replace("-0", "-1")

    failed = run_to_end(eastus_v1, create(eastus_v1, content).json()["id"])

    assert failed["status"] == "failed"
    [error] = failed["errors"]["data"]
    assert (error["code"], error["line"], error["param"]) == ("url_mismatch", 2, "url")
    assert "'/v1/embeddings'" in error["message"]


def test_ga_still_refuses_v1_line_urls(eastus: DataPlane) -> None:
    file_id = eastus.upload(batch_lines(1, url="/v1/chat/completions"))["id"]

    failed = run_to_end(eastus, eastus.create_batch(file_id).json()["id"])

    assert failed["status"] == "failed"
    assert failed["errors"]["data"][0]["code"] == "url_mismatch"


def test_ga_refuses_the_v1_endpoint_value(eastus: DataPlane) -> None:
    response = eastus.create_batch(eastus.upload(batch_lines(1))["id"], endpoint="/v1/chat/completions")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "endpoint"


def test_batches_are_one_set_seen_through_both_apis(eastus: DataPlane, eastus_v1: DataPlane) -> None:
    through_v1 = create(eastus_v1, batch_lines(1)).json()["id"]
    through_ga = eastus.create_batch(eastus.upload(batch_lines(1))["id"]).json()["id"]

    v1_ids = [b["id"] for b in eastus_v1.request("GET", "batches").json()["data"]]
    ga_ids = [b["id"] for b in eastus.request("GET", "batches").json()["data"]]

    assert v1_ids == ga_ids == [through_ga, through_v1]
    assert eastus.batch(through_v1)["id"] == through_v1


def test_list_pages_with_after_and_limit(eastus_v1: DataPlane) -> None:
    ids = [create(eastus_v1, batch_lines(1)).json()["id"] for _ in range(3)]

    first = eastus_v1.request("GET", "batches", params={"limit": "2"}).json()
    rest = eastus_v1.request("GET", "batches", params={"limit": "2", "after": first["last_id"]}).json()

    assert [b["id"] for b in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    assert [b["id"] for b in rest["data"]] == ids[:1]
    assert rest["has_more"] is False


def test_cancel_through_v1(eastus_v1: DataPlane) -> None:
    batch_id = create(eastus_v1, batch_lines(3)).json()["id"]

    cancelling = eastus_v1.request("POST", f"batches/{batch_id}/cancel")
    cancelled = run_to_end(eastus_v1, batch_id)
    again = eastus_v1.request("POST", f"batches/{batch_id}/cancel")

    assert cancelling.status_code == 200
    assert cancelling.json()["status"] == "cancelling"
    assert cancelled["status"] == "cancelled"
    assert again.status_code == 409
    assert again.json()["error"] == {
        "code": "conflict",
        "message": "Cannot cancel a batch with status 'cancelled'.",
        "param": None,
        "type": "error",
    }


def test_output_expires_after_gives_the_result_files_an_expiry(eastus_v1: DataPlane) -> None:
    created = create(eastus_v1, batch_lines(2), output_expires_after={"seconds": 1209600, "anchor": "created_at"})

    done = run_to_end(eastus_v1, created.json()["id"])

    for file_id in (done["output_file_id"], done["error_file_id"]):
        result = eastus_v1.request("GET", f"files/{file_id}").json()
        assert result["expires_at"] == result["created_at"] + 1209600


def test_output_expires_after_out_of_range_is_400(eastus_v1: DataPlane, emulator: RunningEmulator) -> None:
    response = create(eastus_v1, batch_lines(1), output_expires_after={"seconds": 3600, "anchor": "created_at"})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "output_expires_after"
    assert emulator.batches(EASTUS) == []


# Chat ----------------------------------------------------------------------------------------------------------
def test_chat_takes_the_deployment_from_the_body(eastus: DataPlane, eastus_v1: DataPlane) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES}

    v1_reply = eastus_v1.request("POST", "chat/completions", json=body)
    ga_reply = eastus.request("POST", "deployments/gpt-4o/chat/completions", json=body)

    assert v1_reply.status_code == 200
    reply = v1_reply.json()
    assert reply["object"] == "chat.completion"
    assert reply["model"] == "gpt-4o-2024-08-06"
    assert reply["choices"][0]["message"]["content"] == ga_reply.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"messages": MESSAGES}, 400, "invalid_request_error", "model"),
        ({"model": "no-such-deployment", "messages": MESSAGES}, 404, "DeploymentNotFound", None),
        ({"model": "gpt-4o-batch", "messages": MESSAGES}, 400, "OperationNotSupported", None),
        ({"model": "gpt-4o"}, 400, "invalid_request_error", "messages"),
    ],
)
def test_chat_errors_are_in_the_v1_shape(
    eastus_v1: DataPlane, body: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    response = eastus_v1.request("POST", "chat/completions", json=body)

    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert set(error) == {"code", "message", "param", "type"}


def test_the_ga_chat_route_is_not_a_v1_route(eastus_v1: DataPlane) -> None:
    response = eastus_v1.request("POST", "deployments/gpt-4o/chat/completions", json={"messages": MESSAGES})

    assert response.status_code == 404


# Routes, api-version, auth, request log ------------------------------------------------------------------------
def test_unknown_route_is_404_in_the_v1_shape(eastus_v1: DataPlane) -> None:
    response = eastus_v1.request("GET", "assistants")

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "404", "message": "Resource not found", "param": None, "type": "error"}
    }


@pytest.mark.parametrize("version", ["v1", "preview"])
def test_api_version_v1_or_preview_is_accepted(eastus_v1: DataPlane, version: str) -> None:
    assert eastus_v1.request("GET", "files", params={"api-version": version}).status_code == 200


@pytest.mark.parametrize("version", ["2024-10-21", "2025-04-01-preview", ""])
def test_other_api_versions_are_refused_on_v1(eastus_v1: DataPlane, version: str) -> None:
    response = eastus_v1.request("GET", "files", params={"api-version": version})

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Resource not found"


def test_the_api_key_is_also_taken_as_a_bearer_token_on_v1_only(emulator: RunningEmulator) -> None:
    resource = emulator.resource(EASTUS)
    headers = {"Authorization": f"Bearer {resource['apiKey']}"}

    v1 = requests.get(f"{resource['endpoint']}/openai/v1/files", headers=headers, timeout=10)
    ga = requests.get(
        f"{resource['endpoint']}/openai/files", params={"api-version": "2024-10-21"}, headers=headers, timeout=10
    )

    assert v1.status_code == 200
    assert ga.status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer not-the-key"}, {"api-key": "not-the-key"}, {}],
    ids=["wrong-key-as-bearer", "wrong-api-key", "none"],
)
def test_a_wrong_or_missing_key_is_401(emulator: RunningEmulator, headers: dict[str, str]) -> None:
    response = requests.get(f"{emulator.resource(EASTUS)['endpoint']}/openai/v1/files", headers=headers, timeout=10)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "401"


def test_an_entra_token_is_accepted_and_one_for_another_audience_refused(emulator: RunningEmulator) -> None:
    url = f"{emulator.resource(EASTUS)['endpoint']}/openai/v1/files"
    good = identity_token(emulator, "https://cognitiveservices.azure.com")
    wrong = identity_token(emulator, "https://vault.azure.net")

    accepted = requests.get(url, headers={"Authorization": f"Bearer {good}"}, timeout=10)
    refused = requests.get(url, headers={"Authorization": f"Bearer {wrong}"}, timeout=10)

    assert accepted.status_code == 200
    assert refused.status_code == 401
    assert refused.json()["statusCode"] == 401


def test_v1_requests_are_logged_under_v1_route_names(
    eastus: DataPlane, eastus_v1: DataPlane, emulator: RunningEmulator
) -> None:
    create(eastus_v1, batch_lines(1))
    eastus.create_batch(eastus.upload(batch_lines(1))["id"])

    v1_creates = emulator.requests_log(route="v1.batches.create")
    ga_creates = emulator.requests_log(route="batches.create")

    assert [(e["path"], e["service"]) for e in v1_creates] == [("/aoai-devstack-eastus/openai/v1/batches", "openai")]
    assert [e["path"] for e in ga_creates] == ["/aoai-devstack-eastus/openai/batches"]
    assert [e["route"] for e in emulator.requests_log(method="POST", resource=EASTUS)] == [
        "v1.files.upload",
        "v1.batches.create",
        "files.upload",
        "batches.create",
    ]


def test_faults_target_v1_routes_by_their_names(
    eastus: DataPlane, eastus_v1: DataPlane, emulator: RunningEmulator
) -> None:
    emulator.add_fault(service="openai", route="v1.batches.list", status=503)

    assert eastus_v1.request("GET", "batches").status_code == 503
    assert eastus.request("GET", "batches").status_code == 200


def test_resource_settings_include_blob_storage(emulator: RunningEmulator) -> None:
    url = f"{emulator.control}/resources/{EASTUS}"

    turned_on = requests.patch(url, json={"blobStorage": True}, timeout=10)
    refused = requests.patch(url, json={"blobStorage": "yes", "quotaCheck": "validation"}, timeout=10)
    after = requests.patch(url, json={}, timeout=10)

    assert turned_on.json() == {"quotaCheck": "create", "blobStorage": True}
    assert refused.status_code == 400
    assert "blobStorage must be true or false" in json.dumps(refused.json())
    assert after.json() == {"quotaCheck": "create", "blobStorage": True}
    emulator.reset()
    assert requests.patch(url, json={}, timeout=10).json()["blobStorage"] is False
