"""Batch runs whose input is a user's blob and whose results Azure writes to a folder (`inputBlob`, `outputFolder`):
the submit and collect activities against the emulated v1 API with blob storage on, the blobs in the user-storage
Azurite (read and written there by the resource's identity, and the results read back by the app's)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared import services
from shared.batching import SubmitUnknown
from shared.problems import Problem
from shared.results import staged_name
from shared.submit_ledger import SubmitLedger
from tests.conftest import RunningEmulator, RunningUserStorage, wait_for_clock
from tests.devstack.conftest import batch_lines
from tests.test_batch_activities import RESOURCE, Run, activity

pytestmark = pytest.mark.usefixtures("blob_settings")


@pytest.fixture
def blob_settings(
    app_settings: dict[str, str],
    emulator: RunningEmulator,
    user_storage: RunningUserStorage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job's resource on the v1 API with batchBlobStorage (and blob storage on in the emulator, as a
    system-assigned identity with access gives it in Azure); the local CA trusted, the user storage allowed."""
    [resource] = json.loads(app_settings["AZURE_OPENAI_RESOURCES"])
    monkeypatch.setenv(
        "AZURE_OPENAI_RESOURCES", json.dumps([resource | {"apiVersion": "v1", "batchBlobStorage": True}])
    )
    monkeypatch.setenv("INPUT_BLOB_ENDPOINTS", user_storage.blob_endpoint)
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, emulator.endpoints["keyVault"]["caBundle"])
    services.reset()
    response = requests.patch(f"{emulator.control}/resources/{RESOURCE}", json={"blobStorage": True}, timeout=10)
    response.raise_for_status()


@pytest.fixture
def containers(user_storage: RunningUserStorage) -> Iterator[tuple[ContainerClient, ContainerClient]]:
    storage = BlobServiceClient.from_connection_string(
        user_storage.connection_string, connection_verify=user_storage.ca_bundle
    )
    suffix = uuid.uuid4().hex[:8]
    made = (storage.create_container(f"batch-input-{suffix}"), storage.create_container(f"batch-output-{suffix}"))
    yield made
    for container in made:
        container.delete_container()


def blob_run(
    inputs: ContainerClient, outputs: ContainerClient, content: str | None = None, name: str = "requests.jsonl"
) -> Run:
    """A run of a blob put into the input container (`content`; none put when None)."""
    if content is not None:
        inputs.upload_blob(name, content.encode(), overwrite=True)
    return Run(None, input_blob=f"{inputs.url}/{name}", output_folder=outputs.url)


def emulated_now(emulator: RunningEmulator) -> datetime:
    """The run's clock as the devstack host has it: the emulators' virtual clock."""
    return datetime.fromtimestamp(emulator.clock_now(), UTC)


def ledger() -> SubmitLedger:
    return services.submit_ledger()


def test_submit_creates_a_blob_batch_with_exactly_azures_body_and_no_metadata(
    emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    run = blob_run(inputs, outputs, batch_lines(2))

    outcome = run.submit(at=emulated_now(emulator))

    assert outcome["outcome"] == "submitted"
    [create] = emulator.requests_log(service="openai", route="v1.batches.create")
    assert create["body"] == {
        "input_file_id": None,
        "endpoint": "/chat/completions",
        "completion_window": "24h",
        "input_blob": f"{inputs.url}/requests.jsonl",
        "output_folder": {"url": outputs.url},
    }
    [batch] = emulator.batches(RESOURCE)
    assert outcome["batch"]["id"] == batch["id"]
    assert not batch.get("metadata")
    assert ledger().own(RESOURCE, batch["id"], run.run_id, 1)  # the run owns it in the ledger
    assert not ledger().own(RESOURCE, batch["id"], "another-run", 1)


@pytest.mark.parametrize(
    "fault",
    [{"status": 500, "afterHandler": True}, {"drop": True, "afterHandler": True}],
    ids=["500-after-create", "connection-cut-after-create"],
)
def test_a_lost_create_reply_is_found_again_by_its_input_blob_and_never_paid_twice(
    emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient], fault: dict[str, Any]
) -> None:
    inputs, outputs = containers
    run = blob_run(inputs, outputs, batch_lines(2))
    emulator.add_fault(service="openai", route="v1.batches.create", times=1, **fault)
    at = emulated_now(emulator)

    with pytest.raises(SubmitUnknown, match="submit outcome unknown"):
        run.submit(at=at)
    retried = run.submit(at=at)
    again = run.submit(at=at)

    [batch] = emulator.batches(RESOURCE)
    assert (retried["outcome"], again["outcome"]) == ("reattached", "reattached")
    assert retried["batch"]["id"] == again["batch"]["id"] == batch["id"]
    [create] = emulator.requests_log(service="openai", route="v1.batches.create")
    assert create["handledStatus"] == 200  # Azure did create it: only the reply was lost
    assert len(emulator.requests_log(service="openai", route="v1.batches.list")) == 1  # only the try after the loss


