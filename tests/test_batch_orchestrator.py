"""The batch_run orchestrator, driven through the real azure-functions-durable replay engine (tests/replay.py).

The decisions themselves are tested as a table in tests/test_batch_decisions.py; these tests show the orchestrator
carries them out with the Durable API: activities with their step as input, durable timers, the cancel event,
continue-as-new, and the run resource as custom status and output.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from blueprints.batch_runs import CANCEL_EVENT
from shared.batch_run import (
    MAX_EPISODE_EVENTS,
    MAX_RESOLVE_FAILURES,
    MAX_SUBMIT_FAILURES,
    QUOTA_BACKOFF,
    SUBMIT_BACKOFF,
    BatchChecked,
    BatchRun,
    BatchSnapshot,
    CancelAnswered,
    Indexed,
    InputResolved,
    ResultsCollected,
    SubmitAnswered,
    SubmitOutcome,
    seen_to_dict,
)
from shared.polling import DEFAULT_POLICY
from shared.runs import FROM_INPUT, Failure, RunId, run_resource
from tests.replay import Replay

START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
CREATED = int(START.timestamp()) + 2
RUN_ID = "gpt-4o-batch::batch::0123456789abcdef0123456789abcdef"


def run_input(**changes: Any) -> dict[str, Any]:
    run = BatchRun(
        run_id=RUN_ID,
        resource="aoai-devstack-eastus",
        external_id="gpt-4o-batch::batch",
        deployment="gpt-4o-batch",
        endpoint="/chat/completions",
        completion_window="24h",
        requested_at="2026-11-26T09:00:00Z",
        monitor_url="https://portal.azure.com/#@t/resource/x/overview",
        input_file_id="file-abc123",
    )
    return run.to_dict() | changes


def snapshot(status: str, **fields: Any) -> BatchSnapshot:
    values: dict[str, Any] = {"id": "batch_1", "status": status, "created_at": CREATED, "expires_at": CREATED + 86400}
    if status != "validating":
        values |= {"in_progress_at": CREATED + 60, "total": 100, "completed": 0, "failed": 0}
    values.update(fields)
    return BatchSnapshot(**values)


COMPLETED = snapshot(
    "completed",
    completed=98,
    failed=2,
    finalizing_at=CREATED + 600,
    completed_at=CREATED + 700,
    output_file_id="file-out",
    error_file_id="file-err",
)


def answer(outcome: SubmitOutcome, batch: BatchSnapshot | None = None, **extra: Any) -> dict[str, Any]:
    return seen_to_dict(SubmitAnswered(outcome=outcome, batch=batch, **extra))


def checked(batch: BatchSnapshot, cancel_requested: bool = False) -> dict[str, Any]:
    return seen_to_dict(BatchChecked(batch=batch, cancel_requested=cancel_requested))


class BatchReplay(Replay):
    """The replay, with the run index's writes answered as the index_run activity answers them: each test
    speaks of the steps that matter to it."""

    indexed: list[str]

    collected: ClassVar[dict[str, int]] = {
        "prompt_tokens": 20,
        "completion_tokens": 10,
        "total_tokens": 30,
        "cached_tokens": 0,
    }

    def run(self) -> dict[str, Any]:
        state = super().run()
        pending = [p for p in self.pending if p.kind == "activity" and p.name in ("index_run", "collect_results")]
        if pending and pending[0].name == "index_run":
            status = pending[0].input["view"]["status"]
            self.indexed = [*getattr(self, "indexed", []), status]
            return self.complete("index_run", seen_to_dict(Indexed(status=status)))
        if pending:
            answer = ResultsCollected(succeeded=1, failed=0, usage=self.collected)
            return self.complete("collect_results", seen_to_dict(answer))
        return state


def started(**changes: Any) -> BatchReplay:
    replay = BatchReplay("batch_run", run_input(**changes), instance_id=RUN_ID, now=START)
    replay.run()
    return replay


def submitted(batch: BatchSnapshot | None = None) -> BatchReplay:
    replay = started()
    replay.complete("submit_batch", answer(SubmitOutcome.SUBMITTED, batch or snapshot("validating")))
    return replay


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_first_episode_submits_with_the_submit_step_and_shows_starting() -> None:
    replay = started()

    submit = replay.activity("submit_batch")
    assert (submit.input["run_id"], submit.input["attempt"]) == (RUN_ID, 1)
    assert (submit.input["input_file_id"], submit.input["lookup_only"]) == ("file-abc123", False)
    assert submit.retry is None  # retries are the run's own decisions, on durable timers
    assert (replay.custom_status["status"], replay.custom_status["runId"]) == ("Starting", None)
    assert not replay.done


def test_secret_input_is_resolved_by_an_activity_before_submit() -> None:
    replay = started(input_file_id=None, input_file_secret="batch-input")

    assert replay.activity().input == {"run_id": RUN_ID, "secret": "batch-input"}
    replay.complete("resolve_batch_input", seen_to_dict(InputResolved(version="v1")))

    submit = replay.activity("submit_batch")
    assert (submit.input["input_file_secret"], submit.input["secret_version"]) == ("batch-input", "v1")
    assert "file-" not in json.dumps(replay.custom_status)


def test_missing_secret_fails_the_run_naming_the_secret() -> None:
    replay = started(input_file_id=None, input_file_secret="batch-input")
    refusal = Failure.of(
        "input_secret_unavailable", "Key Vault secret 'batch-input' was not found in the vault", param="inputFileSecret"
    )

    replay.complete("resolve_batch_input", seen_to_dict(InputResolved(refusal=refusal)))

    assert replay.done
    assert (replay.output["status"], replay.output["failure"]) == ("Failed", refusal.to_dict())


def test_an_activity_failure_never_reaches_the_run_resource() -> None:
    replay = started(input_file_id=None, input_file_secret="batch-input")
    internals = 'Result: Failure\nException: SecretUnavailable: boom\nStack: File "/home/site/wwwroot/shared/x.py"'
    for _ in range(MAX_RESOLVE_FAILURES - 1):
        replay.fail("resolve_batch_input", internals)
        replay.fire_timer()
    replay.fail("resolve_batch_input", internals)

    assert replay.done
    failure = replay.output["failure"]
    assert (failure["code"], failure["param"]) == ("input_secret_unavailable", "inputFileSecret")
    text = json.dumps(replay.output)
    assert "Stack" not in text
    assert "wwwroot" not in text
    assert "Exception" not in text


def test_after_submit_the_run_waits_on_a_durable_timer_then_checks() -> None:
    replay = submitted()

    status = replay.custom_status
    assert (status["status"], status["azureStatus"], status["runId"]) == ("Running", "validating", "batch_1")
    timer = replay.timer()
    assert timer.fire_at is not None
    assert timer.fire_at - START == timedelta(seconds=DEFAULT_POLICY.validating[0])  # validating: a look in 2 minutes
    assert status["nextCheckAt"] == stamp(timer.fire_at)
    assert not [p for p in replay.pending if p.kind == "activity"]

    replay.fire_timer()
    check = replay.activity()
    assert (check.name, check.input) == (
        "check_batch",
        {"run_id": RUN_ID, "resource": "aoai-devstack-eastus", "batch_id": "batch_1"},
    )


def test_a_long_wait_ends_just_after_the_completion_windows_end_where_azure_expires_the_batch() -> None:
    replay = submitted()
    replay.fire_timer()
    # half done after 23 hours running: the estimate says 23 more, but the window ends in 2 minutes
    day_old = CREATED + 240 - 86400
    batch = snapshot(
        "in_progress", created_at=day_old, expires_at=day_old + 86400, in_progress_at=day_old + 3600, completed=50
    )
    replay.complete("check_batch", checked(batch))

    timer = replay.timer()
    assert timer.fire_at is not None
    window_end = datetime.fromtimestamp(day_old + 86400, UTC)
    assert timer.fire_at == window_end + timedelta(seconds=DEFAULT_POLICY.after_expiry)
    assert timer.fire_at - replay.now < timedelta(seconds=DEFAULT_POLICY.longest)


def test_completed_batch_ends_success_with_the_five_outputs_and_times() -> None:
    replay = submitted()
    replay.fire_timer()
    replay.complete("check_batch", checked(snapshot("in_progress", completed=40)))
    assert replay.custom_status["progress"] == {"total": 100, "completed": 40, "failed": 0, "percent": 40.0}
    replay.fire_timer()
    replay.complete("check_batch", checked(COMPLETED))

    assert replay.done
    run = replay.output
    assert (run["status"], run["azureStatus"], run["runId"]) == ("Success", "completed", "batch_1")
    assert run["outputs"] == {
        "output_file_id": "file-out",
        "error_file_id": "file-err",
        "request_counts_total": 100,
        "request_counts_completed": 98,
        "request_counts_failed": 2,
        "output_blob": None,
        "error_blob": None,
    } | BatchReplay.collected | {"estimatedCost": None}
    assert run["startedAt"] == stamp(datetime.fromtimestamp(CREATED, UTC))
    assert run["endedAt"] == stamp(datetime.fromtimestamp(CREATED + 700, UTC))
    assert (run["failure"], run["phase"], run["nextCheckAt"]) == (None, "done", None)
    # Its custom status leaves out what the input holds; read with the input, it is the whole resource.
    assert not FROM_INPUT & set(replay.custom_status)
    assert run_resource(RunId.parse(RUN_ID), "Running", replay.custom_status, None, replay.input) == run | {
        "orchestrationStatus": "Running"
    }


@pytest.mark.parametrize(
    ("batch", "status", "code"),
    [
        (
            snapshot("failed", failed_at=CREATED + 30, errors=(Failure.of("input_file_not_found", "gone"),)),
            "Failed",
            "input_file_not_found",
        ),
        (
            snapshot("expired", expired_at=CREATED + 86400, completed=60, output_file_id="file-partial"),
            "Failed",
            "expired",
        ),
        (
            snapshot("cancelled", cancelled_at=CREATED + 900, completed=10, output_file_id="file-partial"),
            "Cancelled",
            None,
        ),
    ],
)
def test_terminal_azure_status_ends_the_run_with_its_failure_and_end_time(
    batch: BatchSnapshot, status: str, code: str | None
) -> None:
    replay = submitted()
    replay.fire_timer()
    replay.complete("check_batch", checked(batch))

    run = replay.output
    assert run["status"] == status
    assert (run["failure"] or {}).get("code") == code
    assert run["endedAt"] == stamp(datetime.fromtimestamp(batch.ended_at or 0, UTC))


def test_submit_failures_wait_on_timers_with_backoff_then_succeed() -> None:
    replay = started()
    waits = []
    for _ in range(3):
        replay.fail("submit_batch", "SubmitUnknown: submit outcome unknown (503 ServiceUnavailable)")
        timer = replay.timer()
        assert timer.fire_at is not None
        waits.append((timer.fire_at - replay.now).total_seconds())
        replay.fire_timer()
    assert waits == [SUBMIT_BACKOFF.delay(1), SUBMIT_BACKOFF.delay(2), SUBMIT_BACKOFF.delay(3)]

    replay.complete("submit_batch", answer(SubmitOutcome.REATTACHED, snapshot("validating")))
    assert replay.custom_status["status"] == "Running"


def test_submit_failing_until_the_limit_fails_the_run_naming_the_run_id() -> None:
    replay = started()
    for attempt in range(MAX_SUBMIT_FAILURES):
        replay.fail("submit_batch", "SubmitUnknown: submit outcome unknown (503 ServiceUnavailable)")
        if replay.continued:  # long storms continue as new too; the count carries over
            replay.continue_as_new()
        if replay.done:
            break
        replay.fire_timer()
        if replay.continued:
            replay.continue_as_new()
        assert attempt < MAX_SUBMIT_FAILURES - 1

    assert replay.done
    failure = replay.output["failure"]
    assert failure["code"] == "submit_unknown"
    assert f"runId={RUN_ID}" in failure["message"]
    assert "503" not in failure["message"]  # the activity's error text stays in the logs


def test_cancel_after_an_unknown_submit_looks_for_the_batch_before_ending() -> None:
    replay = started()
    replay.fail("submit_batch", "SubmitUnknown: submit outcome unknown (500 InternalServerError)")

    replay.raise_event(CANCEL_EVENT)

    lookup = replay.activity("submit_batch")
    assert lookup.input["lookup_only"] is True
    replay.complete("submit_batch", answer(SubmitOutcome.REATTACHED, snapshot("in_progress", completed=3)))
    assert replay.activity().name == "cancel_batch"  # the found batch is cancelled, not orphaned


def test_cancel_before_submission_ends_cancelled_without_creating_a_batch() -> None:
    replay = started()
    replay.complete("submit_batch", answer(SubmitOutcome.QUOTA))

    replay.raise_event(CANCEL_EVENT, {"requestedAt": "now"})

    assert replay.done
    assert (replay.output["status"], replay.output["runId"]) == ("Cancelled", None)
    assert not [p for p in replay.pending if p.kind == "activity"]


def test_cancel_event_arriving_during_an_activity_is_honoured_at_the_next_step() -> None:
    replay = started()
    replay.raise_event(CANCEL_EVENT)  # arrives while submit_batch runs
    replay.complete("submit_batch", answer(SubmitOutcome.QUOTA))

    assert replay.done
    assert replay.output["status"] == "Cancelled"


def test_token_quota_waits_with_backoff_showing_starting_then_submits() -> None:
    replay = started()
    waits = []
    for _ in range(3):
        replay.complete("submit_batch", answer(SubmitOutcome.QUOTA))
        assert (replay.custom_status["status"], replay.custom_status["phase"]) == ("Starting", "quota")
        timer = replay.timer()
        assert timer.fire_at is not None
        waits.append((timer.fire_at - replay.now).total_seconds())
        replay.fire_timer()
    assert waits == [QUOTA_BACKOFF.first, QUOTA_BACKOFF.first * 2, QUOTA_BACKOFF.first * 4]
    assert replay.custom_status["quotaAttempts"] == 3

    replay.complete("submit_batch", answer(SubmitOutcome.SUBMITTED, snapshot("validating")))
    assert replay.custom_status["status"] == "Running"


def test_cancel_after_submission_cancels_the_batch_and_polls_to_cancelled() -> None:
    replay = submitted(snapshot("in_progress", completed=20))

    replay.raise_event(CANCEL_EVENT)
    cancel = replay.activity("cancel_batch")
    assert cancel.input["batch_id"] == "batch_1"
    cancelling = snapshot("cancelling", completed=22, cancelling_at=CREATED + 300)
    replay.complete("cancel_batch", seen_to_dict(CancelAnswered(batch=cancelling)))
    assert (replay.custom_status["phase"], replay.custom_status["status"]) == ("cancelling", "Running")
    replay.fire_timer()
    cancelled = snapshot("cancelled", completed=22, cancelled_at=CREATED + 500, output_file_id="file-partial")
    replay.complete("check_batch", checked(cancelled, cancel_requested=True))

    assert replay.done
    run = replay.output
    assert (run["status"], run["outputs"]["request_counts_completed"]) == ("Cancelled", 22)
    assert run["outputs"]["output_file_id"] == "file-partial"
    assert len([e for e in replay.history if e.get("Name") == "cancel_batch"]) == 1


def test_cancel_seen_by_a_status_check_cancels_the_batch() -> None:
    replay = submitted(snapshot("in_progress", completed=20))
    replay.fire_timer()

    replay.complete("check_batch", checked(snapshot("in_progress", completed=30), cancel_requested=True))

    assert replay.activity().name == "cancel_batch"


def test_failed_status_checks_do_not_fail_the_run() -> None:
    replay = submitted()
    replay.fire_timer()
    replay.fail("check_batch", "Azure OpenAI 503 ServiceUnavailable")

    assert not replay.done
    replay.fire_timer()
    replay.complete("check_batch", checked(COMPLETED))
    assert replay.output["status"] == "Success"


def episode_events(replay: Replay) -> int:
    return len(replay.history)


def test_episodes_continue_as_new_before_their_history_passes_the_limit() -> None:
    replay = submitted(snapshot("in_progress", completed=1))
    longest = 0
    polls = 0
    while polls < 40:
        if replay.activity_pending:
            replay.complete("check_batch", checked(snapshot("in_progress", completed=2 + polls)))
            polls += 1
        else:
            replay.fire_timer()
        longest = max(longest, episode_events(replay))
        if replay.continued:
            carried = replay.continued_with
            assert (carried["phase"], carried["polls"]) == ("polling", polls)
            replay.continue_as_new()
            assert not [e for e in replay.history if e.get("Name") == "submit_batch"]  # never a second submit
            longest = max(longest, episode_events(replay))
    assert not replay.done
    assert replay.executions > 3
    assert longest <= MAX_EPISODE_EVENTS
    while replay.continued or not replay.done:
        if replay.continued:
            replay.continue_as_new()
        elif replay.activity_pending:
            replay.complete("check_batch", checked(COMPLETED))
        else:
            replay.fire_timer()
    assert replay.output["status"] == "Success"


def test_a_step_put_off_by_continue_as_new_is_the_next_episodes_first() -> None:
    replay = submitted(snapshot("in_progress", completed=1))
    while not replay.continued:
        replay.fire_timer()
        if not replay.continued:
            replay.complete("check_batch", checked(snapshot("in_progress", completed=2)))
    put_off = replay.continued_with["resume"]

    replay.continue_as_new()

    pending = replay.pending[0]
    if put_off["step"] == "Check":
        assert (pending.kind, pending.name, pending.input["batch_id"]) == ("activity", "check_batch", "batch_1")
    else:
        assert pending.kind == "timer"
        assert stamp(pending.fire_at) == put_off["until"]  # type: ignore[arg-type]


def test_deadline_passed_cancels_the_batch_and_fails_with_timeout() -> None:
    replay = submitted(snapshot("in_progress", completed=1))
    replay.now = datetime.fromtimestamp(CREATED, UTC) + timedelta(hours=25, minutes=1)  # the host was down
    replay.fire_timer()
    replay.complete("check_batch", checked(snapshot("in_progress", completed=50)))

    assert replay.activity().name == "cancel_batch"
    cancelling = snapshot("cancelling", completed=50, cancelling_at=CREATED + 90000)
    replay.complete("cancel_batch", seen_to_dict(CancelAnswered(batch=cancelling)))

    assert replay.done
    assert (replay.output["status"], replay.output["failure"]["code"]) == ("Failed", "timeout")


def test_the_deadline_follows_the_batch_creation_time() -> None:
    replay = started()
    assert replay.custom_status is not None

    replay.complete("submit_batch", answer(SubmitOutcome.SUBMITTED, snapshot("validating")))

    expected = datetime.fromtimestamp(CREATED, UTC) + timedelta(hours=25)  # Azure's created_at + window + grace
    assert replay.state["actions"]  # the timer was created
    assert BatchRun.from_dict(_state_after(replay)).deadline == stamp(expected)


def _state_after(replay: Replay) -> dict[str, Any]:
    """The run state the orchestration carries, as it passes it on when it continues as new."""
    while not replay.continued:
        replay.fire_timer()
        if not replay.continued:
            replay.complete("check_batch", checked(snapshot("in_progress", completed=1)))
    return dict(replay.continued_with)


def test_replaying_the_whole_history_is_deterministic() -> None:
    replay = submitted(snapshot("in_progress", completed=10))
    replay.fire_timer()
    first = replay.state

    again = replay.run()  # the same history once more, with nothing new

    assert again["customStatus"] == first["customStatus"]
    assert again["actions"] == first["actions"]
    assert len(replay.pending) == 1


def test_a_batch_failed_for_quota_at_validation_is_followed_by_the_next_attempt() -> None:
    replay = submitted()
    replay.fire_timer()
    quota_failed = snapshot(
        "failed",
        failed_at=CREATED + 30,
        errors=(Failure.of("token_limit_exceeded", "The number of enqueued tokens has surpassed the limit."),),
    )

    replay.complete("check_batch", checked(quota_failed))

    assert not replay.done
    assert (replay.custom_status["status"], replay.custom_status["phase"]) == ("Starting", "quota")
    replay.fire_timer()  # the quota backoff
    again = replay.activity("submit_batch")
    assert again.input["attempt"] == 2
    replay.complete("submit_batch", answer(SubmitOutcome.SUBMITTED, snapshot("validating", id="batch_2")))
    replay.fire_timer()
    replay.complete("check_batch", checked(BatchSnapshot(**{**COMPLETED.__dict__, "id": "batch_2"})))
    assert (replay.output["status"], replay.output["runId"]) == ("Success", "batch_2")


def test_the_run_index_learns_every_change_of_status_before_the_run_goes_on() -> None:
    replay = submitted()
    replay.fire_timer()
    replay.complete("check_batch", checked(COMPLETED))

    assert replay.indexed == ["Starting", "Running", "Success"]
    assert replay.output["status"] == "Success"
    writes = [e["Name"] for e in replay.history if e.get("EventType") == 4]  # TaskScheduled, in order
    assert writes == ["index_run", "submit_batch", "index_run", "check_batch", "collect_results", "index_run"]


def test_a_failed_index_write_does_not_stop_the_run() -> None:
    replay = Replay("batch_run", run_input(), instance_id=RUN_ID, now=START)
    replay.run()

    replay.fail("index_run", "Azure Table Storage 503")

    assert replay.activity().name == "submit_batch"


def test_a_status_is_indexed_before_it_shows_and_before_any_continue_as_new() -> None:
    """A run's new status is indexed in the episode that decides it, so the portal and the API show it only once the
    run index has it — also across continue-as-new, whose input the API shows until the new execution publishes a
    status: each number of looks moves the history limit against the end, so every position is tried."""
    continues = 0
    for looks in range(40):
        replay = started()
        replay.complete("submit_batch", answer(SubmitOutcome.SUBMITTED, snapshot("validating")))
        seen = 0
        while True:
            if replay.continued:
                carried = replay.continued_with
                assert carried["status"] == carried["indexed_status"], looks  # a new execution starts indexed
                continues += 1
                replay.continue_as_new()
            elif replay.done:
                break
            elif not replay.activity_pending:
                replay.fire_timer()
            else:
                seen += 1
                replay.complete("check_batch", checked(COMPLETED if seen > looks else snapshot("in_progress")))
            shown = replay.custom_status["status"] if replay.custom_status else "Starting"
            assert shown in ["Starting", *replay.indexed], looks
        assert replay.output["status"] == "Success"
    assert continues  # the sweep crossed the history limit
