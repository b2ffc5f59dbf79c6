"""Batches whose input and results are a user's blobs (v1, `input_blob` and `output_folder`), read and written by the
resource's managed identity in the user-storage Azurite, as Learn's "Configuring Azure Blob Storage for Azure OpenAI"
describes them."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient
from openai import OpenAI

from tests.conftest import RunningEmulator, RunningUserStorage, wait_for
from tests.devstack.conftest import DataPlane, batch_lines

EASTUS = "aoai-devstack-eastus"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture
def blob_storage(emulator: RunningEmulator) -> RunningEmulator:
    """The eastus resource with blob storage on (a system-assigned identity with access, in Azure)."""
    response = requests.patch(f"{emulator.control}/resources/{EASTUS}", json={"blobStorage": True}, timeout=10)
    response.raise_for_status()
    return emulator


@pytest.fixture
def storage(user_storage: RunningUserStorage) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(
        user_storage.connection_string, connection_verify=user_storage.ca_bundle
    )


@pytest.fixture
def containers(storage: BlobServiceClient) -> Iterator[tuple[ContainerClient, ContainerClient]]:
    """A batch-input and a batch-output container of their own, as in Learn's walkthrough."""
    suffix = uuid.uuid4().hex[:8]
    made = (storage.create_container(f"batch-input-{suffix}"), storage.create_container(f"batch-output-{suffix}"))
    yield made
    for container in made:
        with contextlib.suppress(ResourceNotFoundError):
            container.delete_container()


def put_input(container: ContainerClient, content: str, name: str = "test.jsonl") -> str:
    container.upload_blob(name, content.encode())
    return f"{container.url}/{name}"


def create(plane: DataPlane, input_blob: str, output_folder: str, **body: Any) -> requests.Response:
    return plane.request(
        "POST",
        "batches",
        json={
            "input_file_id": None,
            "endpoint": "/chat/completions",
            "completion_window": "24h",
            "input_blob": input_blob,
            "output_folder": {"url": output_folder},
            **body,
        },
    )


def run_to_end(plane: DataPlane, batch_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (b := plane.batch(batch_id))["status"] in TERMINAL and b, timeout=30, what=f"batch {batch_id} to end"
    )


def blob_lines(storage: BlobServiceClient, url: str) -> list[dict[str, Any]]:
    container, _, name = url.removeprefix(f"{storage.url.rstrip('/')}/").partition("/")
    content = storage.get_blob_client(container, name).download_blob().readall()
    return [json.loads(line) for line in content.decode().splitlines()]


def blob_exists(storage: BlobServiceClient, url: str) -> bool:
    container, _, name = url.removeprefix(f"{storage.url.rstrip('/')}/").partition("/")
    return bool(storage.get_blob_client(container, name).exists())