def test_a_lost_reply_never_reattaches_to_the_batch_another_run_of_the_same_blob_owns(
    emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    first = blob_run(inputs, outputs, batch_lines(2))
    second = blob_run(inputs, outputs)  # the same input blob, the same output folder
    at = emulated_now(emulator)
    other = second.submit(at=at)  # created nearer the first run's claim than the first run's own batch is
    emulator.set_speeds(RESOURCE, validationSeconds=3600)  # both stay validating: no output blob tells them apart
    wait_for_clock(emulator.clock_now, emulator.clock_now() + 60)
    emulator.add_fault(service="openai", route="v1.batches.create", times=1, status=500, afterHandler=True)
    with pytest.raises(SubmitUnknown, match="submit outcome unknown"):
        first.submit(at=at)

    found = first.submit(at=at)

    assert (other["outcome"], found["outcome"]) == ("submitted", "reattached")
    assert found["batch"]["id"] != other["batch"]["id"]
    assert len(emulator.batches(RESOURCE)) == 2


def test_a_lost_reply_whose_batch_azure_never_created_creates_one_once_the_claim_may_be_taken_over(
    emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    run = blob_run(inputs, outputs, batch_lines(2))
    emulator.add_fault(service="openai", route="v1.batches.create", times=1, status=503)  # refused before handling
    at = emulated_now(emulator)
    with pytest.raises(SubmitUnknown, match="submit outcome unknown"):
        run.submit(at=at)

    outcome = run.submit(at=at)  # nothing reads its input blob: the copy that claimed said it ended unknowing

    assert outcome["outcome"] == "submitted"
    assert len(emulator.batches(RESOURCE)) == 1


def test_a_lookup_only_submit_of_a_blob_run_creates_nothing(
    emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    run = blob_run(inputs, outputs, batch_lines(1))

    assert run.submit(lookup_only=True, at=emulated_now(emulator))["outcome"] == "not_created"
    assert emulator.requests_log(service="openai", route="v1.batches.create") == []


def collect(run: Run) -> dict[str, Any]:
    batch = run.batch
    step = {
        "run_id": run.run_id,
        "resource": RESOURCE,
        "file_ids": [],
        "model": "gpt-4o",
        "model_version": "2024-08-06",
        "output_blob": batch.output_blob,
        "error_blob": batch.error_blob,
        "completed": batch.completed or 0,
    }
    answer: dict[str, Any] = activity("collect_results", step)
    return answer


def staged(run: Run, kind: str) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in b"".join(services.staging().chunks(staged_name(run.run_id, kind))).splitlines()
    ]


def test_collecting_a_blob_batch_reads_its_result_blobs_with_the_apps_identity(
    emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    emulator.set_speeds(RESOURCE, validationSeconds=1, finalizingSeconds=1)
    content = batch_lines(3) + batch_lines(1, prompt="[[fail]] {i}").replace("task-0", "boom")
    run = blob_run(inputs, outputs, content)
    run.took(run.submit(at=emulated_now(emulator))["batch"])
    run.check_until("completed")
    assert (run.batch.output_blob or "").startswith(f"{outputs.url}/")

    answer = collect(run)

    assert (answer["succeeded"], answer["failed"]) == (3, 1)
    assert answer["usage"]["total_tokens"] > 0
    assert sorted(r["custom_id"] for r in staged(run, "all")) == ["boom", "task-0", "task-1", "task-2"]
    assert [r["custom_id"] for r in staged(run, "failed")] == ["boom"]
    assert run.view()["outputs"]["error_blob"] == run.batch.error_blob
    storage_tokens = [e for e in emulator.requests_log(service="identity") if "storage" in json.dumps(e.get("query"))]
    assert storage_tokens  # the app's own identity read them: a token for Azure Storage


def test_an_errors_blob_azure_did_not_write_has_no_lines(
    emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    emulator.set_speeds(RESOURCE, validationSeconds=1, finalizingSeconds=1)
    run = blob_run(inputs, outputs, batch_lines(2))
    run.took(run.submit(at=emulated_now(emulator))["batch"])
    run.check_until("completed")

    answer = collect(run)  # errors.jsonl does not exist: nothing failed

    assert (answer["succeeded"], answer["failed"]) == (2, 0)
    assert staged(run, "failed") == []


def test_a_missing_results_blob_of_a_batch_that_completed_requests_fails_the_collect(
    emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    emulator.set_speeds(RESOURCE, validationSeconds=1, finalizingSeconds=1)
    run = blob_run(inputs, outputs, batch_lines(2))
    run.took(run.submit(at=emulated_now(emulator))["batch"])
    run.check_until("completed")
    assert run.batch.output_blob
    outputs.delete_blob(run.batch.output_blob.removeprefix(f"{outputs.url}/"))

    with pytest.raises(Problem) as missing:
        collect(run)
    assert missing.value.code == "blob-not-found"


def test_a_result_blob_that_is_not_a_storage_blob_is_never_read(
    emulator: RunningEmulator, containers: tuple[ContainerClient, ContainerClient]
) -> None:
    inputs, outputs = containers
    run = blob_run(inputs, outputs)
    step = {
        "run_id": run.run_id,
        "resource": RESOURCE,
        "file_ids": [],
        "model": "gpt-4o",
        "model_version": "",
        "output_blob": "https://attacker.example.com/x/results.jsonl",
        "error_blob": None,
        "completed": 1,
    }

    with pytest.raises(ValueError, match="not a storage blob URL"):
        activity("collect_results", step)
    assert [e for e in emulator.requests_log(service="identity") if "storage" in json.dumps(e.get("query"))] == []
