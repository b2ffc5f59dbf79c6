"""What every run shares: run ids, failures without internals, the run resource and its size as custom status."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shared.batch_run import BatchRun, BatchSnapshot, Phase
from shared.chat import ChatRun, custom_status_of
from shared.jobs import JobType
from shared.problems import Problem
from shared.run_requests import MAX_BLOB_URL
from shared.runs import (
    HINTS,
    MAX_FAILURE_MESSAGE,
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


def largest_batch_run() -> BatchRun:
    """Every field of a batch run at the longest it can be, with the worst text for JSON escaping."""
    deployment = "d" * 64
    resource = OpenAIResource(
        name="r" * 64,
        endpoint="https://x.openai.azure.com",
        subscription_id="00000000-0000-0000-0000-000000000000",
        resource_group="g" * 90,
        tenant_id="00000000-0000-0000-0000-000000000000",
    )
    worst = "😀" * 10_000
    # A blob run's locations at their longest (percent-encoded: JSON escapes nothing in them).
    blob = "https://" + "a" * 24 + ".blob.core.windows.net/" + "c" * 63 + "/"
    input_blob = blob + "%F0" * ((MAX_BLOB_URL - len(blob)) // 3) + "b" * ((MAX_BLOB_URL - len(blob)) % 3)
    folder = input_blob
    batch = BatchSnapshot(
        id="batch_" + "b" * 94,
        status="failed",
        created_at=1_800_000_000,
        failed_at=1_800_000_001,
        output_file_id="file-" + "o" * 95,
        error_file_id="file-" + "e" * 95,
        total=10**9,
        completed=10**9,
        failed=10**9,
        errors=tuple(Failure.of("c" * 500, worst, line=10**9, param=worst) for _ in range(5)),
        output_blob=f"{folder}/{uuid.UUID(int=0)}/results.jsonl",
        error_blob=f"{folder}/{uuid.UUID(int=0)}/errors.jsonl",
    )
    return BatchRun(
        run_id=f"{deployment}::batch::{HEX}",
        resource=resource.name,
        external_id=f"{deployment}::batch",
        deployment=deployment,
        endpoint="/chat/completions",
        completion_window="24h",
        requested_at="2026-11-29T18:00:00.123456Z",
        monitor_url=resource.portal_url,
        phase=Phase.CANCELLING,
        status=RunStatus.FAILED,
        deadline="2026-11-30T19:00:00.123456Z",
        batch=batch,
        quota_waits=10**9,
        failure=Failure.of("invalid_request", worst, line=10**9, param=worst),
        next_check_at="2026-11-29T18:00:00.123456Z",
        input_blob=input_blob,
        output_folder=folder,
    )


def utf16_bytes(value: Any, *, escape: bool) -> int:
    """The custom status as the host measures it: JSON in UTF-16, with and without non-ASCII escaped."""
    return len(json.dumps(value, ensure_ascii=escape).encode("utf-16-le"))


def test_the_largest_batch_run_resource_fits_in_custom_status() -> None:
    view = largest_batch_run().resource_view()

    assert utf16_bytes(view, escape=True) < CUSTOM_STATUS_LIMIT
    assert utf16_bytes(view, escape=False) < CUSTOM_STATUS_LIMIT


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
