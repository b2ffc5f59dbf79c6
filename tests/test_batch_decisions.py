"""The batch run's one decision, `decide(run, seen, now)`, as a table over states x observations.

Two kinds of test: a table of exact expectations (the rules: deadline, backoffs, give-up limits at their edges,
continue-as-new, failures), and a sweep over every phase x every observation that can follow it, checking the
invariants every decision keeps (never a create once the run is ending, waits within the deadline, a failed run
always says why, the episode's history within its limit).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.batch_run import (
    ACTIVITY_BACKOFF,
    EPISODE_START_EVENTS,
    EVENT_RESERVE,
    MAX_COLLECT_FAILURES,
    MAX_EPISODE_EVENTS,
    MAX_FAILED_CHECKS,
    MAX_RESOLVE_FAILURES,
    MAX_SUBMIT_FAILURES,
    QUOTA_BACKOFF,
    STEP_EVENTS,
    SUBMIT_BACKOFF,
    ActivityFailed,
    Backoff,
    BatchChecked,
    BatchRun,
    BatchSnapshot,
    Began,
    CancelAnswered,
    CancelArrived,
    CancelBatch,
    Check,
    CollectResults,
    ContinueAsNew,
    DeleteUploads,
    Finish,
    Indexed,
    IndexRun,
    InputResolved,
    InputUploaded,
    Phase,
    ResolveInput,
    ResultsCollected,
    Seen,
    Step,
    Submit,
    SubmitAnswered,
    SubmitOutcome,
    TimerFired,
    UploadInput,
    UploadsDeleted,
    Wait,
    decide,
    run_status,
    seen_from_dict,
    seen_to_dict,
    step_from_dict,
    step_to_dict,
)
from shared.polling import poll_delay
from shared.runs import Failure, RunStatus, iso

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
CREATED = int(NOW.timestamp()) - 120
DEADLINE = NOW + timedelta(hours=24)
RUN = BatchRun(
    run_id="gpt-4o-batch::batch::0123456789abcdef0123456789abcdef",
    resource="aoai-devstack-eastus",
    external_id="gpt-4o-batch::batch",
    deployment="gpt-4o-batch",
    endpoint="/chat/completions",
    completion_window="24h",
    requested_at="2026-11-26T08:58:00Z",
    monitor_url="https://portal.azure.com/#@t/resource/x/overview",
    input_file_id="file-abc123",
    deadline=iso(DEADLINE),
    indexed_status="Starting",
)


def batch(status: str = "in_progress", **fields: Any) -> BatchSnapshot:
    values: dict[str, Any] = {"id": "batch_1", "status": status, "created_at": CREATED}
    if status not in ("validating",):
        values |= {"in_progress_at": CREATED + 30, "total": 100, "completed": 40, "failed": 2}
    return BatchSnapshot(**(values | fields))


QUOTA_FAILED = batch("failed", failed_at=CREATED + 60, errors=(Failure.of("token_limit_exceeded", "Quota."),))
POLLING = replace(RUN, phase=Phase.POLLING, status=RunStatus.RUNNING, batch=batch(), indexed_status="Running")
SECRET = replace(RUN, input_file_id=None, input_file_secret="batch-input")
ENDED = batch("completed", completed_at=CREATED + 9, output_file_id="file-o", error_file_id="file-e")
# A shard of a batch set: its input staged in the app, uploaded to whichever place of its pool runs it.
EAST = {"resource": "aoai-devstack-eastus", "deployment": "gpt-4o-batch", "monitorUrl": "https://portal/east"}
WEST = {"resource": "aoai-west", "deployment": "gpt-4o-batch-w", "monitorUrl": "https://portal/west"}
SHARD = replace(
    RUN,
    run_id=f"{RUN.run_id}::s0",
    input_file_id=None,
    staged_input="runs/s0.jsonl",
    uploaded={EAST["resource"]: "file-east"},
    places=[EAST, WEST],
)
UPLOADING = replace(SHARD, uploaded={}, phase=Phase.SUBMITTING)  # to upload its input where it runs
MOVED = replace(SHARD, resource=WEST["resource"], deployment=WEST["deployment"], phase=Phase.SUBMITTING)


def after(seconds: float) -> str:
    return iso(NOW + timedelta(seconds=seconds))


USAGE = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42, "cached_tokens": 0}


def decided(run: BatchRun, seen: Seen, now: datetime = NOW) -> tuple[BatchRun, Step]:
    """The decision, past the steps that come before an ended batch's finish: reading its results (answered here
    with USAGE), and the index write whenever the run's status changed."""
    run, step = decide(run, seen, now)
    while isinstance(step, CollectResults | IndexRun):
        if isinstance(step, CollectResults):
            assert run.phase is Phase.COLLECTING
            assert run.batch is not None
            assert step.file_ids == [f for f in (run.batch.output_file_id, run.batch.error_file_id) if f]
            run, step = decide(run, ResultsCollected(succeeded=1, failed=0, usage=USAGE), now)
        else:
            assert step.view == run.resource_view()
            assert step.at == iso(now)
            run, step = decide(run, Indexed(status=step.view["status"]), now)
    return run, step


# The table: (name, run, seen, now, expected step, expected run fields) -------------------------------------------

