"""What every run shares: run ids, failures without internals, the run resource and its size as custom status."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import pytest

from shared.batch_run import BatchRun, BatchSnapshot, Phase
from shared.batch_set import BatchSet, SetPhase, Shard
from shared.chat import ChatRun, custom_status_of
from shared.jobs import JobType
from shared.problems import Problem
from shared.run_requests import MAX_BLOB_URL, MAX_METADATA_KEY, MAX_METADATA_VALUE, MAX_USER_METADATA
from shared.runs import (
    HINTS,
    MAX_FAILURE_MESSAGE,
    MAX_FAILURE_PARAM,
    ORCHESTRATION_FAILED,
    Failure,
    RunId,
    RunStatus,
    plain,
    run_resource,
)
from shared.settings import OpenAIResource

CUSTOM_STATUS_LIMIT = 16 * 1024  # bytes of UTF-16 JSON (Durable Functions' documented limit)
HEX = "0123456789abcdef" * 2


# Run ids ------------------------------------------------------------------------------------------------------------


def test_run_ids_round_trip_and_name_their_job_type() -> None:
    batch = RunId.parse(f"gpt-4o-batch::batch::{HEX}")
    chat = RunId.parse(f"gpt-4o::chat::{HEX}")

    assert (batch.deployment, batch.job_type, batch.unique) == ("gpt-4o-batch", JobType.BATCH, HEX)
    assert chat.job_type is JobType.CHAT_COMPLETION
    assert str(batch) == f"gpt-4o-batch::batch::{HEX}"
    assert RunId.parse(str(RunId.new("r", "d1", JobType.BATCH))).job_type is JobType.BATCH


@pytest.mark.parametrize(
    "text",
    [
        "x/../../instances?showInput=true",
        f"gpt-4o::batch::{HEX}/../x",
        f"gpt-4o::batch::{HEX[:-1]}",
        f"gpt-4o::batch::{HEX.upper()}",
        f"gpt-4o::embedding::{HEX}",
        f"-bad::batch::{HEX}",
        f"{'d' * 65}::batch::{HEX}",
        f"a b::chat::{HEX}",
        "",
    ],
)
def test_text_outside_the_run_id_grammar_is_a_400_naming_run_id(text: str) -> None:
    with pytest.raises(Problem) as refused:
        RunId.parse(text)

    assert (refused.value.status, refused.value.errors[0].field) == (400, "runId")


def test_an_idempotency_key_names_the_same_run_for_the_same_job_only() -> None:
    first = RunId.new("r1", "gpt-4o", JobType.CHAT_COMPLETION, "key-1")

    assert RunId.new("r1", "gpt-4o", JobType.CHAT_COMPLETION, "key-1") == first
    assert RunId.new("r2", "gpt-4o", JobType.CHAT_COMPLETION, "key-1") != first
    assert RunId.new("r1", "gpt-4o", JobType.BATCH, "key-1") != first
    assert RunId.new("r1", "gpt-4o", JobType.CHAT_COMPLETION, "key-2") != first
    assert RunId.new("r1", "gpt-4o", JobType.CHAT_COMPLETION, "k" * 255).unique != first.unique
    with pytest.raises(Problem) as refused:
        RunId.new("r1", "gpt-4o", JobType.CHAT_COMPLETION, "k" * 256)
    assert refused.value.errors[0].field == "Idempotency-Key"


def test_a_jobs_runs_share_a_prefix_that_no_other_jobs_runs_have() -> None:
    assert RunId.prefix_of_job("gpt-4o::batch") == "gpt-4o::batch::"
    assert RunId.prefix_of_job("gpt-4o") == "gpt-4o::chat::"
    assert not str(RunId.new("r", "gpt-4o-mini", JobType.CHAT_COMPLETION)).startswith(RunId.prefix_of_job("gpt-4o"))


# Failures -----------------------------------------------------------------------------------------------------------


def test_a_failure_message_is_its_first_line_bounded() -> None:
    wrapped = 'Result: Failure\nException: ValueError: x\nStack: File "/home/site/wwwroot/shared/batching.py", line 3'

    assert plain(wrapped) == "Result: Failure"
    assert plain("x" * (MAX_FAILURE_MESSAGE + 1)) == "x" * (MAX_FAILURE_MESSAGE - 1) + "…"
    assert plain("x" * MAX_FAILURE_MESSAGE) == "x" * MAX_FAILURE_MESSAGE
    assert plain("  \n  ") == ""
    assert len(json.dumps(plain("😀" * 5000))) <= 3 * MAX_FAILURE_MESSAGE + 20


def test_failure_of_adds_the_hint_for_its_code_and_bounds_every_field() -> None:
    failure = Failure.of("input_file_not_found", "gone\nTraceback", param="p" * 500, line=4)

    assert failure == Failure("input_file_not_found", "gone", 4, "p" * 199 + "…", HINTS["input_file_not_found"])
    assert Failure.of("", "m").code == "failed"
    assert Failure.from_dict(failure.to_dict()) == failure


# The run resource ---------------------------------------------------------------------------------------------------


# The longest each field can be. Counts as a 64-bit counter's largest; Azure's ids (far shorter in practice) as long
# as the app's file id pattern allows; text as `plain` keeps it at its longest once escaped: a control character
# escapes to six characters in JSON with or without ASCII escaping, the most that `plain` keeps.
BIG = 2**63 - 1
AZURE_ID = 128
WORST = "\x01" * 10_000
LONGEST_STAMP = "2026-11-29T18:00:00.123456Z"
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z


def largest_failure() -> Failure:
    """A failure with every field at its longest, and the longest hint besides."""
    return Failure(
        code=plain(WORST, 100),
        message=plain(WORST),
        line=BIG,
        param=plain(WORST, MAX_FAILURE_PARAM),
        hint=max(HINTS.values(), key=len),
    )


def largest_resource() -> OpenAIResource:
    """A resource whose portal link is the longest: a 90-character resource group of letters outside the BMP (Azure
    allows Unicode letters; each escapes to twelve characters) and a tenant named by a 253-character domain."""
    return OpenAIResource(
        name="r" * 64,
        endpoint="https://x.openai.azure.com",
        subscription_id="0" * 36,
        resource_group="\U0001d400" * 90,
        tenant_id="t" * 253,
    )


def longest_blob_url() -> str:
    """The longest `inputBlob` / `outputFolder` a start request may give (no URL character needs JSON escaping)."""
    blob = "https://" + "a" * 24 + ".blob.core.windows.net/" + "c" * 63 + "/"
    url = blob + "b" * (MAX_BLOB_URL - len(blob))
    assert len(url) == MAX_BLOB_URL
    return url


def largest_usage() -> dict[str, int]:
    return dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"), BIG)


LARGEST_COST = {"amount": 1.2345678901234567e-300, "currency": "EUR"}  # the longest float, an ISO 4217 code
LARGEST_METADATA = {
    f"{i:02}".ljust(MAX_METADATA_KEY, "k"): WORST[:MAX_METADATA_VALUE] for i in range(MAX_USER_METADATA)
}


def largest_batch_run() -> BatchRun:
    """Every field of a batch run at the longest it can be: a shard (the longest id, a parent, its own upload) that is
    also a blob run (two more URLs), its batch ended with every count and file, its failure at its longest."""
    deployment = "d" * 64
    parent = RunId(deployment, JobType.BATCH, HEX)
    folder = longest_blob_url()
    results = f"{folder}/{uuid.UUID(int=0)}"
    batch = BatchSnapshot(
        id="batch_" + "b" * AZURE_ID,
        status="cancelled",  # of the longest statuses, one with an end time
        created_at=LAST_SECOND,
        in_progress_at=LAST_SECOND,
        cancelling_at=LAST_SECOND,
        cancelled_at=LAST_SECOND,
        expires_at=LAST_SECOND,
        output_file_id="file-" + "o" * AZURE_ID,
        error_file_id="file-" + "e" * AZURE_ID,
        total=BIG,
        completed=BIG,
        failed=BIG,
        errors=tuple(largest_failure() for _ in range(5)),
        output_blob=f"{results}/results.jsonl",
        error_blob=f"{results}/errors.jsonl",
    )
    return BatchRun(
        run_id=str(parent.shard_of(999_999)),  # the run-id grammar numbers shards up to 999,999
        resource=largest_resource().name,
        external_id=f"{deployment}::batch",
        deployment=deployment,
        endpoint="/chat/completions",
        completion_window="24h",
        requested_at=LONGEST_STAMP,
        monitor_url=largest_resource().portal_url,
        input_file_id="file-" + "i" * AZURE_ID,
        metadata=LARGEST_METADATA,
        input_id="f" * 32,
        input_blob=longest_blob_url(),
        output_folder=folder,
        estimated_tokens=BIG,
        parent_id=str(parent),
        staged_input="shards/x/s999999.jsonl",
        phase=max(Phase, key=len),
        status=max(RunStatus, key=len),
        deadline=LONGEST_STAMP,
        batch=batch,
        quota_waits=BIG,
        failure=largest_failure(),
        next_check_at=LONGEST_STAMP,
        usage=largest_usage(),
        estimated_cost=LARGEST_COST,
    )


def largest_batch_set() -> BatchSet:
    """Every field of a batch set at the longest it can be, with 1,000 shards. Its custom status holds no shard (the
    list is in its output only): the number of shards shows only in `shardCount` and the sums."""
    deployment = "d" * 64
    shards = [
        Shard(index, 5, f"shards/x/s{index}.jsonl", BIG // 1000, BIG // 1000, "ended", "Failed", "r" * 64)
        for index in range(1000)
    ]
    places = [{"resource": "r" * 64, "deployment": deployment, "monitorUrl": largest_resource().portal_url}] * 20
    return BatchSet(
        run_id=str(RunId(deployment, JobType.BATCH, HEX)),
        resource=largest_resource().name,
        external_id=f"{deployment}::batch",
        deployment=deployment,
        endpoint="/chat/completions",
        completion_window="24h",
        requested_at=LONGEST_STAMP,
        monitor_url=largest_resource().portal_url,
        input_id="f" * 32,
        staged_input="inputs/x.jsonl",
        requests=BIG,
        estimated_tokens=BIG,
        metadata=LARGEST_METADATA,
        places=places,
        max_request_retries=5,
        phase=max(SetPhase, key=len),
        status=max(RunStatus, key=len),
        shards=[replace(s, completed=BIG // 1000, failed=BIG // 1000) for s in shards],
        round=5,
        failure=largest_failure(),
        usage=largest_usage(),
        estimated_cost=LARGEST_COST,
        next_check_at=LONGEST_STAMP,
    )


def utf16_bytes(value: Any, *, escape: bool) -> int:
    """The custom status as the host measures it: JSON in UTF-16, with and without non-ASCII escaped."""
    return len(json.dumps(value, ensure_ascii=escape).encode("utf-16-le"))


# Durable's documented limit, less room for what a field not counted here might add one day.
CUSTOM_STATUS_BUDGET = CUSTOM_STATUS_LIMIT - 2 * 1024


@pytest.mark.parametrize("largest", [largest_batch_run, largest_batch_set], ids=["batch-run", "batch-set"])
def test_the_largest_run_fits_in_custom_status_with_room_to_spare(largest: Any) -> None:
    run = largest()

    status = run.custom_status()

    assert utf16_bytes(status, escape=True) < CUSTOM_STATUS_BUDGET
    assert utf16_bytes(status, escape=False) < CUSTOM_STATUS_BUDGET
    assert utf16_bytes(run.resource_view(), escape=True) > CUSTOM_STATUS_LIMIT or largest is largest_batch_set
    # The API's resource is whole all the same: what custom status leaves out comes from the orchestration's input.
    run_id = RunId.parse(run.run_id)
    read = run_resource(run_id, "Running", status, None, json.dumps(run.to_dict()))
    assert read == run.resource_view() | {"orchestrationStatus": "Running"}


def test_a_shard_that_moved_is_read_with_the_monitor_link_of_its_place() -> None:
    east = {"resource": "east", "deployment": "d", "monitorUrl": "https://portal/east"}
    west = {"resource": "west", "deployment": "d", "monitorUrl": "https://portal/west"}
    started = replace(largest_batch_run(), resource="east", monitor_url=east["monitorUrl"], places=[east, west])
    moved = replace(started, resource="west", monitor_url=west["monitorUrl"])

    view = run_resource(RunId.parse(started.run_id), "Running", moved.custom_status(), None, started.to_dict())

    assert (view["resource"], view["monitorUrl"]) == ("west", "https://portal/west")
    assert view == moved.resource_view() | {"orchestrationStatus": "Running"}


def test_a_chat_runs_custom_status_leaves_out_its_response_whatever_its_length() -> None:
    run = ChatRun("d::chat::" + HEX, "r", "d", "d", "u" * 100_000, "2026-11-29T18:00:00Z", "https://p", "s" * 100_000)
    outputs = {"response": "😀" * 100_000, "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    view = run.resource_view(RunStatus.SUCCESS, outputs=outputs | {"finish_reason": "stop"}, failure=None)

    status = custom_status_of(view)

    assert utf16_bytes(status, escape=True) < CUSTOM_STATUS_LIMIT
    assert status["outputs"]["response"] is None
    assert status["outputs"]["total_tokens"] == 3
    assert custom_status_of(run.resource_view(RunStatus.RUNNING)) == run.resource_view(RunStatus.RUNNING)


@pytest.mark.parametrize(
    ("runtime", "status", "code"),
    [("Failed", "Failed", "orchestration_failed"), ("Terminated", "Cancelled", "terminated")],
)
def test_an_orchestration_that_failed_or_was_terminated_says_so_without_internals(
    runtime: str, status: str, code: str
) -> None:
    run_id = RunId.parse(f"gpt-4o-batch::batch::{HEX}")
    traceback = 'Orchestrator function failed: Traceback (most recent call last):\n  File "/home/site/wwwroot/x.py"'

    view = run_resource(run_id, runtime, None, traceback, None)

    assert (view["status"], view["failure"]["code"], view["orchestrationStatus"]) == (status, code, runtime)
    assert "Traceback" not in json.dumps(view)
    assert "wwwroot" not in json.dumps(view)


def test_a_run_not_yet_started_reads_as_it_was_started() -> None:
    run = largest_batch_run()
    run_id = RunId.parse(run.run_id)

    pending = run_resource(run_id, "Pending", None, None, json.dumps(run.to_dict()))
    unknown = run_resource(run_id, "Pending", None, None, "not json")

    assert pending == run.resource_view() | {"orchestrationStatus": "Pending"}
    assert unknown == {"id": run.run_id, "runId": None, "status": "Starting", "orchestrationStatus": "Pending"}
    assert ORCHESTRATION_FAILED.message.endswith("in the app's logs.")


def test_a_runs_shards_are_named_after_it_and_listed_by_one_prefix() -> None:
    parent = RunId.parse(f"gpt-4o-batch::batch::{HEX}")
    shard = parent.shard_of(12)

    assert str(shard) == f"gpt-4o-batch::batch::{HEX}::s12"
    assert (RunId.parse(str(shard)), shard.parent) == (shard, parent)
    assert str(shard).startswith(parent.shards_prefix)
    assert not str(parent).startswith(parent.shards_prefix)