@pytest.mark.usefixtures("blob_storage")
def test_a_blob_batch_reads_its_input_and_writes_results_to_the_output_folder(
    eastus_v1: DataPlane, storage: BlobServiceClient, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    input_blob = put_input(inputs, batch_lines(3, url="/v1/chat/completions"))

    created = create(eastus_v1, input_blob, outputs.url)

    assert created.status_code == 200
    batch = created.json()
    assert batch["status"] == "validating"
    assert (batch["input_file_id"], batch["output_file_id"], batch["error_file_id"]) == (None, None, None)
    assert (batch["input_blob"], batch["output_blob"], batch["error_blob"]) == (input_blob, "", "")
    done = run_to_end(eastus_v1, batch["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"completed": 3, "failed": 0, "total": 3}
    assert done["output_file_id"] is None
    match = re.fullmatch(re.escape(outputs.url) + r"/([0-9a-f-]{36})/results\.jsonl", done["output_blob"])
    assert match, done["output_blob"]
    assert done["error_blob"] == f"{outputs.url}/{match[1]}/errors.jsonl"
    assert match[1] != batch["id"].removeprefix("batch_")
    results = blob_lines(storage, done["output_blob"])
    assert sorted(line["custom_id"] for line in results) == ["task-0", "task-1", "task-2"]
    assert all(line["response"]["status_code"] == 200 for line in results)
    # Learn: both paths are always returned, but errors.jsonl is written only when something failed.
    assert not blob_exists(storage, done["error_blob"])


@pytest.mark.usefixtures("blob_storage")
def test_failed_lines_go_to_the_errors_blob(
    eastus_v1: DataPlane, storage: BlobServiceClient, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    content = batch_lines(2) + batch_lines(1, prompt="[[fail]] {i}").replace("task-0", "task-x")

    done = run_to_end(eastus_v1, create(eastus_v1, put_input(inputs, content), outputs.url).json()["id"])

    assert done["request_counts"] == {"completed": 2, "failed": 1, "total": 3}
    assert [line["custom_id"] for line in blob_lines(storage, done["error_blob"])] == ["task-x"]
    assert len(blob_lines(storage, done["output_blob"])) == 2


@pytest.mark.usefixtures("blob_storage")
def test_an_output_folder_inside_a_container_keeps_its_path(
    eastus_v1: DataPlane, storage: BlobServiceClient, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    folder = f"{outputs.url}/runs/2025/"

    done = run_to_end(eastus_v1, create(eastus_v1, put_input(inputs, batch_lines(1)), folder).json()["id"])

    assert done["output_blob"].startswith(f"{outputs.url}/runs/2025/")
    assert done["output_blob"].endswith("/results.jsonl")
    assert len(blob_lines(storage, done["output_blob"])) == 1


@pytest.mark.usefixtures("blob_storage")
def test_a_cancelled_blob_batch_writes_what_it_did_and_what_it_did_not(
    eastus_v1: DataPlane,
    blob_storage: RunningEmulator,
    storage: BlobServiceClient,
    containers: tuple[ContainerClient, ContainerClient],
) -> None:
    inputs, outputs = containers
    blob_storage.set_speeds(EASTUS, requestsPerSecond=0.05)  # a request per 20 emulated seconds: one a real second
    batch = create(eastus_v1, put_input(inputs, batch_lines(20)), outputs.url).json()
    wait_for(
        lambda: (eastus_v1.batch(batch["id"])["request_counts"]["completed"] or 0) >= 1,
        what="the batch to complete a request",
    )

    eastus_v1.request("POST", f"batches/{batch['id']}/cancel")
    done = run_to_end(eastus_v1, batch["id"])

    assert done["status"] == "cancelled"
    finished = blob_lines(storage, done["output_blob"])
    not_run = blob_lines(storage, done["error_blob"])
    assert len(finished) == done["request_counts"]["completed"] >= 1
    assert len(finished) + len(not_run) == 20
    assert {line["error"]["code"] for line in not_run} == {"batch_cancelled"}


@pytest.mark.usefixtures("blob_storage")
def test_a_missing_input_blob_fails_validation(
    eastus_v1: DataPlane, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers

    created = create(eastus_v1, f"{inputs.url}/no-such.jsonl", outputs.url)
    failed = run_to_end(eastus_v1, created.json()["id"])

    assert created.status_code == 200
    assert failed["status"] == "failed"
    [error] = failed["errors"]["data"]
    assert (error["code"], error["param"]) == ("input_blob_not_found", "input_blob")
    assert "BlobNotFound" in error["message"]
    assert (failed["output_blob"], failed["error_blob"]) == ("", "")


@pytest.mark.usefixtures("blob_storage")
def test_a_missing_output_container_fails_validation(
    eastus_v1: DataPlane, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, _ = containers
    gone = f"{inputs.url.rsplit('/', 1)[0]}/no-such-container-{uuid.uuid4().hex[:8]}"

    failed = run_to_end(eastus_v1, create(eastus_v1, put_input(inputs, batch_lines(1)), gone).json()["id"])

    assert failed["status"] == "failed"
    assert failed["errors"]["data"][0]["code"] == "output_folder_not_found"


@pytest.mark.usefixtures("blob_storage")
def test_invalid_lines_in_the_input_blob_fail_validation_as_a_file_would(
    eastus_v1: DataPlane, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    content = batch_lines(1) + "not json\n"

    failed = run_to_end(eastus_v1, create(eastus_v1, put_input(inputs, content), outputs.url).json()["id"])

    assert failed["status"] == "failed"
    assert [(e["code"], e["line"]) for e in failed["errors"]["data"]] == [("invalid_json_line", 2)]


@pytest.mark.usefixtures("blob_storage")
def test_results_that_cannot_be_written_fail_the_batch(
    eastus_v1: DataPlane,
    blob_storage: RunningEmulator,
    containers: tuple[ContainerClient, ContainerClient],
) -> None:
    inputs, outputs = containers
    blob_storage.set_speeds(EASTUS, finalizingSeconds=3600)  # three real minutes of finalizing: time to pull the rug
    batch = create(eastus_v1, put_input(inputs, batch_lines(2)), outputs.url).json()
    wait_for(lambda: eastus_v1.batch(batch["id"])["status"] == "finalizing", what="the batch to finalize")
    outputs.delete_container()
    eastus_v1.request("POST", f"batches/{batch['id']}/cancel")

    failed = run_to_end(eastus_v1, batch["id"])

    assert failed["status"] == "failed"
    assert failed["request_counts"] == {"completed": 2, "failed": 0, "total": 2}  # they ran; their results are lost
    assert failed["cancelled_at"] is None
    assert failed["failed_at"] is not None
    assert failed["errors"]["data"][0]["code"] == "output_folder_write_failed"
    assert (failed["output_blob"], failed["error_blob"]) == ("", "")


@pytest.mark.usefixtures("blob_storage")
def test_the_openai_sdk_creates_a_blob_batch_as_learns_example_does(
    blob_storage: RunningEmulator, storage: BlobServiceClient, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    resource = blob_storage.resource(EASTUS)
    client = OpenAI(base_url=f"{resource['endpoint']}/openai/v1/", api_key=resource["apiKey"], max_retries=0)

    created = client.batches.create(
        input_file_id=None,  # as Learn's Python example passes it
        endpoint="/chat/completions",  # Learn's value; the SDK's types list only /v1/... ones
        completion_window="24h",
        extra_body={
            "input_blob": put_input(inputs, batch_lines(2, url="/v1/chat/completions")),
            "output_folder": {"url": outputs.url},
        },
    )
    done = wait_for(
        lambda: (b := client.batches.retrieve(created.id)).status == "completed" and b, what="the batch to complete"
    )

    assert created.input_file_id is None
    extra = done.model_extra or {}
    assert extra["output_blob"].endswith("/results.jsonl")
    assert len(blob_lines(storage, extra["output_blob"])) == 2


@pytest.mark.usefixtures("blob_storage")
def test_blob_batches_are_logged_with_their_locations(
    eastus_v1: DataPlane, blob_storage: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    input_blob = put_input(inputs, batch_lines(1))

    create(eastus_v1, input_blob, outputs.url)

    [entry] = blob_storage.requests_log(route="v1.batches.create")
    assert (entry["batch"]["inputBlob"], entry["batch"]["outputFolder"]) == (input_blob, outputs.url)


def test_a_resource_without_blob_storage_refuses_blob_batches(
    sweden_v1: DataPlane, emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers

    response = create(sweden_v1, put_input(inputs, batch_lines(1)), outputs.url)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("invalid_request", "input_blob", "error")
    assert "system-assigned managed identity" in error["message"]
    assert emulator.batches("aoai-devstack-swedencentral") == []


@pytest.mark.usefixtures("blob_storage")
def test_the_ga_api_takes_no_blob_batches(
    eastus: DataPlane, emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers

    response = create(eastus, put_input(inputs, batch_lines(1)), outputs.url)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_file_id"
    assert emulator.batches(EASTUS) == []


@pytest.mark.usefixtures("blob_storage")
@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input_blob": "http://127.0.0.1:1/devstoreaccount1/batch-input/test.jsonl"}, "input_blob"),
        ({"input_blob": "https://127.0.0.1:1/devstoreaccount1/batch-input"}, "input_blob"),
        ({"input_blob": "https://127.0.0.1:1/devstoreaccount1/batch-input/test.jsonl?sv=2023&sig=x"}, "input_blob"),
        ({"input_blob": 42}, "input_blob"),
        ({"input_file_id": "file-abc"}, "input_blob"),
        ({"output_folder": None}, "output_folder"),
        ({"output_folder": "https://127.0.0.1:1/devstoreaccount1/batch-output"}, "output_folder"),
        ({"output_folder": {"url": "https://127.0.0.1:1/devstoreaccount1"}}, "output_folder"),
        ({"metadata": {"run": "1"}}, "metadata"),
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
    ],
)
def test_create_refuses_blob_bodies_it_cannot_take_with_400(
    eastus_v1: DataPlane, emulator: RunningEmulator, change: dict[str, Any], param: str
) -> None:
    body = {
        "endpoint": "/chat/completions",
        "completion_window": "24h",
        "input_blob": "https://127.0.0.1:1/devstoreaccount1/batch-input/test.jsonl",
        "output_folder": {"url": "https://127.0.0.1:1/devstoreaccount1/batch-output"},
        **change,
    }

    response = eastus_v1.request("POST", "batches", json=body)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert emulator.batches(EASTUS) == []


@pytest.mark.usefixtures("blob_storage")
def test_output_folder_without_input_blob_is_400(eastus_v1: DataPlane) -> None:
    file_id = eastus_v1.upload(batch_lines(1))["id"]

    response = eastus_v1.request(
        "POST",
        "batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/chat/completions",
            "completion_window": "24h",
            "output_folder": {"url": "https://127.0.0.1:1/devstoreaccount1/batch-output"},
        },
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "output_folder"