LATE = DEADLINE + timedelta(seconds=1)
MOVED_FAILURE = Failure.of(
    "upload_failed",
    f"The shard's input could not be uploaded to resource '{WEST['resource']}' ({MAX_RESOLVE_FAILURES} tries).",
)
TABLE: list[tuple[str, BatchRun, Seen, datetime, Step | type[Step], dict[str, Any]]] = [
    # Resolving the input
    ("file id: submit at once", RUN, Began(), NOW, Submit, {"phase": Phase.SUBMITTING}),
    ("secret: resolve first", SECRET, Began(), NOW, ResolveInput(RUN.run_id, "batch-input"), {}),
    (
        "secret resolved: submit with version",
        SECRET,
        InputResolved(version="v7"),
        NOW,
        Submit,
        {"secret_version": "v7"},
    ),
    (
        "secret refused: fail with its cause",
        SECRET,
        InputResolved(refusal=Failure.of("input_secret_unavailable", "not found", param="inputFileSecret")),
        NOW,
        Finish(),
        {"status": RunStatus.FAILED, "phase": Phase.DONE},
    ),
    (
        "cancel before resolving: cancelled",
        SECRET,
        Began(cancel_requested=True),
        NOW,
        Finish(),
        {"status": RunStatus.CANCELLED},
    ),
    (
        "vault failed: wait, then resolve again",
        SECRET,
        ActivityFailed(step=ResolveInput),
        NOW,
        Wait(after(ACTIVITY_BACKOFF.delay(1))),
        {"resolve_failures": 1},
    ),
    (
        "vault failed one short of the limit: wait",
        replace(SECRET, resolve_failures=MAX_RESOLVE_FAILURES - 2),
        ActivityFailed(step=ResolveInput),
        NOW,
        Wait,
        {"resolve_failures": MAX_RESOLVE_FAILURES - 1},
    ),
    (
        "vault failed at the limit: fail",
        replace(SECRET, resolve_failures=MAX_RESOLVE_FAILURES - 1),
        ActivityFailed(step=ResolveInput),
        NOW,
        Finish(),
        {"status": RunStatus.FAILED},
    ),
    ("resolve backoff over: resolve again", replace(SECRET, resolve_failures=1), TimerFired(), NOW, ResolveInput, {}),
    # Submitting
    (
        "submitted: deadline from created_at, then wait",
        replace(RUN, phase=Phase.SUBMITTING),
        SubmitAnswered(outcome=SubmitOutcome.SUBMITTED, batch=batch("validating")),
        NOW,
        Wait,
        {
            "phase": Phase.POLLING,
            "status": RunStatus.RUNNING,
            "deadline": iso(datetime.fromtimestamp(CREATED, UTC) + timedelta(hours=25)),
        },
    ),
    (
        "reattached: like submitted",
        replace(RUN, phase=Phase.SUBMITTING, submit_failures=3),
        SubmitAnswered(outcome=SubmitOutcome.REATTACHED, batch=batch()),
        NOW,
        Wait,
        {"phase": Phase.POLLING, "submit_failures": 0},
    ),
    (
        "submitted but already ended: finish",
        replace(RUN, phase=Phase.SUBMITTING),
        SubmitAnswered(outcome=SubmitOutcome.SUBMITTED, batch=batch("completed", completed_at=CREATED + 9)),
        NOW,
        Finish(),
        {"status": RunStatus.SUCCESS},
    ),
    (
        "quota: first backoff",
        replace(RUN, phase=Phase.SUBMITTING),
        SubmitAnswered(outcome=SubmitOutcome.QUOTA),
        NOW,
        Wait(after(QUOTA_BACKOFF.first)),
        {"phase": Phase.QUOTA, "quota_waits": 1, "status": RunStatus.STARTING},
    ),
    (
        "quota again: the backoff doubles",
        replace(RUN, phase=Phase.QUOTA, quota_waits=2),
        SubmitAnswered(outcome=SubmitOutcome.QUOTA),
        NOW,
        Wait(after(QUOTA_BACKOFF.first * 4)),
        {"quota_waits": 3},
    ),
    (
        "quota near the deadline: wait only until it",
        replace(RUN, phase=Phase.QUOTA, quota_waits=9),
        SubmitAnswered(outcome=SubmitOutcome.QUOTA),
        DEADLINE - timedelta(seconds=30),
        Wait(iso(DEADLINE)),
        {},
    ),
    ("quota wait over: submit", replace(RUN, phase=Phase.QUOTA, quota_waits=1), TimerFired(), NOW, Submit, {}),
    (
        "quota until the deadline: fail, no batch",
        replace(RUN, phase=Phase.QUOTA, quota_waits=5),
        TimerFired(),
        DEADLINE,
        Finish(),
        {"status": RunStatus.FAILED, "batch": None},
    ),
    (
        "cancel while waiting for quota: cancelled, no batch",
        replace(RUN, phase=Phase.QUOTA),
        CancelArrived(),
        NOW,
        Finish(),
        {"status": RunStatus.CANCELLED, "cancel_requested": True},
    ),
    (
        "rejected: fail with Azure's refusal",
        replace(RUN, phase=Phase.SUBMITTING),
        SubmitAnswered(outcome=SubmitOutcome.REJECTED, refusal=Failure.of("invalidPayload", "bad")),
        NOW,
        Finish(),
        {"status": RunStatus.FAILED, "failure": Failure.of("invalidPayload", "bad")},
    ),
    (
        "cancelled by the submit activity: cancelled",
        replace(RUN, phase=Phase.SUBMITTING),
        SubmitAnswered(outcome=SubmitOutcome.CANCELLED, cancel_requested=True),
        NOW,
        Finish(),
        {"status": RunStatus.CANCELLED},
    ),
    (
        "not created at the deadline: timeout",
        replace(RUN, phase=Phase.SUBMITTING, submit_failures=1),
        SubmitAnswered(outcome=SubmitOutcome.NOT_CREATED),
        LATE,
        Finish(),
        {"status": RunStatus.FAILED},
    ),
    (
        "submit failed: back off",
        replace(RUN, phase=Phase.SUBMITTING),
        ActivityFailed(step=Submit),
        NOW,
        Wait(after(SUBMIT_BACKOFF.first)),
        {"submit_failures": 1},
    ),
    (
        "submit failed one short of the limit: back off",
        replace(RUN, phase=Phase.SUBMITTING, submit_failures=MAX_SUBMIT_FAILURES - 2),
        ActivityFailed(step=Submit),
        NOW,
        Wait(after(SUBMIT_BACKOFF.delay(MAX_SUBMIT_FAILURES - 1))),
        {},
    ),
    (
        "submit failed at the limit: fail",
        replace(RUN, phase=Phase.SUBMITTING, submit_failures=MAX_SUBMIT_FAILURES - 1),
        ActivityFailed(step=Submit),
        NOW,
        Finish(),
        {"status": RunStatus.FAILED},
    ),
    (
        "submit backoff over: submit again, creating",
        replace(RUN, phase=Phase.SUBMITTING, submit_failures=2),
        TimerFired(),
        NOW,
        Submit,
        {},
    ),
    (
        "cancel after an unknown submit: look only",
        replace(RUN, phase=Phase.SUBMITTING, submit_failures=1),
        CancelArrived(),
        NOW,
        Submit,
        {},
    ),
    (
        "deadline after an unknown submit: look only",
        replace(RUN, phase=Phase.SUBMITTING, submit_failures=1),
        TimerFired(),
        DEADLINE,
        Submit,
        {},
    ),
    (
        "submit failed while ending: look again later (another copy may still be creating)",
        replace(RUN, phase=Phase.SUBMITTING, submit_failures=1, cancel_requested=True),
        ActivityFailed(step=Submit),
        NOW,
        Wait(after(SUBMIT_BACKOFF.delay(2))),
        {"submit_failures": 2},
    ),
    # A shard's input: uploaded to the place that runs it before it is submitted there
    (
        "shard: upload its input first",
        replace(UPLOADING, phase=Phase.RESOLVING),
        Began(),
        NOW,
        UploadInput(SHARD.run_id, EAST["resource"], "runs/s0.jsonl", "gpt-4o-batch"),
        {"phase": Phase.SUBMITTING},
    ),
    (
        "uploaded: submit the uploaded file",
        UPLOADING,
        InputUploaded(resource=EAST["resource"], file_id="file-up"),
        NOW,
        Submit,
        {"input_file_id": "file-up", "uploaded": {EAST["resource"]: "file-up"}},
    ),
    (
        "upload failed: wait, then upload again",
        UPLOADING,
        ActivityFailed(step=UploadInput),
        NOW,
        Wait(after(ACTIVITY_BACKOFF.delay(1))),
        {"resolve_failures": 1, "status": RunStatus.STARTING},
    ),
    (
        "upload failed again: the backoff doubles",
        replace(UPLOADING, resolve_failures=1),
        ActivityFailed(step=UploadInput),
        NOW,
        Wait(after(ACTIVITY_BACKOFF.delay(2))),
        {"resolve_failures": 2},
    ),
    ("upload backoff over: upload again", replace(UPLOADING, resolve_failures=1), TimerFired(), NOW, UploadInput, {}),
    (
        "upload failed one short of the limit: wait",
        replace(UPLOADING, resolve_failures=MAX_RESOLVE_FAILURES - 2),
        ActivityFailed(step=UploadInput),
        NOW,
        Wait,
        {"resolve_failures": MAX_RESOLVE_FAILURES - 1},
    ),
    (
        "upload failed at the limit: fail, naming the resource",
        replace(UPLOADING, resolve_failures=MAX_RESOLVE_FAILURES - 1),
        ActivityFailed(step=UploadInput),
        NOW,
        Finish(),
        {
            "status": RunStatus.FAILED,
            "phase": Phase.DONE,
            "batch": None,
            "failure": Failure.of(
                "upload_failed",
                f"The shard's input could not be uploaded to resource '{EAST['resource']}' "
                f"({MAX_RESOLVE_FAILURES} tries).",
            ),
        },
    ),
    (
        "upload failed at the limit after a move: fail, deleting the upload made at the first place",
        replace(MOVED, resolve_failures=MAX_RESOLVE_FAILURES - 1),
        ActivityFailed(step=UploadInput),
        NOW,
        DeleteUploads(SHARD.run_id, {EAST["resource"]: "file-east"}),
        {"status": RunStatus.FAILED, "failure": MOVED_FAILURE},
    ),
    (
        "an upload that went through starts the count of failed uploads again",
        replace(UPLOADING, resolve_failures=MAX_RESOLVE_FAILURES - 1),
        InputUploaded(resource=EAST["resource"], file_id="file-up"),
        NOW,
        Submit,
        {"resolve_failures": 0},
    ),
    (
        "cancel while an upload waits to be tried again: cancelled, nothing uploaded",
        replace(UPLOADING, resolve_failures=1),
        CancelArrived(),
        NOW,
        Finish(),
        {"status": RunStatus.CANCELLED, "uploaded": {}},
    ),
    # Polling
    ("timer fired: check", POLLING, TimerFired(), NOW, Check(RUN.run_id, RUN.resource, "batch_1"), {}),
    (
        "checked, running: wait as the policy says",
        POLLING,
        BatchChecked(batch=batch(completed=50)),
        NOW,
        Wait(after(poll_delay(batch(completed=50).poll_observation(NOW)))),
        {"polls": 1, "status": RunStatus.RUNNING},
    ),
    (
        "checked, completed: success",
        POLLING,
        BatchChecked(batch=batch("completed", completed=98, completed_at=CREATED + 600)),
        NOW,
        Finish(),
        {"status": RunStatus.SUCCESS, "failure": None},
    ),
    (
        "checked, failed: failed with the first error",
        POLLING,
        BatchChecked(batch=batch("failed", failed_at=CREATED + 9, errors=(Failure.of("model_not_found", "m"),))),
        NOW,
        Finish(),
        {"status": RunStatus.FAILED, "failure": Failure.of("model_not_found", "m")},
    ),
    (
        "checked, failed without errors: failed, generic cause",
        POLLING,
        BatchChecked(batch=batch("failed", failed_at=CREATED + 9)),
        NOW,
        Finish(),
        {"failure": Failure.of("failed", "The batch failed.")},
    ),
    (
        "checked, expired: failed, expired",
        POLLING,
        BatchChecked(batch=batch("expired", expired_at=CREATED + 86400)),
        NOW,
        Finish(),
        {
            "status": RunStatus.FAILED,
            "failure": Failure.of("expired", "The batch expired before all requests finished."),
        },
    ),
    (
        "checked, cancelled: cancelled",
        POLLING,
        BatchChecked(batch=batch("cancelled", cancelled_at=CREATED + 9)),
        NOW,
        Finish(),
        {"status": RunStatus.CANCELLED, "failure": None},
    ),
    (
        "checked, failed for quota: next attempt after a backoff",
        replace(POLLING, quota_waits=1),
        BatchChecked(batch=QUOTA_FAILED),
        NOW,
        Wait(after(QUOTA_BACKOFF.first * 2)),
        {"attempt": 2, "batch": None, "phase": Phase.QUOTA, "status": RunStatus.STARTING, "quota_waits": 2},
    ),
    (
        "checked, failed for quota while cancelling: cancelled stays failed",
        replace(POLLING, cancel_requested=True, cancel_sent=True),
        BatchChecked(batch=QUOTA_FAILED),
        NOW,
        Finish(),
        {"status": RunStatus.FAILED, "attempt": 1},
    ),
    (
        "checked, cancel recorded: cancel the batch",
        POLLING,
        BatchChecked(batch=batch(), cancel_requested=True),
        NOW,
        CancelBatch(RUN.run_id, RUN.resource, "batch_1"),
        {"cancel_requested": True},
    ),
    (
        "cancel arrived while waiting: cancel the batch, counting the event and the abandoned timer",
        replace(POLLING, episode_events=10),
        CancelArrived(),
        NOW,
        CancelBatch,
        {"episode_events": 10 + 3 + STEP_EVENTS},
    ),
    (
        "cancel answered: cancelling, wait",
        replace(POLLING, cancel_requested=True),
        CancelAnswered(batch=batch("cancelling", cancelling_at=int(NOW.timestamp()))),
        NOW,
        Wait,
        {"cancel_sent": True, "phase": Phase.CANCELLING},
    ),
    (
        "cancel answered with an ended batch: what Azure reports",
        replace(POLLING, cancel_requested=True),
        CancelAnswered(batch=batch("completed", completed_at=CREATED + 9)),
        NOW,
        Finish(),
        {"status": RunStatus.SUCCESS},
    ),
    (
        "cancel failed: wait, do not give up",
        replace(POLLING, cancel_requested=True),
        ActivityFailed(step=CancelBatch),
        NOW,
        Wait,
        {"cancel_sent": False},
    ),
    (
        "cancel sent, timer: check, no second cancel",
        replace(POLLING, cancel_requested=True, cancel_sent=True),
        TimerFired(),
        NOW,
        Check,
        {},
    ),
    (
        "check failed: wait, count it",
        POLLING,
        ActivityFailed(step=Check),
        NOW,
        Wait,
        {"failed_checks": 1, "status": RunStatus.RUNNING},
    ),
    (
        "check failed one short of the limit: wait",
        replace(POLLING, failed_checks=MAX_FAILED_CHECKS - 2),
        ActivityFailed(step=Check),
        NOW,
        Wait,
        {"failed_checks": MAX_FAILED_CHECKS - 1},
    ),
    (
        "check failed at the limit: fail, naming the batch",
        replace(POLLING, failed_checks=MAX_FAILED_CHECKS - 1),
        ActivityFailed(step=Check),
        NOW,
        Finish(),
        {"status": RunStatus.FAILED},
    ),
    (
        "a good check resets the failed count",
        replace(POLLING, failed_checks=7),
        BatchChecked(batch=batch()),
        NOW,
        Wait,
        {"failed_checks": 0},
    ),
    (
        "deadline passed: cancel the batch",
        POLLING,
        BatchChecked(batch=batch()),
        LATE,
        CancelBatch,
        {},
    ),
    (
        "deadline passed, cancel sent: fail with timeout",
        replace(POLLING, cancel_sent=True, phase=Phase.CANCELLING),
        BatchChecked(batch=batch("cancelling")),
        LATE,
        Finish(),
        {"status": RunStatus.FAILED},
    ),
    (
        "deadline passed, cancel failed: fail, saying it may still run",
        POLLING,
        ActivityFailed(step=CancelBatch),
        LATE,
        Finish(),
        {"status": RunStatus.FAILED},
    ),
    (
        "a poll wait never passes the deadline",
        POLLING,
        BatchChecked(batch=batch(completed=1)),
        DEADLINE - timedelta(seconds=5),
        Wait(iso(DEADLINE)),
        {},
    ),
    (
        "a cancel with the index write's answer: the put-off create is not made, the run is cancelled",
        replace(RUN, phase=Phase.SUBMITTING, indexed_status=None, resume=step_to_dict(RUN.submit_step(NOW))),
        Indexed(status="Starting", cancel_requested=True),
        NOW,
        Finish(),
        {"status": RunStatus.CANCELLED, "batch": None},
    ),
    (
        "a cancel with the index write's answer after an unknown submit: the put-off create becomes a last look",
        replace(
            RUN,
            phase=Phase.SUBMITTING,
            submit_failures=1,
            indexed_status=None,
            resume=step_to_dict(RUN.submit_step(NOW)),
        ),
        Indexed(status="Starting", cancel_requested=True),
        NOW,
        replace(RUN.submit_step(NOW), lookup_only=True),
        {"cancel_requested": True},
    ),
    # Episodes
    (
        "new episode, polling: wait again from the state",
        POLLING,
        Began(),
        NOW,
        Wait,
        {"episode_events": EPISODE_START_EVENTS + STEP_EVENTS},
    ),
    (
        "new episode with a put-off step: that step first",
        replace(POLLING, resume=step_to_dict(Check(RUN.run_id, RUN.resource, "batch_1"))),
        Began(),
        NOW,
        Check(RUN.run_id, RUN.resource, "batch_1"),
        {"resume": None},
    ),
    (
        "history near its limit (room for the step, an index write, a cancel, the continue): continue as new first",
        replace(POLLING, episode_events=MAX_EPISODE_EVENTS - EVENT_RESERVE - 2 * STEP_EVENTS),
        TimerFired(),
        NOW,
        ContinueAsNew(),
        {"resume": step_to_dict(Check(RUN.run_id, RUN.resource, "batch_1"))},
    ),
    (
        "history one step short of the limit: go on",
        replace(POLLING, episode_events=MAX_EPISODE_EVENTS - EVENT_RESERVE - 2 * STEP_EVENTS - 1),
        TimerFired(),
        NOW,
        Check,
        {"episode_events": MAX_EPISODE_EVENTS - EVENT_RESERVE - STEP_EVENTS - 1},
    ),
    (
        "history at its limit: finishing needs no room",
        replace(
            POLLING,
            episode_events=MAX_EPISODE_EVENTS,
            status=RunStatus.SUCCESS,
            indexed_status="Success",
            results_collected=True,
        ),
        BatchChecked(batch=batch("completed", completed_at=CREATED + 9)),
        NOW,
        Finish(),
        {"status": RunStatus.SUCCESS},
    ),
    (
        "history at its limit, results not yet read: continue as new, then read them",
        replace(POLLING, episode_events=MAX_EPISODE_EVENTS),
        BatchChecked(batch=batch("completed", completed_at=CREATED + 9, output_file_id="file-o")),
        NOW,
        ContinueAsNew(),
        {
            "status": RunStatus.RUNNING,
            "phase": Phase.COLLECTING,
            "resume": step_to_dict(CollectResults(RUN.run_id, RUN.resource, ["file-o"], "", "")),
        },
    ),
    (
        "history at its limit, the end not yet indexed: index, then finish (an index write never waits)",
        replace(POLLING, episode_events=MAX_EPISODE_EVENTS - EVENT_RESERVE - STEP_EVENTS - 1, results_collected=True),
        BatchChecked(batch=batch("completed", completed_at=CREATED + 9)),
        NOW,
        Finish(),
        {"status": RunStatus.SUCCESS, "resume": None, "indexed_status": "Success"},
    ),
]


