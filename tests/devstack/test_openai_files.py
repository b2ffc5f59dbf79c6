"""Files on the emulated Azure OpenAI data plane: upload, get, list, delete, content, and resource scoping."""

from __future__ import annotations

import requests

from tests.conftest import RunningEmulator, wait_for
from tests.devstack.conftest import DataPlane, batch_lines


def test_upload_answers_201_pending_with_location_then_processed(eastus: DataPlane) -> None:
    content = batch_lines(3)
    response = eastus.request("POST", "files", data={"purpose": "batch"}, files={"file": ("in.jsonl", content)})

    assert response.status_code == 201
    uploaded = response.json()
    assert uploaded["id"].startswith("file-")
    assert len(uploaded["id"]) == len("file-") + 32
    assert uploaded | {"id": None, "created_at": None} == {
        "id": None,
        "object": "file",
        "bytes": len(content.encode()),
        "created_at": None,
        "filename": "in.jsonl",
        "purpose": "batch",
        "status": "pending",
        "status_details": None,
    }
    assert response.headers["Location"] == f"{eastus.endpoint}/openai/files/{uploaded['id']}"
    wait_for(
        lambda: eastus.request("GET", f"files/{uploaded['id']}").json()["status"] == "processed",
        what="the upload to be processed",
    )


def test_content_returns_the_uploaded_bytes(eastus: DataPlane) -> None:
    content = batch_lines(2).encode()
    file_id = eastus.upload(content)["id"]

    response = eastus.request("GET", f"files/{file_id}/content")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.content == content


def test_list_filters_by_purpose(eastus: DataPlane) -> None:
    batch_file = eastus.upload(batch_lines(1))["id"]
    tuning_file = eastus.upload('{"messages": []}\n', filename="tune.jsonl", purpose="fine-tune")["id"]

    everything = eastus.request("GET", "files").json()
    batch_only = eastus.request("GET", "files", params={"purpose": "batch"}).json()

    assert everything["object"] == "list"
    assert {f["id"] for f in everything["data"]} == {batch_file, tuning_file}
    assert [f["id"] for f in batch_only["data"]] == [batch_file]


def test_delete_removes_the_file(eastus: DataPlane) -> None:
    file_id = eastus.upload(batch_lines(1))["id"]

    deleted = eastus.request("DELETE", f"files/{file_id}")

    assert deleted.status_code == 200
    assert deleted.json() == {"object": "file", "deleted": True, "id": file_id}
    assert eastus.request("GET", f"files/{file_id}").status_code == 404
    assert eastus.request("DELETE", f"files/{file_id}").status_code == 404


def test_unknown_file_is_404_in_azure_error_shape(eastus: DataPlane) -> None:
    response = eastus.request("GET", "files/file-00000000000000000000000000000000")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "notFound"
    assert "file-00000000000000000000000000000000" in response.json()["error"]["message"]


def test_files_are_scoped_to_the_resource_that_uploaded_them(eastus: DataPlane, sweden: DataPlane) -> None:
    file_id = eastus.upload(batch_lines(1))["id"]

    assert sweden.request("GET", f"files/{file_id}").status_code == 404
    assert sweden.request("GET", f"files/{file_id}/content").status_code == 404
    assert file_id not in {f["id"] for f in sweden.request("GET", "files").json()["data"]}


def test_upload_without_purpose_or_file_or_with_unknown_purpose_is_400(eastus: DataPlane) -> None:
    no_purpose = eastus.request("POST", "files", files={"file": ("in.jsonl", "x")})
    bad_purpose = eastus.request("POST", "files", data={"purpose": "batch_output"}, files={"file": ("in.jsonl", "x")})
    no_file = eastus.request("POST", "files", data={"purpose": "batch"}, files={"other": ("in.jsonl", "x")})
    not_multipart = eastus.request("POST", "files", json={"purpose": "batch"})

    assert (no_purpose.status_code, no_purpose.json()["error"]["param"]) == (400, "purpose")
    assert (bad_purpose.status_code, bad_purpose.json()["error"]["param"]) == (400, "purpose")
    assert (no_file.status_code, no_file.json()["error"]["param"]) == (400, "file")
    assert not_multipart.status_code == 400
    assert eastus.request("GET", "files").json()["data"] == []


def test_api_version_other_than_2024_10_21_is_404_resource_not_found(eastus: DataPlane) -> None:
    for params in ({"api-version": "2024-07-01-preview"}, {"api-version": ""}):
        response = eastus.session.get(eastus.url("files"), params=params, timeout=10)
        assert response.status_code == 404
        assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}
    missing = eastus.session.get(eastus.url("files"), timeout=10)
    assert missing.status_code == 404


def test_unknown_route_is_404_resource_not_found(eastus: DataPlane) -> None:
    response = eastus.request("GET", "fine_tuning/jobs/ftjob-1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Resource not found"


def test_wrong_api_key_is_401_with_azure_message(emulator: RunningEmulator) -> None:
    endpoint = emulator.resource("aoai-devstack-eastus")["endpoint"]
    other_key = emulator.resource("aoai-devstack-swedencentral")["apiKey"]
    for headers in ({"api-key": other_key}, {}):
        response = requests.get(
            f"{endpoint}/openai/files", params={"api-version": "2024-10-21"}, headers=headers, timeout=10
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "401"
        assert response.json()["error"]["message"].startswith("Access denied due to invalid subscription key")


def test_bad_bearer_token_is_401_with_unwrapped_body(emulator: RunningEmulator) -> None:
    endpoint = emulator.resource()["endpoint"]
    response = requests.get(
        f"{endpoint}/openai/files",
        params={"api-version": "2024-10-21"},
        headers={"Authorization": "Bearer not-a-token"},
        timeout=10,
    )

    assert response.status_code == 401
    assert response.json()["statusCode"] == 401
    assert "audience is incorrect (https://cognitiveservices.azure.com)" in response.json()["message"]


def test_unknown_resource_is_404(emulator: RunningEmulator) -> None:
    base = emulator.endpoints["arm"]["endpoint"]
    response = requests.get(
        f"{base}/no-such-resource/openai/files",
        params={"api-version": "2024-10-21"},
        headers={"api-key": "x"},
        timeout=10,
    )
    assert response.status_code == 404
