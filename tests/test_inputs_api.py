"""Inputs of Batch Jobs over the app's HTTP triggers, against the emulators and Azurite: built from JSONL, requests
or prompts, checked line by line as Azure will, staged in Blob Storage and uploaded; and checked again before a run
starts (pre-flight)."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import azure.functions as func
import pytest

from shared import services
from tests.conftest import RunningEmulator, RunningUserStorage, wait_for
from tests.devstack.conftest import DataPlane, batch_lines
from tests.functions import call_http, json_of
from tests.test_jobs_api import assert_problem, import_now, patch_job
from tests.test_openapi import reply_validator

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

pytestmark = pytest.mark.usefixtures("app_settings")

JOB = "gpt-4o-batch::batch"
RESOURCE = "aoai-devstack-eastus"
INPUT_REPLY = reply_validator("/jobs/{externalId}/inputs", "post", "201")


def post_input(
    body: Any = None, *, jsonl: bytes | None = None, job: str = JOB, content_type: str | None = None
) -> func.HttpResponse:
    if jsonl is not None:
        headers = {"Content-Type": content_type or "application/jsonl"}
        return call_http(
            "create_input",
            "POST",
            f"jobs/{job}/inputs",
            raw_body=jsonl,
            headers=headers,
            route_params={"externalId": job},
        )
    return call_http("create_input", "POST", f"jobs/{job}/inputs", body=body, route_params={"externalId": job})


def created(response: func.HttpResponse) -> dict[str, Any]:
    assert response.status_code == 201, response.get_body()
    body: dict[str, Any] = json_of(response)
    assert [e.message for e in INPUT_REPLY.iter_errors(body)] == []
    assert response.headers["Location"].endswith(f"/api/inputs/{body['id']}")
    return body


@pytest.fixture
def eastus(emulator: RunningEmulator) -> DataPlane:
    resource = emulator.resource(RESOURCE)
    return DataPlane(resource["endpoint"], resource["apiKey"])


@pytest.fixture(autouse=True)
def imported(app_settings: dict[str, str], emulator: RunningEmulator) -> None:
    assert import_now().status_code == 200


def uploaded_lines(eastus: DataPlane, file_id: str) -> list[dict[str, Any]]:
    return eastus.content_lines(file_id)


def test_a_jsonl_body_is_checked_staged_uploaded_and_processed(emulator: RunningEmulator, eastus: DataPlane) -> None:
    content = batch_lines(3, "gpt-4o-batch")

    body = created(post_input(jsonl=content.encode()))

    assert (body["jobId"], body["resource"], body["requests"], body["status"]) == (JOB, RESOURCE, 3, "processed")
    assert body["bytes"] > 0
    # each "Summarise item {i}": S 1, ummarise 8 at ½, " item" 2, " " before a digit 1, the digit 1; 4 + 3 framing
    assert body["estimatedTokens"] == 3 * (9 + 4 + 3)
    (upload,) = emulator.requests_log(service="openai", route="files.upload")
    assert upload["status"] == 201
    file = eastus.request("GET", f"files/{body['fileId']}").json()
    assert (file["purpose"], file["status"], file["bytes"]) == ("batch", "processed", body["bytes"])
    assert [line["custom_id"] for line in uploaded_lines(eastus, body["fileId"])] == [
        json.loads(line)["custom_id"] for line in content.splitlines()
    ]
    staged = b"".join(services.staging().chunks(f"inputs/{body['id']}.jsonl"))
    assert staged == b"".join(
        line.encode() + b"\n"
        for line in (json.dumps(json.loads(x), separators=(",", ":")) for x in content.splitlines())
    )
    again = call_http("get_input", "GET", f"inputs/{body['id']}", route_params={"inputId": body["id"]})
    assert json_of(again) == body


def test_requests_get_ids_and_the_deployment_as_model(eastus: DataPlane) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    body = created(
        post_input(
            {"requests": [{"body": {"messages": messages}}, {"custom_id": "mine", "body": {"messages": messages}}]}
        )
    )

    lines = sorted(uploaded_lines(eastus, body["fileId"]), key=lambda line: line["custom_id"])
    assert [line["custom_id"] for line in lines] == ["mine", "request-1"]
    assert {line["body"]["model"] for line in lines} == {"gpt-4o-batch"}
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/chat/completions")}


def test_prompts_become_lines_from_the_jobs_attributes(eastus: DataPlane) -> None:
    assert patch_job(JOB, {"attributes": {"systemPrompt": "Answer in French.", "maxTokens": 50}}).status_code == 200

    body = created(
        post_input(
            {"prompts": [{"user": "Hi"}, {"id": "q2", "user": "Bye", "system": "Be terse."}], "temperature": 0.2}
        )
    )

    lines = {line["custom_id"]: line["body"] for line in uploaded_lines(eastus, body["fileId"])}
    assert lines["prompt-1"]["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
    ]
    assert lines["q2"]["messages"][0] == {"role": "system", "content": "Be terse."}
    assert {b["max_tokens"] for b in lines.values()} == {50}
    assert {b["temperature"] for b in lines.values()} == {0.2}
    assert {b["model"] for b in lines.values()} == {"gpt-4o-batch"}


def line(custom_id: str = "a", **changes: Any) -> dict[str, Any]:
    base = {"custom_id": custom_id, "method": "POST", "url": "/chat/completions"}
    base["body"] = {"model": "gpt-4o-batch", "messages": [{"role": "user", "content": "hi"}]}
    return {**base, **changes}


def test_an_invalid_input_lists_its_problems_by_line_and_uploads_nothing(emulator: RunningEmulator) -> None:
    lines = [
        json.dumps(line("a")),
        "{not json",
        json.dumps(line("a")),  # a duplicate id
        json.dumps(line("b", method="GET")),
        json.dumps(line("c", url="/embeddings")),
        json.dumps(line("d", body={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})),
        json.dumps(line("e", body={"messages": []})),
        "[1, 2]",
        json.dumps({"method": "POST", "url": "/chat/completions", "body": {}}),
    ]

    response = post_input(jsonl="\n".join(lines).encode())

    problem = assert_problem(
        response,
        400,
        "line 2.line",
        "line 3.custom_id",
        "line 4.method",
        "line 5.url",
        "line 6.body.model",
        "line 7.body.messages",
        "line 8.line",
        "line 9.custom_id",
    )
    assert (problem["code"], problem["problemCount"]) == ("invalid-input", 8)
    assert problem["problems"][0] == {"line": 2, "field": "line", "message": "is not valid JSON"}
    assert emulator.requests_log(service="openai", route="files.upload") == []
    assert list(services.staging().container.list_blobs(name_starts_with="inputs/")) == []


def test_an_input_azure_was_still_processing_reads_as_azure_has_it_now(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shared.inputs

    monkeypatch.setattr(shared.inputs, "PROCESSING_WAIT_SECONDS", 0.0)  # the upload answers without waiting
    emulator.set_speeds(RESOURCE, fileProcessingSeconds=40)  # a real second at the shared emulator's pace
    built = created(post_input({"prompts": [{"user": "x"}]}))
    assert built["status"] == "pending"

    def read() -> dict[str, Any]:
        return json_of(call_http("get_input", "GET", f"inputs/{built['id']}", route_params={"inputId": built["id"]}))

    seen = wait_for(lambda: (now := read())["status"] != "pending" and now, what="the input read as processed")

    assert seen == built | {"status": "processed"}
    stored = services.input_records().get(built["id"])
    assert stored is not None
    assert stored.status == "processed"  # written back: the next read asks Azure nothing
    looked = len(emulator.requests_log(service="openai", route="files.get"))
    assert read()["status"] == "processed"
    assert len(emulator.requests_log(service="openai", route="files.get")) == looked


def test_an_input_larger_than_one_file_is_staged_not_uploaded(emulator: RunningEmulator) -> None:
    built = created(post_input({"prompts": [{"user": "x"} for _ in range(100_001)]}))

    assert (built["requests"], built["fileId"], built["status"]) == (100_001, None, "staged")
    assert emulator.requests_log(service="openai", route="files.upload") == []  # its runs' shards upload their parts
    read = call_http("get_input", "GET", f"inputs/{built['id']}", route_params={"inputId": built["id"]})
    assert json_of(read) == built


def test_an_input_over_the_apps_limits_is_refused_naming_the_limit(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shared.inputs

    monkeypatch.setattr(shared.inputs, "MAX_INPUT_REQUESTS", 5)
    listed = assert_problem(post_input({"prompts": [{"user": "x"} for _ in range(6)]}), 400, "prompts")
    lines = b"\n".join(
        json.dumps(
            {
                "custom_id": f"r{n}",
                "method": "POST",
                "url": "/chat/completions",
                "body": {"messages": [{"role": "user", "content": "x"}]},
            }
        ).encode()
        for n in range(6)
    )
    streamed = assert_problem(post_input(jsonl=lines), 400, "requests")

    assert "5 items" in json.dumps(listed)
    assert "5 requests" in json.dumps(streamed)
    assert emulator.requests_log(service="openai", route="files.upload") == []
    assert list(services.staging().container.list_blobs(name_starts_with="inputs/")) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"requests": [], "prompts": []}, "body"),
        ({}, "body"),
        ({"requests": []}, "requests"),
        ({"prompts": [{"user": "x"}], "maxTokens": 0}, "maxTokens"),
        ({"prompts": [{"user": "x"}], "model": "gpt-4o"}, "model"),
        ({"blobUrl": "http://acct.blob.core.windows.net/c/b"}, "blobUrl"),
        ({"blobUrl": "https://evil.example.com/c/b"}, "blobUrl"),
        ({"blobUrl": "https://acct.blob.core.windows.net/c/b?sv=2024&sig=x"}, "blobUrl"),
        ({"blobUrl": "https://acct.blob.core.windows.net/only-a-container"}, "blobUrl"),
    ],
)
def test_bad_input_requests_are_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    assert_problem(post_input(body), 400, field)


def test_inputs_are_for_batch_jobs_and_jsonl_or_json_bodies() -> None:
    assert_problem(post_input({"prompts": [{"user": "x"}]}, job="gpt-4o"), 409)
    assert_problem(post_input(jsonl=b"x", content_type="text/plain"), 415, "Content-Type")
    assert_problem(call_http("get_input", "GET", "inputs/nope", route_params={"inputId": "nope"}), 400, "id")
    assert_problem(call_http("get_input", "GET", "inputs/" + "0" * 32, route_params={"inputId": "0" * 32}), 404)


# Pre-flight: what a run names as its input is checked before any orchestration starts ------------------------------


def start(body: dict[str, Any], job: str = JOB) -> func.HttpResponse:
    # The client binding points at a port nobody listens on: a start that passed pre-flight would show as 500.
    return call_http("start_run", "POST", f"jobs/{job}/runs", body=body, route_params={"externalId": job})


def test_an_unknown_file_id_is_404_naming_it() -> None:
    problem = assert_problem(start({"inputFileId": "file-doesnotexist"}), 404, "inputFileId")
    assert "belong to the resource" in problem["detail"]


def test_a_file_of_another_purpose_is_400_naming_it(eastus: DataPlane) -> None:
    file_id = eastus.upload(batch_lines(2), purpose="fine-tune")["id"]

    assert_problem(start({"inputFileId": file_id}), 400, "inputFileId")


def test_a_file_still_processing_is_409(emulator: RunningEmulator, eastus: DataPlane) -> None:
    emulator.set_speeds(RESOURCE, fileProcessingSeconds=3600)
    file_id = eastus.upload(batch_lines(2), wait=False)["id"]

    problem = assert_problem(start({"inputFileId": file_id}), 409, "inputFileId")
    assert problem["code"] == "input-file-not-ready"


def test_a_missing_secret_is_404_naming_it() -> None:
    assert_problem(start({"inputFileSecret": "no-such-secret"}), 404, "inputFileSecret")


def test_an_unknown_input_is_404_and_one_of_another_job_409(eastus: DataPlane) -> None:
    other = created(post_input({"prompts": [{"user": "x"}]}, job="gpt-4o-mini-dz-batch::batch"))

    assert_problem(start({"inputId": "0" * 32}), 404, "inputId")
    assert_problem(start({"inputId": other["id"]}), 409, "inputId")
    assert_problem(start({"inputId": "not-an-id"}), 400, "inputId")
    assert_problem(start({"inputId": other["id"], "inputFileId": "file-x"}), 400, "inputId")


# Inputs from a user's blob, read with the app's identity -----------------------------------------------------------


@pytest.fixture
def blob_inputs(user_storage: RunningUserStorage, monkeypatch: pytest.MonkeyPatch) -> ContainerClient:
    """A container of the user's storage account the app may read from (INPUT_BLOB_ENDPOINTS names it locally)."""
    from azure.storage.blob import BlobServiceClient

    monkeypatch.setenv("INPUT_BLOB_ENDPOINTS", user_storage.blob_endpoint)
    services.reset()
    service = BlobServiceClient.from_connection_string(
        user_storage.connection_string, connection_verify=user_storage.ca_bundle
    )
    return service.create_container(f"inputs{uuid.uuid4().hex[:12]}")