@pytest.mark.parametrize(
    ("run", "seen", "now", "expected", "fields"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_decision_table(run: BatchRun, seen: Seen, now: datetime, expected: Any, fields: dict[str, Any]) -> None:
    after_it, step = decided(run, seen, now)

    if isinstance(expected, type):
        assert type(step) is expected
    else:
        assert step == expected
    for name, value in fields.items():
        assert getattr(after_it, name) == value, name


# Exact rules the table does not spell out ---------------------------------------------------------------------------


def test_a_new_run_takes_its_deadline_from_the_orchestration_clock() -> None:
    run, _ = decided(replace(RUN, deadline=None), Began(), NOW)

    assert run.deadline == iso(NOW + timedelta(hours=25))


def test_submit_steps_carry_the_identity_and_stop_creating_once_the_run_ends() -> None:
    _, first = decided(replace(RUN, attempt=3, metadata={"team": "x"}), Began(), NOW)
    _, last_look = decided(replace(RUN, phase=Phase.SUBMITTING, submit_failures=1), CancelArrived(), NOW)

    assert isinstance(first, Submit)
    assert isinstance(last_look, Submit)
    assert (first.lookup_only, last_look.lookup_only) == (False, True)
    assert first.identity == {"runId": RUN.run_id, "runAttempt": "3"}
    assert first.metadata == {"team": "x"}


def test_failure_messages_name_the_cause_and_never_internals() -> None:
    cases = [
        decided(replace(SECRET, resolve_failures=MAX_RESOLVE_FAILURES - 1), ActivityFailed(step=ResolveInput), NOW),
        decide(
            replace(RUN, phase=Phase.SUBMITTING, submit_failures=MAX_SUBMIT_FAILURES - 1),
            ActivityFailed(step=Submit),
            NOW,
        ),
        decide(replace(POLLING, failed_checks=MAX_FAILED_CHECKS - 1), ActivityFailed(step=Check), NOW),
        decide(POLLING, ActivityFailed(step=CancelBatch), LATE),
        decide(replace(RUN, phase=Phase.QUOTA), TimerFired(), LATE),
    ]
    codes = [run.failure.code for run, _ in cases if run.failure]

    assert codes == ["input_secret_unavailable", "submit_unknown", "status_unavailable", "timeout", "timeout"]
    assert "batch-input" in cases[0][0].failure.message  # type: ignore[union-attr]
    assert f"runId={RUN.run_id}" in cases[1][0].failure.message  # type: ignore[union-attr]
    assert "batch_1" in cases[2][0].failure.message  # type: ignore[union-attr]
    assert "may still be running" in cases[3][0].failure.message  # type: ignore[union-attr]
    for run, _ in cases:
        assert run.failure is not None
        assert "\n" not in run.failure.message
        assert len(run.failure.message) <= 1000


def test_failure_messages_from_azure_are_one_bounded_line() -> None:
    long_error = Failure.of("invalid_request", "x" * 5000 + "\nTraceback (most recent call last):")
    failed = batch("failed", failed_at=CREATED, errors=(long_error,))

    run, _ = decided(POLLING, BatchChecked(batch=failed), NOW)

    assert run.failure is not None
    assert len(run.failure.message) == 1000
    assert "Traceback" not in run.failure.message
    assert run.failure.hint is not None  # invalid_request has one


def test_progress_counts_failed_requests_as_done() -> None:
    assert batch(total=200, completed=40, failed=2).progress() == {
        "total": 200,
        "completed": 40,
        "failed": 2,
        "percent": 21.0,
    }
    assert batch("validating").progress() is None


def test_backoff_grows_geometrically_and_is_capped() -> None:
    backoff = Backoff(5.0, 2.0, 60.0)

    assert [backoff.delay(n) for n in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


def test_a_run_waiting_for_quota_looks_again_at_least_every_ten_minutes() -> None:
    # bench/sets.py: with waits of up to 30 minutes, a resource's quota sat unused for a fifth of a job's time.
    waits = [QUOTA_BACKOFF.delay(n) for n in range(1, 12)]

    assert waits[:4] == [60.0, 120.0, 240.0, 480.0]
    assert max(waits) == waits[-1] == 600.0


# The sweep: every phase x its states x every observation that can follow them --------------------------------------

BATCHES = [
    batch("validating", created_at=CREATED),
    batch(),
    batch("finalizing", finalizing_at=CREATED + 90),
    batch("cancelling", cancelling_at=CREATED + 90),
    batch("completed", completed_at=CREATED + 99),
    batch("failed", failed_at=CREATED + 9, errors=(Failure.of("invalid_request", "bad line", line=3),)),
    QUOTA_FAILED,
    batch("expired", expired_at=CREATED + 86400),
    batch("cancelled", cancelled_at=CREATED + 99),
]
REFUSAL = Failure.of("rejected", "no")
COST = {"amount": 0.12, "currency": "USD"}
# What may follow any state: a new episode, a timer or a cancel that won it, an index write's answer (sent with the
# run's status, see `answering`) with or without news of a cancel, or its failure.
ANY_PHASE: list[Seen] = [
    Began(),
    TimerFired(),
    CancelArrived(),
    Indexed(status=""),
    Indexed(status="", cancel_requested=True),
    ActivityFailed(step=IndexRun),
]
SUBMIT_ANSWERS: list[Seen] = [
    *[SubmitAnswered(outcome=SubmitOutcome.SUBMITTED, batch=b) for b in BATCHES],
    SubmitAnswered(outcome=SubmitOutcome.REATTACHED, batch=batch()),
    SubmitAnswered(outcome=SubmitOutcome.QUOTA),
    SubmitAnswered(outcome=SubmitOutcome.REJECTED, refusal=REFUSAL),
    SubmitAnswered(outcome=SubmitOutcome.CANCELLED, cancel_requested=True),
    SubmitAnswered(outcome=SubmitOutcome.NOT_CREATED),
    ActivityFailed(step=Submit),
    InputUploaded(resource="", file_id="file-up"),
    ActivityFailed(step=UploadInput),
]
DELETE_ANSWERS: list[Seen] = [UploadsDeleted(), ActivityFailed(step=DeleteUploads)]
FOLLOWS: dict[Phase, list[Seen]] = {
    Phase.RESOLVING: [
        InputResolved(version="v1"),
        InputResolved(refusal=REFUSAL),
        ActivityFailed(step=ResolveInput),
        InputUploaded(resource="", file_id="file-up"),  # a shard begins here, with its upload
        ActivityFailed(step=UploadInput),
    ],
    Phase.SUBMITTING: [*SUBMIT_ANSWERS, *DELETE_ANSWERS],
    Phase.QUOTA: [*SUBMIT_ANSWERS, *DELETE_ANSWERS],
    Phase.POLLING: [
        *[BatchChecked(batch=b) for b in BATCHES],
        *[BatchChecked(batch=b, cancel_requested=True) for b in BATCHES],
        *[CancelAnswered(batch=b) for b in BATCHES],
        ActivityFailed(step=Check),
        ActivityFailed(step=CancelBatch),
    ],
    Phase.COLLECTING: [
        ResultsCollected(succeeded=98, failed=2, usage=USAGE, estimated_cost=COST),
        ResultsCollected(succeeded=0, failed=0, usage=dict.fromkeys(USAGE, 0), cancel_requested=True),
        ActivityFailed(step=CollectResults),
        *DELETE_ANSWERS,
    ],
}
FOLLOWS[Phase.CANCELLING] = FOLLOWS[Phase.POLLING]
FOLLOWS[Phase.DONE] = []  # a run that is done waits at most for the index write of its end (then it finishes)


def awaiting_index(run: BatchRun, now: datetime) -> BatchRun:
    """`run` once its status changed at `now`: the step it decided is put off until the run index has the new status
    (which it learns moments later: the step is carried out as decided)."""
    waiting, step = decide(replace(run, indexed_status=None), Began(), now)
    assert isinstance(step, IndexRun)
    return waiting


def awaiting_deletion(run: BatchRun, seen: Seen) -> BatchRun:
    """`run` ended by `seen`, waiting for the input files it uploaded to be deleted."""
    ended, step = decided(run, seen)
    assert isinstance(step, DeleteUploads)
    return ended


SHARD_POLLING = replace(
    SHARD,
    input_file_id="file-east",
    phase=Phase.POLLING,
    status=RunStatus.RUNNING,
    batch=batch(),
    indexed_status="Running",
)


def states(phase: Phase, now: datetime) -> list[BatchRun]:
    """The run in `phase` at `now`: plain, as a shard of a set, about to end (cancel, limits), and waiting for its
    index."""
    base, shard = {
        Phase.RESOLVING: (SECRET, replace(UPLOADING, phase=Phase.RESOLVING)),
        Phase.SUBMITTING: (replace(RUN, phase=Phase.SUBMITTING), UPLOADING),
        Phase.QUOTA: (replace(RUN, phase=Phase.QUOTA, quota_waits=2), replace(MOVED, phase=Phase.QUOTA, quota_waits=1)),
        Phase.POLLING: (POLLING, SHARD_POLLING),
        Phase.CANCELLING: (
            replace(POLLING, phase=Phase.CANCELLING, cancel_requested=True, cancel_sent=True),
            replace(SHARD_POLLING, phase=Phase.CANCELLING, cancel_requested=True, cancel_sent=True),
        ),
        Phase.COLLECTING: (
            decide(POLLING, BatchChecked(batch=ENDED), NOW)[0],
            decide(SHARD_POLLING, BatchChecked(batch=ENDED), NOW)[0],
        ),
    }[phase]
    variants = [
        base,
        shard,
        replace(base, cancel_requested=True),
        replace(shard, cancel_requested=True),
        replace(base, episode_events=MAX_EPISODE_EVENTS - 8),
        awaiting_index(base, now),
        awaiting_index(shard, now),
    ]
    if phase in (Phase.SUBMITTING, Phase.QUOTA):
        variants.append(replace(base, submit_failures=2))
        variants.append(replace(shard, resolve_failures=MAX_RESOLVE_FAILURES - 1))  # its upload failed but once
        uploaded = replace(shard, input_file_id="file-up", uploaded={**shard.uploaded, shard.resource: "file-up"})
        variants.append(awaiting_deletion(uploaded, SubmitAnswered(outcome=SubmitOutcome.REJECTED, refusal=REFUSAL)))
    if phase is Phase.RESOLVING:
        variants.append(replace(base, resolve_failures=MAX_RESOLVE_FAILURES - 1))
    if phase is Phase.COLLECTING:
        variants.append(replace(base, collect_failures=MAX_COLLECT_FAILURES - 1))
        for ended in BATCHES[5:]:  # a batch that failed (also for quota while cancelling), expired or was cancelled
            collecting, _ = decide(
                replace(POLLING, cancel_requested=True, cancel_sent=True), BatchChecked(batch=ended), now
            )
            variants += [collecting, replace(collecting, collect_failures=MAX_COLLECT_FAILURES - 1)]
        variants.append(awaiting_deletion(shard, ResultsCollected(succeeded=98, failed=2, usage=USAGE)))
    return variants  # a shard that begins moves on to submitting: each state is swept in the phase it is in


def can_follow(run: BatchRun, seen: Seen) -> bool:
    """Whether `seen` can come next to `run`. A run that waits for its index write (the step it put off is kept in
    `resume`) hears only the write's answer or a new episode; one that ended waits only for its uploads' deletion;
    an upload answers only a run whose input is not yet on its resource."""
    answers = {type(seen)} | ({seen.step} if isinstance(seen, ActivityFailed) else set())
    if run.resume is not None:
        return bool(answers & {Indexed, IndexRun, Began})
    if run.status.is_terminal:
        return bool(answers & {UploadsDeleted, DeleteUploads})
    if answers & {Indexed, IndexRun, UploadsDeleted, DeleteUploads}:
        return False
    if answers & {InputUploaded, UploadInput}:
        return run.staged_input is not None and run.input_file_id is None
    return True


def answering(run: BatchRun, seen: Seen) -> Seen:
    """`seen` as the activity would answer `run`: an index write with the status it was sent, an upload from the
    resource the run is at."""
    if isinstance(seen, Indexed):
        return replace(seen, status=run.status.value)
    if isinstance(seen, InputUploaded):
        return replace(seen, resource=run.resource)
    return seen


SWEEP = [
    (run.phase, run, answering(run, seen), now)
    for now in (NOW, LATE)
    for run in [run for phase in set(Phase) - {Phase.DONE} for run in states(phase, now)]
    for seen in [*ANY_PHASE, *FOLLOWS[run.phase]]
    if can_follow(run, seen)
]


def test_the_sweep_covers_every_phase_and_every_observation_of_the_decision() -> None:
    import shared.batch_run as batch_run

    def own(kind: type) -> bool:
        return kind.__module__ == batch_run.__name__

    observations = {kind for kind in vars(batch_run).values() if isinstance(kind, type) and issubclass(kind, Seen)}
    activities = {kind for kind in batch_run.STEPS.values() if own(kind)} - {Wait, ContinueAsNew, Finish}
    swept = [seen for _, _, seen, _ in SWEEP]

    assert {type(seen) for seen in swept} == observations - {Seen}
    assert {seen.step for seen in swept if isinstance(seen, ActivityFailed)} == activities
    # Every phase, with and without an index write pending (a run that is done only with one: it decides no more).
    assert {(phase, run.resume is not None) for phase, run, _, _ in SWEEP} == {
        (phase, waiting) for phase in Phase for waiting in (False, True)
    } - {(Phase.DONE, False)}


@pytest.mark.parametrize(("phase", "run", "seen", "now"), SWEEP)
def test_every_decision_keeps_the_invariants(phase: Phase, run: BatchRun, seen: Seen, now: datetime) -> None:
    first, first_step = decide(run, seen, now)
    if isinstance(first_step, IndexRun):  # the index write comes first, then the step it put off
        assert first.indexed_status != first.status.value
        assert first.resume is not None
        assert first_step.view == first.resource_view()
        answered = isinstance(seen, Indexed) or (isinstance(seen, ActivityFailed) and seen.step is IndexRun)
        assert not answered or first.status is not run.status, "a status is written to the index once"
    settled, step = decided(run, seen, now)

    ending = settled.cancel_requested or now >= datetime.fromisoformat(str(settled.deadline).replace("Z", "+00:00"))
    if isinstance(step, Submit) and ending:
        assert step.lookup_only, "a run that is ending never creates a batch"
    if isinstance(step, Submit | UploadInput):
        assert isinstance(step, UploadInput) or step.lookup_only or settled.batch is None
        assert step.resource == settled.resource
    if isinstance(step, UploadInput):
        assert not ending, "a run that is ending uploads nothing"
        assert settled.input_file_id is None
    finishing = isinstance(step, Finish) or settled.resume == step_to_dict(Finish())  # now, or after continuing
    if finishing:
        assert settled.phase is Phase.DONE
        assert settled.status.is_terminal
        assert (settled.status is RunStatus.FAILED) == (settled.failure is not None), "a failed run says why"
        assert settled.next_check_at is None
        assert isinstance(step, Finish | ContinueAsNew)
        assert settled.uploads_deleted or not settled.uploaded or (settled.batch and not settled.batch.is_terminal)
        if settled.status is RunStatus.CANCELLED:
            assert settled.cancel_requested or (settled.batch and settled.batch.status == "cancelled")
    else:
        assert settled.phase is not Phase.DONE
    if isinstance(step, DeleteUploads):
        assert settled.status.is_terminal, "uploads are deleted only once the run has ended"
        assert step.files == settled.uploaded
        assert not isinstance(seen, UploadsDeleted), "uploads are deleted once"
        assert getattr(seen, "step", None) is not DeleteUploads, "a failed deletion is not tried again"
    elif not finishing:
        assert not settled.status.is_terminal
    if finishing and settled.batch is not None and settled.batch.is_terminal:
        assert settled.status is run_status(settled.batch.status), "a run whose batch ended ends as its batch did"
    if isinstance(step, Wait):
        until = datetime.fromisoformat(step.until.replace("Z", "+00:00"))
        assert now <= until <= max(now, datetime.fromisoformat(str(settled.deadline).replace("Z", "+00:00")))
        assert settled.next_check_at == step.until
    if isinstance(step, Check | CancelBatch):
        assert settled.batch is not None
        assert step.batch_id == settled.batch.id
    if isinstance(step, CancelBatch):
        assert not settled.cancel_sent or isinstance(seen, Began)
    if not isinstance(step, ContinueAsNew | Finish):  # the episode ends with either, whatever its length
        assert settled.episode_events + EVENT_RESERVE <= MAX_EPISODE_EVENTS
    assert settled.indexed_status == settled.status.value, "the run index learns of every status first"
    assert settled.failure is None or len(settled.failure.message) <= 1000


def test_observations_and_steps_round_trip_through_json() -> None:
    for seen in [
        o
        for follows in FOLLOWS.values()
        for o in follows
        if not isinstance(o, Began | TimerFired | CancelArrived | ActivityFailed)
    ]:
        assert seen_from_dict(seen_to_dict(seen)) == seen
    for step in (ResolveInput("r", "s"), Check("r", "a", "b"), CancelBatch("r", "a", "b"), Wait(after(1))):
        assert step_from_dict(step_to_dict(step)) == step
    assert BatchRun.from_dict(POLLING.to_dict()) == POLLING
    carried = replace(POLLING, failure=Failure.of("x", "y"), resume=step_to_dict(Check("r", "a", "b")))
    assert BatchRun.from_dict(carried.to_dict()) == carried


# Reading an ended batch's results --------------------------------------------------------------------------------


def test_an_ended_batch_is_read_before_the_run_finishes_and_its_usage_and_cost_are_outputs() -> None:
    run, step = decide(replace(POLLING, model="gpt-4o", model_version="1"), BatchChecked(batch=ENDED), NOW)

    assert step == CollectResults(RUN.run_id, RUN.resource, ["file-o", "file-e"], "gpt-4o", "1")
    assert (run.status, run.phase) == (RunStatus.RUNNING, Phase.COLLECTING)  # not Success before its results are in
    cost = {"amount": 0.12, "currency": "USD"}
    run, step = decide(run, ResultsCollected(succeeded=98, failed=2, usage=USAGE, estimated_cost=cost), NOW)
    assert isinstance(step, IndexRun)
    outputs = step.view["outputs"]
    assert {k: outputs[k] for k in USAGE} == USAGE
    assert outputs["estimatedCost"] == cost
    assert outputs["output_file_id"] == "file-o"
    run, step = decide(run, Indexed(status="Success"), NOW)
    assert (step, run.status) == (Finish(), RunStatus.SUCCESS)


BLOB_RUN = replace(
    RUN,
    input_file_id=None,
    input_blob="https://staoai.blob.core.windows.net/batch-input/requests.jsonl",
    output_folder="https://staoai.blob.core.windows.net/batch-output/runs",
)
RESULTS = "https://staoai.blob.core.windows.net/batch-output/runs/5f0c6a8e-2f7b-4c53-9d55-0e6f2a1b7c9d"


def test_a_blob_run_submits_its_input_blob_and_output_folder_without_metadata() -> None:
    _, step = decide(replace(BLOB_RUN, phase=Phase.SUBMITTING), Began(), NOW)

    assert isinstance(step, Submit)
    assert (step.input_blob, step.output_folder) == (BLOB_RUN.input_blob, BLOB_RUN.output_folder)
    assert (step.input_file_id, step.metadata) == (None, {})


def test_an_ended_blob_batch_is_read_from_its_result_blobs_and_they_are_outputs() -> None:
    ended = batch("completed", completed_at=CREATED + 9, output_blob=f"{RESULTS}/results.jsonl")
    ended = replace(ended, error_blob=f"{RESULTS}/errors.jsonl")
    polling = replace(BLOB_RUN, phase=Phase.POLLING, status=RunStatus.RUNNING, batch=batch(), indexed_status="Running")

    run, step = decide(polling, BatchChecked(batch=ended), NOW)

    assert step == CollectResults(
        RUN.run_id,
        RUN.resource,
        [],
        "",
        "",
        output_blob=f"{RESULTS}/results.jsonl",
        error_blob=f"{RESULTS}/errors.jsonl",
        completed=40,
    )
    run, step = decide(run, ResultsCollected(succeeded=40, failed=2, usage=USAGE), NOW)
    assert isinstance(step, IndexRun)
    outputs = step.view["outputs"]
    assert (outputs["output_blob"], outputs["error_blob"]) == (f"{RESULTS}/results.jsonl", f"{RESULTS}/errors.jsonl")
    assert (outputs["output_file_id"], outputs["total_tokens"]) == (None, 42)
    assert (step.view["inputBlob"], step.view["outputFolder"]) == (BLOB_RUN.input_blob, BLOB_RUN.output_folder)


def test_a_blob_run_whose_submit_stayed_unknown_says_which_input_blob_to_look_for() -> None:
    run = replace(BLOB_RUN, phase=Phase.SUBMITTING, submit_failures=MAX_SUBMIT_FAILURES - 1)

    run, step = decided(run, ActivityFailed(step=Submit), NOW)

    assert step == Finish()
    assert run.failure is not None
    assert run.failure.code == "submit_unknown"
    assert f"whose input_blob is {BLOB_RUN.input_blob}" in run.failure.message


def test_a_read_that_fails_is_tried_again_then_the_run_ends_without_its_results() -> None:
    run, _ = decide(POLLING, BatchChecked(batch=ENDED), NOW)
    for tries in range(1, MAX_COLLECT_FAILURES):
        run, step = decide(run, ActivityFailed(step=CollectResults), NOW)
        assert step == Wait(after(ACTIVITY_BACKOFF.delay(tries)))
        run, step = decide(run, TimerFired(), NOW)
        assert isinstance(step, CollectResults)

    run, step = decided(run, ActivityFailed(step=CollectResults), NOW)

    assert (step, run.status, run.usage) == (Finish(), RunStatus.SUCCESS, None)
    assert run.resource_view()["outputs"]["total_tokens"] is None


def test_a_run_that_never_had_a_batch_has_no_usage_outputs() -> None:
    view = RUN.resource_view()

    assert {k: view["outputs"][k] for k in (*USAGE, "estimatedCost")} == dict.fromkeys((*USAGE, "estimatedCost"))


def test_a_shard_refused_for_quota_moves_to_the_pools_next_deployment_uploading_its_input_there() -> None:
    at_east = replace(SHARD, input_file_id="file-east", phase=Phase.SUBMITTING)
    refused = SubmitAnswered(outcome=SubmitOutcome.QUOTA)

    moved, step = decided(at_east, refused)
    assert step == UploadInput(SHARD.run_id, WEST["resource"], "runs/s0.jsonl", "gpt-4o-batch-w")
    assert (moved.resource, moved.deployment, moved.monitor_url) == (
        WEST["resource"],
        "gpt-4o-batch-w",
        "https://portal/west",
    )
    uploaded, step = decided(moved, InputUploaded(resource=WEST["resource"], file_id="file-west"))
    assert isinstance(step, Submit)
    assert uploaded.input_file_id == "file-west"

    # Refused there too: every place has refused in a row, so the shard waits for quota where it is.
    waiting, step = decided(uploaded, refused)
    assert isinstance(step, Wait)
    assert step.until == after(QUOTA_BACKOFF.delay(1))
    assert (waiting.phase, waiting.resource, waiting.refused_here) == (Phase.QUOTA, WEST["resource"], 0)
    # After the wait it tries again where it is, and a refusal there moves it back to the first place.
    again, step = decided(waiting, TimerFired())
    assert isinstance(step, Submit)
    assert step.resource == WEST["resource"]
    back, step = decided(again, refused)
    assert (back.resource, back.input_file_id, back.refused_here) == (EAST["resource"], "file-east", 1)
    assert isinstance(step, Submit)
    assert step.resource == EAST["resource"]


def test_a_shard_whose_batch_fails_at_validation_for_quota_moves_then_waits_once_every_place_failed() -> None:
    failed = replace(SHARD, input_file_id="file-east", phase=Phase.POLLING, status=RunStatus.RUNNING, batch=batch())

    moved, step = decided(failed, BatchChecked(batch=QUOTA_FAILED))
    assert step == UploadInput(SHARD.run_id, WEST["resource"], "runs/s0.jsonl", "gpt-4o-batch-w")
    assert (moved.resource, moved.attempt, moved.batch, moved.status) == (
        WEST["resource"],
        RUN.attempt + 1,
        None,
        RunStatus.STARTING,
    )
    moved, step = decided(moved, InputUploaded(resource=WEST["resource"], file_id="file-west"))
    assert isinstance(step, Submit)
    assert step.attempt == RUN.attempt + 1
    running = replace(moved, phase=Phase.POLLING, status=RunStatus.RUNNING, batch=batch())
    waiting, step = decided(running, BatchChecked(batch=QUOTA_FAILED))
    assert isinstance(step, Wait)
    assert step.until == after(QUOTA_BACKOFF.delay(1))
    assert (waiting.phase, waiting.resource, waiting.attempt) == (Phase.QUOTA, WEST["resource"], RUN.attempt + 2)

    alone, step = decided(replace(failed, places=[EAST]), BatchChecked(batch=QUOTA_FAILED))
    assert isinstance(step, Wait)
    assert (alone.phase, alone.resource) == (Phase.QUOTA, EAST["resource"])


def test_a_shard_deletes_the_inputs_it_uploaded_once_its_batch_has_ended() -> None:
    done = batch("completed", completed_at=CREATED + 600, output_file_id="file-out")
    uploaded = {EAST["resource"]: "file-east", WEST["resource"]: "file-west"}  # it moved once
    polling = replace(SHARD, input_file_id="file-west", resource=WEST["resource"], uploaded=uploaded)
    polling = replace(polling, phase=Phase.POLLING, status=RunStatus.RUNNING, batch=batch(), indexed_status="Running")

    ending, step = decided(polling, BatchChecked(batch=done))

    assert step == DeleteUploads(SHARD.run_id, uploaded)
    assert (ending.status, ending.phase) == (RunStatus.SUCCESS, Phase.COLLECTING)  # done only once they are gone
    ended, step = decided(ending, UploadsDeleted())
    assert step == Finish()
    assert (ended.uploads_deleted, ended.phase) == (True, Phase.DONE)
    # A delete that fails leaves a file that costs nothing: the run ends all the same.
    ended, step = decided(ending, ActivityFailed(step=DeleteUploads))
    assert step == Finish()


def test_a_shard_keeps_its_input_while_its_batch_may_still_run() -> None:
    polling = replace(SHARD, input_file_id="file-east", phase=Phase.POLLING, status=RunStatus.RUNNING)
    polling = replace(polling, batch=batch(), failed_checks=MAX_FAILED_CHECKS - 1, indexed_status="Running")

    gave_up, step = decided(polling, ActivityFailed(step=Check))  # the run gives up on a batch it cannot see

    assert step == Finish()
    assert gave_up.failure is not None
    assert gave_up.failure.code == "status_unavailable"
    assert not gave_up.uploads_deleted
