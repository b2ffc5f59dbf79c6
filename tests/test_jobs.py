"""Job classification, external ids and attributes: pure domain rules, no Azure involved."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields, replace
from typing import Any

import pytest

from shared.arm import ArmDeployment
from shared.jobs import (
    BATCH_SUFFIX,
    ImportedJob,
    Job,
    JobStatus,
    JobType,
    check_external_id,
    classify,
    deployment_of,
    merge_attributes,
)
from shared.problems import Problem


def deployment(
    name: str = "gpt-4o",
    *,
    model: str = "gpt-4o",
    sku: str = "GlobalStandard",
    capabilities: dict[str, str] | None = None,
    state: str = "Succeeded",
) -> ArmDeployment:
    return ArmDeployment(
        name,
        "OpenAI",
        model,
        "2024-08-06",
        sku,
        10,
        {"chatCompletion": "true"} if capabilities is None else capabilities,
        state,
    )


def by_type(jobs: list[ImportedJob]) -> dict[JobType, ImportedJob]:
    return {job.job_type: job for job in jobs}


def test_chat_deployment_yields_chat_job_and_batch_job_with_suffix() -> None:
    jobs = by_type(classify(deployment("gpt-4o")))

    assert jobs[JobType.CHAT_COMPLETION].external_id == "gpt-4o"
    assert jobs[JobType.BATCH].external_id == "gpt-4o::batch"
    assert {job.deployment for job in jobs.values()} == {"gpt-4o"}
    assert jobs[JobType.CHAT_COMPLETION].status is JobStatus.ACTIVE


@pytest.mark.parametrize("sku", ["GlobalBatch", "DataZoneBatch"])
def test_batch_sku_makes_the_batch_job_runnable_and_the_chat_job_not(sku: str) -> None:
    jobs = by_type(classify(deployment("gpt-4o-batch", sku=sku)))

    assert jobs[JobType.BATCH].batch_capable is True
    assert jobs[JobType.BATCH].status is JobStatus.ACTIVE
    assert jobs[JobType.CHAT_COMPLETION].status is JobStatus.NOT_RUNNABLE
    assert "batch jobs only" in jobs[JobType.CHAT_COMPLETION].reason


@pytest.mark.parametrize("sku", ["Standard", "GlobalStandard", "ProvisionedManaged", "DeveloperTier"])
def test_non_batch_sku_batch_job_is_imported_not_runnable_saying_which_skus_can(sku: str) -> None:
    batch = by_type(classify(deployment(sku=sku)))[JobType.BATCH]

    assert batch.batch_capable is False
    assert batch.status is JobStatus.NOT_RUNNABLE
    assert "DataZoneBatch" in batch.reason
    assert "GlobalBatch" in batch.reason


def test_capability_decides_over_the_model_name() -> None:
    not_chat = classify(deployment("my-gpt", model="gpt-4o", capabilities={"completion": "true"}))

    assert [job.job_type for job in not_chat] == [JobType.UNSUPPORTED]
    assert not_chat[0].status is JobStatus.SKIPPED


def test_without_capabilities_the_model_name_decides() -> None:
    chat = classify(deployment("legacy", model="gpt-35-turbo", capabilities={}))
    embedding = classify(deployment("emb", model="text-embedding-ada-002", capabilities={}))

    assert {job.job_type for job in chat} == {JobType.CHAT_COMPLETION, JobType.BATCH}
    assert [job.job_type for job in embedding] == [JobType.EMBEDDING]


def test_embedding_deployment_is_recorded_as_skipped_with_reason() -> None:
    jobs = classify(deployment("emb", model="text-embedding-3-small", capabilities={"embeddings": "true"}))

    assert len(jobs) == 1
    assert (jobs[0].job_type, jobs[0].status, jobs[0].external_id) == (JobType.EMBEDDING, JobStatus.SKIPPED, "emb")
    assert "not runnable yet" in jobs[0].reason


@pytest.mark.parametrize("state", ["Failed", "Creating", "Deleting", ""])
def test_deployment_not_succeeded_is_imported_not_runnable_with_reason(state: str) -> None:
    jobs = classify(deployment(sku="GlobalBatch", state=state))

    assert {job.status for job in jobs} == {JobStatus.NOT_RUNNABLE}
    assert all("provisioning state" in job.reason for job in jobs)


def test_fingerprint_changes_with_imported_fields_only() -> None:
    first = classify(deployment(sku="GlobalStandard"))[0]
    same = classify(deployment(sku="GlobalStandard"))[0]
    other = classify(deployment(sku="Standard"))[0]

    assert first.fingerprint() == same.fingerprint()
    assert first.fingerprint() != other.fingerprint()


def test_fingerprint_is_the_one_rows_were_stored_with() -> None:
    # Rows in the catalogue carry fingerprints made as sha256(json.dumps(asdict(job), sort_keys=True)); a different
    # digest would make the next import rewrite every job and report each one as updated.
    jobs = [
        *classify(deployment("gpt-4o-batch", sku="GlobalBatch")),
        *classify(deployment("dz", sku="DataZoneBatch", state="Créating")),
        *classify(deployment("emb", model="text-embedding-3-small", capabilities={"embeddings": "true"})),
    ]

    for job in jobs:
        stored = hashlib.sha256(json.dumps(asdict(job), sort_keys=True).encode()).hexdigest()[:16]
        assert job.fingerprint() == stored
    assert jobs[0].fingerprint() == "a87c3caa2fd1fe60"  # as computed by the code of 688d40d


@pytest.mark.parametrize("field", [f.name for f in fields(ImportedJob)])
def test_fingerprint_covers_every_imported_field(field: str) -> None:
    job = classify(deployment(sku="GlobalBatch"))[1]
    value = getattr(job, field)
    changed = (not value) if isinstance(value, bool) else (JobStatus.RETIRED if field == "status" else f"{value}x")

    assert replace(job, **{field: changed}).fingerprint() != job.fingerprint()


@pytest.mark.parametrize("external_id", ["gpt-4o", "gpt-4o::batch", "my_deployment.v2", "ab"])
def test_valid_external_ids_pass(external_id: str) -> None:
    assert check_external_id(external_id) == external_id


@pytest.mark.parametrize(
    "external_id",
    ["a", "../secrets", "gpt 4o", "gpt-4o::chat", "-x", "x" * 65, "gpt-4o/../../batches", "gpt-4o?x=1", "::batch"],
)
def test_invalid_external_ids_are_400_before_any_call(external_id: str) -> None:
    with pytest.raises(Problem) as raised:
        check_external_id(external_id)

    assert raised.value.status == 400
    assert raised.value.errors[0].field == "externalId"


def test_batch_suffix_is_stripped_for_service_calls() -> None:
    assert deployment_of("gpt-4o" + BATCH_SUFFIX) == "gpt-4o"
    assert deployment_of("gpt-4o") == "gpt-4o"


def test_batch_attributes_default_as_the_seed_says() -> None:
    job = Job("r", classify(deployment(sku="GlobalBatch"))[1])

    assert job.effective_attributes() == {
        "inputFileId": None,
        "inputFileSecret": None,
        "endpoint": "/chat/completions",
        "completionWindow": "24h",
        "systemPrompt": None,  # these three shape inputs built from prompts
        "maxTokens": None,
        "temperature": None,
        "pool": None,  # these two drive the runs of inputs the app built (batch sets)
        "maxRequestRetries": 2,
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"inputFileId": "abc"}, "attributes.inputFileId"),
        ({"inputFileId": 12}, "attributes.inputFileId"),
        ({"inputFileSecret": "bad_name!"}, "attributes.inputFileSecret"),
        ({"endpoint": "/embeddings"}, "attributes.endpoint"),
        ({"completionWindow": "48h"}, "attributes.completionWindow"),
        ({"maxTokens": 0}, "attributes.maxTokens"),
        ({"temperature": 3}, "attributes.temperature"),
        ({"colour": "blue"}, "attributes.colour"),
        ({"inputFileId": "file-abc", "inputFileSecret": "batch-input"}, "attributes.inputFileSecret"),
    ],
)
def test_bad_batch_attributes_are_400_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(Problem) as raised:
        merge_attributes(JobType.BATCH, {}, changes)

    assert raised.value.status == 400
    assert field in [error.field for error in raised.value.errors]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"maxTokens": 0}, "attributes.maxTokens"),
        ({"maxTokens": 1.5}, "attributes.maxTokens"),
        ({"maxTokens": True}, "attributes.maxTokens"),
        ({"temperature": 2.5}, "attributes.temperature"),
        ({"temperature": "hot"}, "attributes.temperature"),
        ({"systemPrompt": 7}, "attributes.systemPrompt"),
        ({"inputFileId": "file-abc"}, "attributes.inputFileId"),
    ],
)
def test_bad_chat_attributes_are_400_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(Problem) as raised:
        merge_attributes(JobType.CHAT_COMPLETION, {}, changes)

    assert [error.field for error in raised.value.errors] == [field]


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(Problem) as raised:
        merge_attributes(JobType.CHAT_COMPLETION, {}, {"maxTokens": -1, "temperature": 9, "colour": 1})

    assert sorted(e.field for e in raised.value.errors) == [
        "attributes.colour",
        "attributes.maxTokens",
        "attributes.temperature",
    ]


def test_null_removes_an_attribute_and_others_are_kept() -> None:
    merged = merge_attributes(
        JobType.CHAT_COMPLETION,
        {"systemPrompt": "Be brief.", "maxTokens": 100},
        {"maxTokens": None, "temperature": 0.3},
    )

    assert merged == {"systemPrompt": "Be brief.", "temperature": 0.3}


def test_switching_from_file_id_to_secret_needs_the_file_id_cleared() -> None:
    merged = merge_attributes(
        JobType.BATCH, {"inputFileId": "file-abc"}, {"inputFileId": None, "inputFileSecret": "batch-input"}
    )

    assert merged == {"inputFileSecret": "batch-input"}


# Where a Batch Job's shards may run: its pool ------------------------------------------------------------------------


def batch_job(
    resource: str,
    name: str,
    *,
    model: str = "gpt-4o",
    version: str = "2024-08-06",
    sku: str = "GlobalBatch",
    state: str = "Succeeded",
    attributes: dict[str, Any] | None = None,
) -> Job:
    arm = ArmDeployment(name, "OpenAI", model, version, sku, 10, {"chatCompletion": "true"}, state)
    return Job(resource, by_type(classify(arm))[JobType.BATCH], attributes=attributes or {})


def test_a_pool_offers_the_same_model_version_and_sku_on_the_named_resources_own_deployment_first() -> None:
    from shared.run_requests import pool_of
    from shared.settings import OpenAIResource

    def resource(name: str, zone: str = "US", **limits: int) -> OpenAIResource:
        return OpenAIResource(name, f"https://{name}", "s", "g", token_limits=tuple(limits.items()), data_zone=zone)

    resources = [resource("east", gpt_batch=1000), resource("west", gpt_w=600), resource("north"), resource("eu", "EU")]
    job = batch_job("east", "gpt_batch", attributes={"pool": ["west", "north", "eu", "unknown", "east"]})
    others = [
        batch_job("west", "gpt_w"),
        batch_job("west", "gpt_w_old", version="2024-05-13"),  # another version: never
        batch_job("north", "gpt_n_mini", model="gpt-4o-mini"),  # another model: never
        batch_job("north", "gpt_n_creating", state="Creating"),  # not active: never
        batch_job("eu", "gpt_eu"),
    ]

    places = pool_of(job, others, resources)

    assert [(p["resource"], p["deployment"], p["tokenLimit"]) for p in places] == [
        ("east", "gpt_batch", 1000),
        ("west", "gpt_w", 600),
        ("eu", "gpt_eu", None),  # GlobalBatch may run in any zone
    ]
    assert places[1]["monitorUrl"].endswith("/accounts/west/overview")

    zoned = batch_job("east", "dz", sku="DataZoneBatch", attributes={"pool": ["west", "eu"]})
    zoned_others = [batch_job("west", "dz_w", sku="DataZoneBatch"), batch_job("eu", "dz_eu", sku="DataZoneBatch")]
    assert [p["resource"] for p in pool_of(zoned, zoned_others, resources)] == ["east", "west"]  # stays in its zone
    assert [p["resource"] for p in pool_of(batch_job("east", "solo"), others, resources)] == ["east"]