def test_a_blob_input_is_read_with_the_apps_identity_and_uploaded(
    blob_inputs: ContainerClient, user_storage: RunningUserStorage, eastus: DataPlane, emulator: RunningEmulator
) -> None:
    content = batch_lines(30, "gpt-4o-batch").encode()
    blob_inputs.upload_blob("requests.jsonl", content)
    url = user_storage.blob_url(blob_inputs.container_name, "requests.jsonl")

    body = created(post_input({"blobUrl": url}))

    assert (body["requests"], body["status"]) == (30, "processed")
    assert len(uploaded_lines(eastus, body["fileId"])) == 30
    asked = [e for e in emulator.requests_log(service="identity") if "storage" in json.dumps(e.get("query"))]
    assert asked  # the app's own identity read it: a token for Azure Storage


def test_a_blob_that_does_not_exist_is_404_naming_blob_url(
    blob_inputs: ContainerClient, user_storage: RunningUserStorage
) -> None:
    url = user_storage.blob_url(blob_inputs.container_name, "missing.jsonl")

    assert_problem(post_input({"blobUrl": url}), 404, "blobUrl")


def test_an_invalid_blob_input_lists_its_problems_and_uploads_nothing(
    blob_inputs: ContainerClient, user_storage: RunningUserStorage, emulator: RunningEmulator
) -> None:
    blob_inputs.upload_blob("bad.jsonl", b'{"custom_id": "a"}\n')

    problem = assert_problem(
        post_input({"blobUrl": user_storage.blob_url(blob_inputs.container_name, "bad.jsonl")}), 400, "line 1.method"
    )

    assert problem["problemCount"] == 1
    assert emulator.requests_log(service="openai", route="files.upload") == []


def test_a_blob_endpoint_the_settings_do_not_name_is_refused_before_any_token_is_sent(
    user_storage: RunningUserStorage, emulator: RunningEmulator
) -> None:
    url = user_storage.blob_url("inputs", "requests.jsonl")  # INPUT_BLOB_ENDPOINTS is empty here

    assert_problem(post_input({"blobUrl": url}), 400, "blobUrl")
    storage_tokens = [e for e in emulator.requests_log(service="identity") if "storage" in json.dumps(e.get("query"))]
    assert storage_tokens == []
