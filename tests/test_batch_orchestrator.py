"""The batch_run orchestrator, driven through the real azure-functions-durable replay engine (tests/replay.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blueprints.batch_runs import CANCEL_EVENT, MAX_SUBMIT_ROUNDS, POLLS_PER_EXECUTION, QUOTA_BACKOFF, SUBMIT_BACKOFF
from shared.polling import DEFAULT_POLICY
from shared.runs import BatchRunState
from tests.replay import Replay

START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
CREATED = int(START.timestamp()) + 2


def run_input(**changes: Any) -> dict[str, Any]:
    state = BatchRunState(
        run_id="gpt-4o-batch::batch::0123456789abcdef",
        resource="aoai-devstack-eastus",
        external_id="gpt-4o-batch::batch",
        deployment="gpt-4o-batch",
        endpoint="/chat/completions",
        completion_window="24h",
        requested_at="2026-11-26T09:00:00Z",
        deadline="2026-11-27T10:00:00Z",
        monitor_url="https://portal.azure.com/#@t/resource/x/overview",
        input_file_id="file-abc123",
    )
    return state.to_dict() | changes


def snapshot(status: str, **fields: Any) -> dict[str, Any]:
    batch: dict[str, Any] = {
        "id": "batch_1",
        "status": status,
        "created_at": CREATED,
        "expires_at": CREATED + 86400,
        "total": None,
        "completed": None,
        "failed": None,
        "errors": [],
    }
    if status != "validating":
        batch |= {"in_progress_at": CREATED + 60, "total": 100, "completed": 0, "failed": 0}
    batch.update(fields)
    return batch


COMPLETED = snapshot(
    "completed",
    completed=98,
    failed=2,
    finalizing_at=CREATED + 600,
    completed_at=CREATED + 700,
    output_file_id="file-out",
    error_file_id="file-err",
)


def started(**changes: Any) -> Replay:
    replay = Replay("batch_run", run_input(**changes), now=START)
    replay.run()
    return replay


def submitted(batch: dict[str, Any] | None = None) -> Replay:
    replay = started()
    replay.complete("submit_batch", {"outcome": "submitted", "batch": batch or snapshot("validating")})
    return replay


def test_first_episode_submits_with_the_run_state_and_shows_starting() -> None:
    replay = started()

    submit = replay.activity("submit_batch")
    assert submit.input["run_id"] == "gpt-4o-batch::batch::0123456789abcdef"
    assert submit.input["input_file_id"] == "file-abc123"
    assert submit.retry == {"firstRetryIntervalInMilliseconds": 5000, "maxNumberOfAttempts": 5}
    assert replay.custom_status["status"] == "Starting"
    assert replay.custom_status["runId"] is None
    assert not replay.done


def test_secret_input_is_resolved_by_an_activity_before_submit() -> None:
    replay = started(input_file_id=None, input_file_secret="batch-input")

    assert replay.activity().name == "resolve_batch_input"
    replay.complete("resolve_batch_input", {"name": "batch-input", "version": "v1"})

    submit = replay.activity("submit_batch")
    assert submit.input["secret_version"] == "v1"
    assert "file-" not in str(replay.custom_status)


def test_missing_secret_fails_the_run_naming_the_secret_after_retries() -> None:
    replay = started(input_file_id=None, input_file_secret="batch-input")
    for _ in range(5):
        replay.fail("resolve_batch_input", "Key Vault secret 'batch-input' was not found in the vault")
        replay.fire_timer()

    assert replay.done
    failure = replay.output["failure"]
    assert (replay.output["status"], failure["code"], failure["param"]) == (
        "Failed",
        "input_secret_unavailable",
        "inputFileSecret",
    )
    assert "batch-input" in failure["message"]
    assert not [p for p in replay.pending if p.kind == "activity"]


def test_after_submit_the_run_waits_on_a_durable_timer_then_checks() -> None:
    replay = submitted()

    status = replay.custom_status
    assert (status["status"], status["azureStatus"], status["runId"]) == ("Running", "validating", "batch_1")
    timer = replay.timer()
    assert timer.fire_at is not None
    assert timer.fire_at - START == timedelta(seconds=DEFAULT_POLICY.validating[0])  # validating: a look in 2 minutes
    assert status["nextCheckAt"] == timer.fire_at.isoformat().replace("+00:00", "Z")
    assert not [p for p in replay.pending if p.kind == "activity"]

    replay.fire_timer()
    assert replay.activity().name == "check_batch"


def test_a_long_wait_ends_just_after_the_completion_windows_end_where_azure_expires_the_batch() -> None:
    replay = submitted()
    replay.fire_timer()
    # half done after 23 hours running: the estimate says 23 more, but the window ends in 2 minutes
    day_old = CREATED + 240 - 86400
    batch = snapshot(
        "in_progress", created_at=day_old, expires_at=day_old + 86400, in_progress_at=day_old + 3600, completed=50
    )
    replay.complete("check_batch", {"batch": batch, "cancelRequested": False})

    timer = replay.timer()
    assert timer.fire_at is not None
    window_end = datetime.fromtimestamp(day_old + 86400, UTC)
    assert timer.fire_at == window_end + timedelta(seconds=DEFAULT_POLICY.after_expiry)
    assert timer.fire_at - replay.now < timedelta(seconds=DEFAULT_POLICY.longest)


def test_completed_batch_ends_success_with_the_five_outputs_and_times() -> None:
    replay = submitted()
    replay.fire_timer()
    replay.complete("check_batch", {"batch": snapshot("in_progress", completed=40), "cancelRequested": False})
    assert replay.custom_status["progress"] == {"total": 100, "completed": 40, "failed": 0, "percent": 40.0}
    replay.fire_timer()
    replay.complete("check_batch", {"batch": COMPLETED, "cancelRequested": False})

    assert replay.done
    run = replay.output
    assert (run["status"], run["azureStatus"], run["runId"]) == ("Success", "completed", "batch_1")
    assert run["outputs"] == {
        "output_file_id": "file-out",
        "error_file_id": "file-err",
        "request_counts_total": 100,
        "request_counts_completed": 98,
        "request_counts_failed": 2,
    }
    assert run["startedAt"] == datetime.fromtimestamp(CREATED, UTC).isoformat().replace("+00:00", "Z")
    assert run["endedAt"] == datetime.fromtimestamp(CREATED + 700, UTC).isoformat().replace("+00:00", "Z")
    assert run["failure"] is None
    assert replay.custom_status == run


@pytest.mark.parametrize(
    ("batch", "status", "code", "hint"),
    [
        (
            snapshot(
                "failed",
                failed_at=CREATED + 30,
                errors=[{"code": "input_file_not_found", "message": "gone", "line": None, "param": None}],
            ),
            "Failed",
            "input_file_not_found",
            "scoped to the Azure OpenAI resource",
        ),
        (
            snapshot(
                "failed",
                failed_at=CREATED + 30,
                errors=[{"code": "model_not_found", "message": "no model", "line": 3, "param": "body.model"}],
            ),
            "Failed",
            "model_not_found",
            "re-import",
        ),
        (
            snapshot("expired", expired_at=CREATED + 86400, completed=60, output_file_id="file-partial"),
            "Failed",
            "expired",
            "completion window",
        ),
        (
            snapshot("cancelled", cancelled_at=CREATED + 900, completed=10, output_file_id="file-partial"),
            "Cancelled",
            None,
            None,
        ),
    ],
)
def test_terminal_azure_status_maps_to_run_status_with_failure_detail(
    batch: dict[str, Any], status: str, code: str | None, hint: str | None
) -> None:
    replay = submitted()
    replay.fire_timer()
    replay.complete("check_batch", {"batch": batch, "cancelRequested": False})

    run = replay.output
    assert run["status"] == status
    if code is None:
        assert run["failure"] is None
    else:
        assert run["failure"]["code"] == code
        assert hint in run["failure"]["hint"]
    end_field = {"failed": "failed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[batch["status"]]
    assert run["endedAt"] == datetime.fromtimestamp(batch[end_field], UTC).isoformat().replace("+00:00", "Z")
    if batch.get("output_file_id"):
        assert run["outputs"]["output_file_id"] == "file-partial"


def test_reattached_submit_continues_like_a_new_one() -> None:
    replay = started()
    replay.complete("submit_batch", {"outcome": "reattached", "batch": snapshot("in_progress", completed=5)})

    assert replay.custom_status["runId"] == "batch_1"
    assert replay.timer()


def test_submit_retries_after_an_unknown_outcome_then_succeeds() -> None:
    replay = started()
    replay.fail("submit_batch", "submit outcome unknown (500 InternalServerError)")
    replay.fire_timer()  # DTFx's retry interval

    retry = replay.activity("submit_batch")
    assert retry.attempts == 2
    replay.complete("submit_batch", {"outcome": "reattached", "batch": snapshot("validating")})
    assert replay.custom_status["status"] == "Running"


def exhaust_submit_retries(replay: Replay) -> None:
    for _ in range(5):  # DTFx's attempts of one call_activity_with_retry
        replay.fail("submit_batch", "submit outcome unknown (503 ServiceUnavailable)")
        replay.fire_timer()


def test_a_long_5xx_storm_on_submit_waits_on_timers_and_tries_again() -> None:
    replay = started()
    exhaust_submit_retries(replay)

    assert not replay.done
    assert replay.custom_status["status"] == "Starting"
    timer = replay.timer()
    assert timer.fire_at is not None
    assert (timer.fire_at - replay.now).total_seconds() == SUBMIT_BACKOFF[0]
    replay.fire_timer()
    replay.complete("submit_batch", {"outcome": "reattached", "batch": snapshot("validating")})
    assert replay.custom_status["status"] == "Running"


def test_submit_failing_round_after_round_finally_fails_the_run() -> None:
    replay = started()
    for round_ in range(MAX_SUBMIT_ROUNDS):
        exhaust_submit_retries(replay)
        if round_ < MAX_SUBMIT_ROUNDS - 1:
            replay.fire_timer()

    assert replay.done
    failure = replay.output["failure"]
    assert failure["code"] == "submit_unknown"
    assert "503" in failure["message"]
    assert "runId=gpt-4o-batch::batch::0123456789abcdef" in failure["message"]


def test_cancel_after_an_unknown_submit_looks_for_the_batch_before_ending() -> None:
    replay = started()
    exhaust_submit_retries(replay)  # an earlier attempt may have created the batch

    replay.raise_event(CANCEL_EVENT)

    assert not replay.done
    lookup = replay.activity("submit_batch")
    assert lookup.input["lookup_only"] is True
    assert lookup.input["cancel_requested"] is True
    replay.complete("submit_batch", {"outcome": "reattached", "batch": snapshot("in_progress", completed=3)})
    assert replay.activity().name == "cancel_batch"  # the found batch is cancelled, not orphaned


def test_cancel_after_an_unknown_submit_ends_cancelled_when_no_batch_exists() -> None:
    replay = started()
    exhaust_submit_retries(replay)
    replay.raise_event(CANCEL_EVENT)

    replay.complete("submit_batch", {"outcome": "cancelled"})

    assert (replay.output["status"], replay.output["runId"]) == ("Cancelled", None)


def test_deadline_after_an_unknown_submit_looks_once_more_then_times_out() -> None:
    replay = started(deadline="2026-11-26T09:00:30Z")
    exhaust_submit_retries(replay)  # now 09:00:25
    replay.fire_timer()  # the backoff wait ends at the deadline

    lookup = replay.activity("submit_batch")
    assert lookup.input["lookup_only"] is True
    replay.complete("submit_batch", {"outcome": "not_created"})
    assert (replay.output["status"], replay.output["failure"]["code"]) == ("Failed", "timeout")


def test_rejected_submit_fails_with_azure_code() -> None:
    replay = started()
    replay.complete("submit_batch", {"outcome": "rejected", "error": {"code": "invalidPayload", "message": "bad"}})

    assert replay.done
    assert (replay.output["status"], replay.output["failure"]["code"]) == ("Failed", "invalidPayload")


def test_token_quota_waits_with_backoff_showing_starting_then_submits() -> None:
    replay = started()
    first, factor, _ = QUOTA_BACKOFF
    waits = []
    for _ in range(3):
        replay.complete("submit_batch", {"outcome": "quota", "message": "token_limit_exceeded"})
        assert replay.custom_status["status"] == "Starting"
        assert replay.custom_status["phase"] == "quota"
        timer = replay.timer()
        assert timer.fire_at is not None
        waits.append((timer.fire_at - replay.now).total_seconds())
        replay.fire_timer()
    assert waits == [first, first * factor, first * factor**2]
    assert replay.custom_status["quotaAttempts"] == 3

    replay.complete("submit_batch", {"outcome": "submitted", "batch": snapshot("validating")})
    assert replay.custom_status["status"] == "Running"


def test_quota_until_the_deadline_fails_with_timeout_and_no_batch() -> None:
    replay = started(deadline="2026-11-26T09:02:00Z")
    replay.complete("submit_batch", {"outcome": "quota", "message": "token_limit_exceeded"})
    replay.fire_timer()
    replay.complete("submit_batch", {"outcome": "quota", "message": "token_limit_exceeded"})
    timer = replay.timer()
    assert timer.fire_at == datetime(2026, 11, 26, 9, 2, tzinfo=UTC)  # never past the deadline
    replay.fire_timer()

    assert replay.done
    assert (replay.output["status"], replay.output["failure"]["code"], replay.output["runId"]) == (
        "Failed",
        "timeout",
        None,
    )


def test_cancel_before_submission_ends_cancelled_without_creating_a_batch() -> None:
    replay = started()
    replay.complete("submit_batch", {"outcome": "quota", "message": "token_limit_exceeded"})

    replay.raise_event(CANCEL_EVENT, {"requestedAt": "now"})

    assert replay.done
    assert (replay.output["status"], replay.output["runId"]) == ("Cancelled", None)
    assert not [p for p in replay.pending if p.kind == "activity"]


def test_cancel_event_arriving_during_the_first_submit_is_honoured_at_the_next_step() -> None:
    replay = started()
    replay.raise_event(CANCEL_EVENT)  # arrives while submit_batch runs
    replay.complete("submit_batch", {"outcome": "quota", "message": "token_limit_exceeded"})

    assert replay.done
    assert replay.output["status"] == "Cancelled"


def test_cancel_reported_by_the_submit_activity_ends_cancelled() -> None:
    replay = started()
    replay.complete("submit_batch", {"outcome": "cancelled"})

    assert (replay.output["status"], replay.output["runId"]) == ("Cancelled", None)


def test_cancel_after_submission_cancels_the_batch_and_polls_to_cancelled() -> None:
    replay = submitted(snapshot("in_progress", completed=20))

    replay.raise_event(CANCEL_EVENT)
    cancel = replay.activity("cancel_batch")
    assert cancel.input["batch"]["id"] == "batch_1"
    replay.complete("cancel_batch", snapshot("cancelling", completed=22, cancelling_at=CREATED + 300))
    assert replay.custom_status["phase"] == "cancelling"
    assert replay.custom_status["status"] == "Running"
    replay.fire_timer()
    replay.complete(
        "check_batch",
        {
            "batch": snapshot("cancelled", completed=22, cancelled_at=CREATED + 500, output_file_id="file-partial"),
            "cancelRequested": True,
        },
    )

    assert replay.done
    run = replay.output
    assert (run["status"], run["outputs"]["request_counts_completed"]) == ("Cancelled", 22)
    assert run["outputs"]["output_file_id"] == "file-partial"
    assert len([p for p in replay.history if p.get("Name") == "cancel_batch"]) == 1


def test_cancel_seen_by_a_status_check_cancels_the_batch() -> None:
    replay = submitted(snapshot("in_progress", completed=20))
    replay.fire_timer()

    replay.complete("check_batch", {"batch": snapshot("in_progress", completed=30), "cancelRequested": True})

    assert replay.activity().name == "cancel_batch"


def test_failed_status_checks_do_not_fail_the_run() -> None:
    replay = submitted()
    replay.fire_timer()
    replay.fail("check_batch", "Azure OpenAI 503 ServiceUnavailable")

    assert not replay.done
    replay.fire_timer()
    replay.complete("check_batch", {"batch": COMPLETED, "cancelRequested": False})
    assert replay.output["status"] == "Success"


def test_history_stays_bounded_with_continue_as_new_carrying_state() -> None:
    replay = submitted(snapshot("in_progress", completed=1))
    for poll in range(POLLS_PER_EXECUTION):
        replay.fire_timer()
        replay.complete("check_batch", {"batch": snapshot("in_progress", completed=2 + poll), "cancelRequested": False})

    assert replay.done  # this execution ends by continuing as new
    carried = replay.continued_with
    assert carried["polls"] == POLLS_PER_EXECUTION
    assert carried["batch"]["completed"] == POLLS_PER_EXECUTION + 1
    assert carried["phase"] == "polling"

    replay.continue_as_new()
    assert replay.executions == 2
    assert replay.timer()  # the new execution goes straight back to waiting, no second submit
    assert not [e for e in replay.history if e.get("Name") == "submit_batch"]
    replay.fire_timer()
    replay.complete("check_batch", {"batch": COMPLETED, "cancelRequested": False})
    assert replay.output["status"] == "Success"


def test_deadline_passed_cancels_the_batch_and_fails_with_timeout() -> None:
    replay = submitted(snapshot("in_progress", completed=1, created_at=CREATED))
    replay.now = datetime.fromtimestamp(CREATED, UTC) + timedelta(hours=25, minutes=1)  # the host was down
    replay.fire_timer()
    replay.complete("check_batch", {"batch": snapshot("in_progress", completed=50), "cancelRequested": False})

    assert replay.activity().name == "cancel_batch"
    replay.complete("cancel_batch", snapshot("cancelling", completed=50, cancelling_at=CREATED + 90000))

    assert replay.done
    assert (replay.output["status"], replay.output["failure"]["code"]) == ("Failed", "timeout")


def test_the_deadline_follows_the_batch_creation_time() -> None:
    replay = submitted()
    assert replay.input["deadline"] == "2026-11-27T10:00:00Z"  # request time + 24 h window + 1 h grace

    replay.fire_timer()

    expected = datetime.fromtimestamp(CREATED, UTC) + timedelta(hours=25)  # Azure's created_at + window + grace
    assert replay.activity("check_batch").input["deadline"] == expected.isoformat().replace("+00:00", "Z")


def test_replaying_the_whole_history_is_deterministic() -> None:
    replay = submitted(snapshot("in_progress", completed=10))
    replay.fire_timer()
    first = replay.state

    again = replay.run()  # the same history once more, with nothing new

    assert again["customStatus"] == first["customStatus"]
    assert len(replay.pending) == 1


def test_a_run_started_without_a_deadline_takes_it_from_the_orchestration_clock() -> None:
    replay = started(deadline="")

    assert replay.custom_status is not None
    assert replay.activity("submit_batch").input["deadline"] == "2026-11-27T10:00:00Z"  # START + 24 h + 1 h


def test_a_batch_that_finished_before_the_deadline_cancel_reports_azures_status() -> None:
    replay = submitted(snapshot("in_progress", completed=99))
    replay.now = datetime.fromtimestamp(CREATED, UTC) + timedelta(hours=25, minutes=1)
    replay.fire_timer()
    replay.complete("check_batch", {"batch": snapshot("finalizing", completed=100), "cancelRequested": False})

    replay.complete("cancel_batch", COMPLETED)  # Azure answered 409: it had already completed

    assert (replay.output["status"], replay.output["failure"]) == ("Success", None)


def test_after_a_cancel_the_next_check_follows_the_cancelling_pace() -> None:
    replay = submitted(snapshot("in_progress", completed=1))
    replay.raise_event(CANCEL_EVENT)

    replay.complete("cancel_batch", snapshot("cancelling", completed=1, cancelling_at=CREATED + 10))

    timer = replay.timer()
    assert timer.fire_at is not None
    assert (timer.fire_at - replay.now).total_seconds() <= 60


def test_a_batch_failed_for_quota_at_validation_is_followed_by_the_next_attempt() -> None:
    replay = submitted()
    replay.fire_timer()
    quota_failed = snapshot(
        "failed",
        failed_at=CREATED + 30,
        errors=[
            {
                "code": "token_limit_exceeded",
                "message": "The number of enqueued tokens has surpassed the configured "
                "limit of 30K for the deployment 'gpt-4o-batch'.",
                "line": None,
                "param": None,
            }
        ],
    )

    replay.complete("check_batch", {"batch": quota_failed, "cancelRequested": False})

    assert not replay.done
    assert (replay.custom_status["status"], replay.custom_status["phase"]) == ("Starting", "quota")
    replay.fire_timer()  # the quota backoff
    again = replay.activity("submit_batch")
    assert (again.input["attempt"], again.input["batch"]) == (2, None)
    replay.complete("submit_batch", {"outcome": "submitted", "batch": snapshot("validating", id="batch_2")})
    replay.fire_timer()
    replay.complete("check_batch", {"batch": COMPLETED | {"id": "batch_2"}, "cancelRequested": False})
    assert (replay.output["status"], replay.output["runId"]) == ("Success", "batch_2")
