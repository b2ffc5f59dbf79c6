"""Importing deployments into the catalogue, against the ARM emulator and Azurite over real connections."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential

from shared import services
from shared.arm import ArmClient
from shared.catalog import ImportInProgress
from shared.http import AzureError, azure_session, retry_policy
from shared.importing import import_deployments
from shared.jobs import ImportedJob, Job, JobStatus, JobType
from shared.settings import get_settings
from tests.conftest import RunningEmulator

RESOURCE = "aoai-devstack-eastus"
MODEL = {"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"}


def run_import(now: datetime | None = None) -> dict[str, Any]:
    settings = get_settings()
    report = import_deployments(settings.resources, services.arm_client(), services.catalog(), now or datetime.now(UTC))
    return report.to_dict()


def now() -> datetime:
    return datetime.now(UTC)


def jobs() -> dict[str, Job]:
    return {job.external_id: job for job in services.catalog().list_jobs(RESOURCE)}


@pytest.mark.usefixtures("app_settings")
def test_first_import_pages_through_arm_and_classifies_every_deployment(emulator: RunningEmulator) -> None:
    report = run_import()

    catalogue = jobs()
    assert {k: report[k] for k in ("added", "updated", "retired", "revived", "skipped")} == {
        "added": 10,
        "updated": 0,
        "retired": 0,
        "revived": 0,
        "skipped": 1,
    }
    # six deployments over three ARM pages of two
    assert len(emulator.requests_log(service="arm", route="deployments.list")) == 3
    assert set(catalogue) == {
        "gpt-4o-batch",
        "gpt-4o-batch::batch",
        "gpt-4o-mini-dz-batch",
        "gpt-4o-mini-dz-batch::batch",
        "gpt-4o",
        "gpt-4o::batch",
        "gpt-35-turbo-legacy",
        "gpt-35-turbo-legacy::batch",
        "text-embedding-3-small",
        "gpt-4-retiring",
        "gpt-4-retiring::batch",
    }
    status = {external_id: job.status for external_id, job in catalogue.items()}
    assert status["gpt-4o-batch::batch"] is JobStatus.ACTIVE
    assert status["gpt-4o-mini-dz-batch::batch"] is JobStatus.ACTIVE
    assert status["gpt-4o"] is JobStatus.ACTIVE
    assert status["gpt-4o::batch"] is JobStatus.NOT_RUNNABLE  # GlobalStandard cannot run batches
    assert status["gpt-35-turbo-legacy"] is JobStatus.ACTIVE  # no capabilities: the model name decides
    assert status["text-embedding-3-small"] is JobStatus.SKIPPED
    assert status["gpt-4-retiring"] is JobStatus.NOT_RUNNABLE
    assert "Failed" in catalogue["gpt-4-retiring::batch"].imported.reason
    batch = catalogue["gpt-4o-batch::batch"].imported
    assert (batch.deployment, batch.model_name, batch.model_version, batch.sku, batch.batch_capable) == (
        "gpt-4o-batch",
        "gpt-4o",
        "2024-08-06",
        "GlobalBatch",
        True,
    )


@pytest.mark.usefixtures("app_settings")
def test_reimport_without_changes_writes_nothing_new() -> None:
    run_import()
    before = {k: (j.updated_at, j.etag) for k, j in jobs().items()}

    report = run_import(datetime.now(UTC) + timedelta(minutes=30))

    assert (report["added"], report["updated"], report["retired"], report["unchanged"]) == (0, 0, 0, 10)
    assert {k: (j.updated_at, j.etag) for k, j in jobs().items()} == before


@pytest.mark.usefixtures("app_settings")
def test_reimport_adds_updates_retires_and_revives(emulator: RunningEmulator) -> None:
    run_import()
    catalog = services.catalog()
    catalog.set_attributes(jobs()["gpt-4o-batch::batch"], {"inputFileId": "file-kept"}, datetime.now(UTC))
    emulator.put_deployment(
        RESOURCE,
        "gpt-4o-new-batch",
        model=MODEL,
        sku={"name": "GlobalBatch", "capacity": 5},
        capabilities={"chatCompletion": "true"},
    )
    emulator.put_deployment(
        RESOURCE,
        "gpt-4o",
        model={**MODEL, "version": "2024-11-20"},
        sku={"name": "GlobalStandard", "capacity": 50},
        capabilities={"chatCompletion": "true"},
    )
    emulator.delete_deployment(RESOURCE, "gpt-4o-batch")

    second = run_import(datetime.now(UTC) + timedelta(minutes=30))

    assert (second["added"], second["updated"], second["retired"]) == (2, 2, 2)
    after = jobs()
    assert after["gpt-4o-new-batch::batch"].status is JobStatus.ACTIVE
    assert after["gpt-4o"].imported.model_version == "2024-11-20"
    retired = after["gpt-4o-batch::batch"]
    assert retired.status is JobStatus.RETIRED
    assert retired.retired_at
    assert retired.attributes == {"inputFileId": "file-kept"}  # kept, with what the user set

    emulator.put_deployment(
        RESOURCE,
        "gpt-4o-batch",
        model=MODEL,
        sku={"name": "GlobalBatch", "capacity": 250},
        capabilities={"chatCompletion": "true"},
    )
    third = run_import(datetime.now(UTC) + timedelta(hours=1))

    assert third["revived"] == 2
    revived = jobs()["gpt-4o-batch::batch"]
    assert revived.status is JobStatus.ACTIVE
    assert not revived.retired_at
    assert revived.attributes == {"inputFileId": "file-kept"}


@pytest.mark.usefixtures("app_settings")
def test_attributes_survive_reimport_that_changes_the_deployment(emulator: RunningEmulator) -> None:
    run_import()
    services.catalog().set_attributes(
        jobs()["gpt-4o"], {"systemPrompt": "Be brief.", "maxTokens": 64}, datetime.now(UTC)
    )
    emulator.put_deployment(
        RESOURCE,
        "gpt-4o",
        model=MODEL,
        sku={"name": "GlobalStandard", "capacity": 99},
        capabilities={"chatCompletion": "true"},
    )

    run_import()

    assert jobs()["gpt-4o"].attributes == {"systemPrompt": "Be brief.", "maxTokens": 64}


@pytest.mark.usefixtures("app_settings")
def test_many_deployments_are_written_in_concurrent_transactions_each_row_once(emulator: RunningEmulator) -> None:
    bulk = 250  # 500 jobs more: several 100-operation transactions, more than WRITE_CONCURRENCY of them in flight
    for i in range(bulk):
        emulator.put_deployment(
            RESOURCE,
            f"bulk-{i:03d}",
            model=MODEL,
            sku={"name": "GlobalBatch", "capacity": 1},
            capabilities={"chatCompletion": "true"},
        )

    report = run_import()

    assert report["added"] == 10 + 2 * bulk
    catalogue = jobs()
    assert len(catalogue) == 11 + 2 * bulk
    assert all(job.imported_at and job.status is not JobStatus.RETIRED for job in catalogue.values())
    for i in range(0, bulk, 2):
        emulator.delete_deployment(RESOURCE, f"bulk-{i:03d}")

    again = run_import(datetime.now(UTC) + timedelta(minutes=30))

    assert (again["added"], again["updated"], again["retired"], again["unchanged"]) == (0, 0, bulk, 10 + bulk)
    retired = {k for k, job in jobs().items() if job.status is JobStatus.RETIRED}
    assert retired == {f"bulk-{i:03d}{suffix}" for i in range(0, bulk, 2) for suffix in ("", "::batch")}


def failing_after_the_first_page(emulator: RunningEmulator) -> ArmClient:
    """An ARM client whose listing fails for good (403) on the second page: the fault is added as the first page
    arrives."""
    session = azure_session()
    pages = []

    def add_fault_after_first_page(response: Any, *args: Any, **kwargs: Any) -> None:
        pages.append(response.url)
        if len(pages) == 1:
            emulator.add_fault(service="arm", route="deployments.list", status=403, times=1)

    session.hooks["response"].append(add_fault_after_first_page)
    return ArmClient(emulator.endpoints["arm"]["endpoint"], ManagedIdentityCredential(), session=session)


@pytest.mark.usefixtures("app_settings")
def test_arm_failure_on_a_later_page_retires_nothing(emulator: RunningEmulator) -> None:
    run_import()
    before = {k: j.status for k, j in jobs().items()}

    settings = get_settings()
    report = import_deployments(settings.resources, failing_after_the_first_page(emulator), services.catalog(), now())

    # the deployments of pages two and three were not listed, and are still there
    assert report.resources[0].error is not None
    assert report.resources[0].error.status == 403
    assert {k: j.status for k, j in jobs().items()} == before
    assert run_import()["unchanged"] == 10  # and the lease was released


@pytest.mark.usefixtures("app_settings")
def test_a_row_created_after_the_partition_was_read_is_merged_keeping_its_attributes() -> None:
    catalog = services.catalog()
    job = ImportedJob(
        "gpt-4o", JobType.CHAT_COMPLETION, "gpt-4o", "OpenAI", "gpt-4o", "1", "Standard", False, JobStatus.ACTIVE, ""
    )

    with catalog.importing(RESOURCE, now()) as partition:
        partition.add([])  # the partition has been read, empty
        catalog.jobs.create_entity({"PartitionKey": RESOURCE, "RowKey": "gpt-4o", "Attributes": '{"maxTokens": 7}'})
        partition.add([job])
        counts = partition.complete()

    assert counts.added == 1
    stored = jobs()["gpt-4o"]
    assert (stored.status, stored.attributes) == (JobStatus.ACTIVE, {"maxTokens": 7})


@pytest.mark.usefixtures("app_settings")
def test_a_job_listed_twice_is_written_and_counted_once() -> None:
    # ARM pages by position: a deployment created while the listing runs can shift another onto the next page too
    job = ImportedJob(
        "gpt-4o", JobType.CHAT_COMPLETION, "gpt-4o", "OpenAI", "gpt-4o", "1", "Standard", False, JobStatus.ACTIVE, ""
    )

    with services.catalog().importing(RESOURCE, now()) as partition:
        partition.add([job, job])
        partition.add([job])
        counts = partition.complete()

    assert (counts.added, counts.updated, counts.unchanged) == (1, 0, 0)
    assert list(jobs()) == ["gpt-4o"]


@pytest.mark.usefixtures("app_settings")
def test_a_failed_write_fails_the_import() -> None:
    catalog = services.catalog()
    refused = ImportedJob(
        "a/b", JobType.CHAT_COMPLETION, "a/b", "OpenAI", "gpt-4o", "1", "Standard", False, JobStatus.ACTIVE, ""
    )  # Table Storage refuses '/' in a RowKey

    with catalog.importing(RESOURCE, now()) as partition:
        partition.add([refused])  # sent, not awaited
        with pytest.raises(HttpResponseError):
            partition.complete()


@pytest.mark.usefixtures("app_settings")
def test_arm_failure_leaves_the_catalogue_untouched(emulator: RunningEmulator) -> None:
    run_import()
    before = {k: j.status for k, j in jobs().items()}
    # the listing fails for good on its first page (a later page: test_arm_failure_on_a_later_page_retires_nothing)
    emulator.add_fault(service="arm", route="deployments.list", status=403, times=1)

    report = run_import()

    assert report["resources"][0]["error"]["upstreamStatus"] == 403
    assert {k: j.status for k, j in jobs().items()} == before


@pytest.mark.usefixtures("app_settings")
def test_import_lease_keeps_two_imports_of_one_resource_apart() -> None:
    catalog = services.catalog()
    now = datetime.now(UTC)
    owner = catalog.acquire_import_lease(RESOURCE, now)

    with pytest.raises(ImportInProgress):
        catalog.acquire_import_lease(RESOURCE, now)
    report = run_import(now)
    assert report["resources"][0]["busy"] is True
    assert jobs() == {}

    catalog.release_import_lease(RESOURCE, owner, {"done": True})
    assert run_import(now)["added"] == 10


@pytest.mark.usefixtures("app_settings")
def test_an_expired_lease_is_taken_over() -> None:
    catalog = services.catalog()
    catalog.acquire_import_lease(RESOURCE, datetime.now(UTC) - timedelta(hours=1))  # a crashed import's lease

    assert run_import()["added"] == 10
    assert catalog.import_outcomes()[RESOURCE]["counts"]["added"] == 10


# The ARM client on its own: paging, retries, errors -------------------------------------------------------------


def arm(emulator: RunningEmulator, **policy: Any) -> ArmClient:
    session = azure_session(retry_policy(**policy)) if policy else None
    return ArmClient(emulator.endpoints["arm"]["endpoint"], ManagedIdentityCredential(), session=session)


def names(client: ArmClient) -> list[str]:
    return [d.name for d in client.list_deployments(get_settings().resources[0])]


@pytest.mark.usefixtures("app_settings")
def test_arm_client_retries_429_honoring_retry_after(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="arm", route="deployments.list", status=429, retryAfter=1, times=1)
    started = time.monotonic()

    listed = names(arm(emulator))

    assert len(listed) == 6
    assert time.monotonic() - started >= 1.0
    statuses = [entry["status"] for entry in emulator.requests_log(service="arm")]
    assert statuses == [429, 200, 200, 200]


@pytest.mark.usefixtures("app_settings")
def test_arm_client_retries_5xx_and_dropped_connections(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="arm", route="deployments.list", status=503, times=1)
    emulator.add_fault(service="arm", route="deployments.list", status=500, times=1)
    emulator.add_fault(service="arm", route="deployments.list", drop=True, times=1)

    assert len(names(arm(emulator, backoff=0.01))) == 6


@pytest.mark.usefixtures("app_settings")
def test_arm_client_gives_up_after_bounded_retries_with_one_error_type(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="arm", route="deployments.list", status=503)

    with pytest.raises(AzureError) as raised:
        names(arm(emulator, attempts=2, backoff=0.01))

    assert (raised.value.status, raised.value.code) == (503, "ServiceUnavailable")
    assert len(emulator.requests_log(service="arm")) == 3


@pytest.mark.usefixtures("app_settings")
def test_arm_client_does_not_retry_401_and_reports_arm_code(emulator: RunningEmulator) -> None:
    class WrongAudience:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            return ManagedIdentityCredential().get_token("https://cognitiveservices.azure.com/.default")

    client = ArmClient(emulator.endpoints["arm"]["endpoint"], WrongAudience())

    with pytest.raises(AzureError) as raised:
        names(client)

    assert (raised.value.status, raised.value.code) == (401, "InvalidAuthenticationTokenAudience")
    assert len(emulator.requests_log(service="arm")) == 1


@pytest.mark.usefixtures("app_settings")
def test_arm_client_reports_unreachable_arm_as_connection_failure(emulator: RunningEmulator) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    client = ArmClient(
        f"http://127.0.0.1:{port}",
        ManagedIdentityCredential(),
        session=azure_session(retry_policy(attempts=1, backoff=0.01)),
    )

    with pytest.raises(AzureError) as raised:
        names(client)

    assert (raised.value.status, raised.value.code) == (None, "ConnectionFailed")


def test_arm_client_refuses_next_link_to_another_host() -> None:
    client = ArmClient("https://management.azure.com", ManagedIdentityCredential())

    client._check_same_origin("https://management.azure.com/subscriptions/x?$skipToken=2")
    client._check_same_origin("https://Management.Azure.com:443/subscriptions/x?$skipToken=2")
    with pytest.raises(AzureError) as raised:
        client._check_same_origin("https://attacker.example/collect")

    assert raised.value.code == "UnexpectedNextLink"
