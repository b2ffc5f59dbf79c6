"""Batch runs whose input is a user's blob and whose results Azure writes to a folder, end to end over HTTP: a resource
configured with `"apiVersion": "v1", "batchBlobStorage": true`, the blobs in the user-storage Azurite (read and written
there by the resource's identity, the results read back by the app's), the app's run, outputs and results API."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import requests
from azure.storage.blob import BlobServiceClient, ContainerClient

from tests.conftest import RunningAzurite, RunningEmulator, RunningUserStorage
from tests.devstack.conftest import batch_lines
from tests.e2e.conftest import RESOURCE, App, start_host
from tests.e2e.test_inputs_results import results
from tests.host.conftest import RunningHost

JOB = "gpt-4o-batch::batch"
OTHER = "aoai-devstack-swedencentral"  # on 2024-10-21, without batchBlobStorage


@pytest.fixture(scope="module")
def blob_host(
    tmp_path_factory: pytest.TempPathFactory,
    emulator_process: RunningEmulator,
    azurite: RunningAzurite,
    user_storage: RunningUserStorage,
) -> Iterator[RunningHost]:
    """eastus on the v1 API with batchBlobStorage; the user storage's local endpoint allowed for blob URLs."""
    host = start_host(
        tmp_path_factory.mktemp("blob-host"),
        emulator_process,
        azurite,
        f"blob{os.urandom(3).hex()}",
        {RESOURCE: {"apiVersion": "v1", "batchBlobStorage": True}},
        {"INPUT_BLOB_ENDPOINTS": user_storage.blob_endpoint},
    )
    yield host
    host.stop()


@pytest.fixture
def app(blob_host: RunningHost, emulator: RunningEmulator) -> App:
    """The app, with blob storage on for eastus in the emulator (as its system-assigned identity with Storage Blob
    Data Contributor gives it in Azure)."""
    response = requests.patch(f"{emulator.control}/resources/{RESOURCE}", json={"blobStorage": True}, timeout=10)
    response.raise_for_status()
    application = App(blob_host, emulator)
    application.import_jobs()
    return application


@pytest.fixture
def containers(user_storage: RunningUserStorage) -> Iterator[tuple[ContainerClient, ContainerClient]]:
    """A batch-input and a batch-output container of the user's storage account."""
    storage = BlobServiceClient.from_connection_string(
        user_storage.connection_string, connection_verify=user_storage.ca_bundle
    )
    suffix = uuid.uuid4().hex[:8]
    made = (storage.create_container(f"batch-input-{suffix}"), storage.create_container(f"batch-output-{suffix}"))
    yield made
    for container in made:
        container.delete_container()


def test_a_blob_run_succeeds_with_usage_outputs_and_every_result(
    app: App, emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    content = batch_lines(6) + batch_lines(1, prompt="[[fail]] {i}").replace("task-0", "boom")
    inputs.upload_blob("requests.jsonl", content.encode())
    input_blob = f"{inputs.url}/requests.jsonl"
    folder = f"{outputs.url}/nightly"

    started = app.start(JOB, {"inputBlob": input_blob, "outputFolder": f"{folder}/"})
    run = app.wait(started["id"])

    assert run["status"] == "Success", run["failure"]
    assert (run["inputBlob"], run["outputFolder"]) == (input_blob, folder)
    [batch] = [b for b in emulator.batches(RESOURCE) if b.get("input_blob") == input_blob]
    assert run["runId"] == batch["id"]
    assert not batch.get("metadata")  # Azure takes none on a blob batch
    out = run["outputs"]
    assert (out["output_blob"], out["error_blob"]) == (batch["output_blob"], batch["error_blob"])
    assert out["output_blob"].startswith(f"{folder}/")
    assert (out["output_file_id"], out["error_file_id"]) == (None, None)
    assert (out["request_counts_total"], out["request_counts_completed"], out["request_counts_failed"]) == (7, 6, 1)
    assert out["total_tokens"] == out["prompt_tokens"] + out["completion_tokens"] > 0
    every, _ = results(app, run["id"], top="100")
    assert sorted(r["custom_id"] for r in every) == ["boom", *(f"task-{i}" for i in range(6))]
    failed, _ = results(app, run["id"], status="failed")
    assert [r["custom_id"] for r in failed] == ["boom"]
    [create] = emulator.requests_log(service="openai", route="v1.batches.create")
    assert create["body"]["output_folder"] == {"url": folder}


def test_a_blob_run_whose_create_reply_is_lost_still_has_exactly_one_batch(
    app: App, emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    inputs.upload_blob("requests.jsonl", batch_lines(3).encode())
    input_blob = f"{inputs.url}/requests.jsonl"
    emulator.add_fault(service="openai", route="v1.batches.create", status=500, afterHandler=True, times=1)

    run = app.wait(app.start(JOB, {"inputBlob": input_blob, "outputFolder": outputs.url})["id"], timeout=120)

    assert run["status"] == "Success", run["failure"]
    [batch] = [b for b in emulator.batches(RESOURCE) if b.get("input_blob") == input_blob]
    assert run["runId"] == batch["id"]
    assert [c["handledStatus"] for c in emulator.requests_log(service="openai", route="v1.batches.create")] == [200]
    assert run["outputs"]["request_counts_completed"] == 3


def test_a_blob_run_of_a_missing_blob_fails_naming_input_blob_not_found(
    app: App, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers

    run = app.wait(app.start(JOB, {"inputBlob": f"{inputs.url}/no-such.jsonl", "outputFolder": outputs.url})["id"])

    assert run["status"] == "Failed"
    assert (run["failure"]["code"], run["failure"]["param"]) == ("input_blob_not_found", "input_blob")
    assert (run["outputs"]["output_blob"], run["outputs"]["error_blob"]) == (None, None)
    response = app.call("GET", f"runs/{run['id']}/results")
    assert (response.status_code, response.text) == (200, "")  # no lines: nothing ran


def test_a_resource_without_batch_blob_storage_refuses_a_blob_run_naming_input_blob(
    app: App, emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    emulator.put_deployment(
        OTHER,
        "gpt-4o-batch-se",
        model={"format": "OpenAI", "name": "gpt-4o", "version": "1"},
        sku={"name": "GlobalBatch", "capacity": 1},
        capabilities={"chatCompletion": "true"},
    )
    app.import_jobs()

    response = app.call(
        "POST",
        "jobs/gpt-4o-batch-se::batch/runs",
        json={"inputBlob": f"{inputs.url}/requests.jsonl", "outputFolder": outputs.url},
    )

    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["inputBlob"]
    assert emulator.batches(OTHER) == []
