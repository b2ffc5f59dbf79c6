"""The Azure OpenAI Batch Job run: an orchestrator that only decides, and activities that do the I/O.

resolve input → submit (exactly once) → poll on durable timers → finish. Cancel arrives as the external event
`cancel` (and as a durable cancel record the activities read, so it survives continue-as-new).
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

bp = df.Blueprint()
logger = logging.getLogger(__name__)

CANCEL_EVENT = "cancel"
POLLS_PER_EXECUTION = 25  # then continue-as-new, so the history stays bounded
GRACE = timedelta(hours=1)  # past the completion window, before the run gives up on the batch
QUOTA_BACKOFF = (60.0, 2.0, 30 * 60.0)  # first wait, factor, longest wait (seconds) while quota is used up
MAX_FAILED_CHECKS = 20  # consecutive status calls that failed even after their own retries
# Submit attempts that failed even after their activity retries (Azure unreachable, 5xx storms) are tried again
# on durable timers: safe, because every attempt re-attaches to a batch an earlier one created.
SUBMIT_BACKOFF = (30.0, 2.0, 300.0)
MAX_SUBMIT_ROUNDS = 10
# Activities retry on transient failures; the submit activity re-attaches first, so its retry cannot pay twice.
# (The Python SDK sends only the first interval and the attempt count to the host.)
ACTIVITY_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=5)
WINDOW_SECONDS = {"24h": 24 * 3600}


def deadline_for(start: datetime, completion_window: str) -> datetime:
    return start + timedelta(seconds=WINDOW_SECONDS.get(completion_window, 24 * 3600)) + GRACE


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@bp.orchestration_trigger(context_name="context")
def batch_run(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    from shared.polling import Observation, poll_delay
    from shared.runs import HINTS, BatchRunState, BatchSnapshot, RunStatus, run_status

    state = BatchRunState.from_dict(context.get_input())
    cancel_event = context.wait_for_external_event(CANCEL_EVENT)  # one waiter, shared by every wait below
    checks_here = 0
    failed_checks = 0

    def publish() -> None:
        context.set_custom_status(state.resource_view())

    def finish(status: RunStatus, failure: dict[str, Any] | None = None) -> dict[str, Any]:
        state.status, state.phase, state.next_check_at = status.value, "done", None
        if failure is not None:
            state.failure = failure
        publish()
        return state.resource_view()

    def cancel_asked() -> bool:
        state.cancel_requested = state.cancel_requested or cancel_event.is_completed
        return state.cancel_requested

    def wait(seconds: float) -> Generator[Any, Any, bool]:
        """Waits on a durable timer (never past the deadline); True when a cancel arrived during this wait."""
        fire_at = min(context.current_utc_datetime + timedelta(seconds=seconds), _parse(state.deadline))
        state.next_check_at = _iso(fire_at)
        publish()
        timer = context.create_timer(fire_at)
        if cancel_event.is_completed:  # already cancelling: only the timer can end this wait
            yield timer
            state.next_check_at = None
            return False
        winner = yield context.task_any([timer, cancel_event])
        state.next_check_at = None
        if winner is cancel_event:
            timer.cancel()
            state.cancel_requested = True
            return True
        return False

    if not state.deadline:  # the run's clock is the orchestration's, as the timers' are
        state.deadline = _iso(deadline_for(context.current_utc_datetime, state.completion_window))
    publish()

    # 1. Resolve the input: check the Key Vault secret exists and pin its version (the value stays in the vault).
    if state.phase == "resolving":
        if cancel_asked():
            return finish(RunStatus.CANCELLED)
        if state.input_file_secret and not state.secret_version:
            try:
                ref = yield context.call_activity_with_retry("resolve_batch_input", ACTIVITY_RETRY, state.to_dict())
            except Exception as error:
                return finish(
                    RunStatus.FAILED,
                    {
                        "code": "input_secret_unavailable",
                        "message": _reason(error),
                        "line": None,
                        "param": "inputFileSecret",
                        "hint": None,
                    },
                )
            state.secret_version = ref["version"]
        state.phase = "submitting"

    while state.phase != "done":  # a batch Azure fails for quota sends the run back to submitting
        # 2. Submit exactly once; when the deployment's token quota is used up, wait and try again.
        while state.phase in ("submitting", "quota"):
            # After a submit whose outcome stayed unknown, a batch of this run may exist: the run may end only once a
            # last look (no create) has found it or shown there is none, so no paid batch is left behind untracked.
            maybe_created = state.submit_failures > 0
            stopping = (
                "cancel"
                if cancel_asked()
                else ("deadline" if context.current_utc_datetime >= _parse(state.deadline) else None)
            )
            if stopping == "cancel" and not maybe_created:
                return finish(RunStatus.CANCELLED)
            if stopping == "deadline" and not maybe_created:
                return finish(
                    RunStatus.FAILED,
                    _failure(
                        "timeout",
                        "The deployment's token quota stayed exhausted until the run's deadline; no batch was created.",
                    ),
                )
            state.lookup_only = stopping is not None
            try:
                outcome = yield context.call_activity_with_retry("submit_batch", ACTIVITY_RETRY, state.to_dict())
            except Exception as error:
                state.submit_failures += 1
                if stopping or state.submit_failures >= MAX_SUBMIT_ROUNDS:
                    return finish(
                        RunStatus.FAILED,
                        _failure(
                            "submit_unknown",
                            f"{_reason(error)}. Azure OpenAI could not be asked whether a batch was "
                            f"created; look for a batch whose metadata has runId={state.run_id}.",
                            hint=HINTS["timeout"] if stopping == "deadline" else None,
                        ),
                    )
                if not context.is_replaying:
                    logger.warning("submit of %s failed, trying again later: %s", state.run_id, _reason(error))
                first, factor, longest = SUBMIT_BACKOFF
                yield from wait(min(longest, first * factor ** (state.submit_failures - 1)))
                continue
            kind = outcome["outcome"]
            if kind in ("submitted", "reattached"):
                state.batch = outcome["batch"]
                snapshot = BatchSnapshot.from_dict(state.batch)
                created = (
                    datetime.fromtimestamp(snapshot.created_at, context.current_utc_datetime.tzinfo)
                    if snapshot.created_at
                    else context.current_utc_datetime
                )
                state.deadline = _iso(deadline_for(created, state.completion_window))
                state.phase, state.status = "polling", run_status(snapshot.status).value
            elif kind == "quota":
                state.phase = "quota"
                first, factor, longest = QUOTA_BACKOFF
                delay = min(longest, first * factor**state.quota_attempts)
                state.quota_attempts += 1
                yield from wait(delay)  # a cancel meanwhile is handled at the top of the loop
            elif kind in ("cancelled", "not_created"):
                if stopping == "deadline":
                    return finish(
                        RunStatus.FAILED,
                        _failure(
                            "timeout", "The run reached its deadline before Azure accepted a batch; none was created."
                        ),
                    )
                return finish(RunStatus.CANCELLED)
            else:  # rejected for good
                refusal = outcome.get("error") or {}
                code = str(refusal.get("code") or "rejected")
                return finish(
                    RunStatus.FAILED,
                    {
                        "code": code,
                        "message": refusal.get("message"),
                        "line": None,
                        "param": None,
                        "hint": HINTS.get(code),
                    },
                )

        # 3. Poll until Azure reports a terminal status; cancel when asked; give up at the deadline.
        while state.phase in ("polling", "cancelling"):
            assert state.batch is not None
            snapshot = BatchSnapshot.from_dict(state.batch)
            failure = snapshot.failure()
            if failure and failure["code"] == "token_limit_exceeded" and not cancel_asked():
                # Where Azure checks quota only at validation the batch fails; its guidance is to submit again later.
                state.attempt, state.batch, state.phase = state.attempt + 1, None, "quota"
                state.status, state.cancel_sent = RunStatus.STARTING.value, False
                first, factor, longest = QUOTA_BACKOFF
                state.quota_attempts += 1
                yield from wait(min(longest, first * factor ** (state.quota_attempts - 1)))
                break
            if snapshot.is_terminal:
                state.status = run_status(snapshot.status).value
                return finish(RunStatus(state.status), failure)
            now = context.current_utc_datetime
            timed_out = now >= _parse(state.deadline)
            if (cancel_asked() or timed_out) and not state.cancel_sent:
                try:
                    state.batch = yield context.call_activity_with_retry(
                        "cancel_batch", ACTIVITY_RETRY, state.to_dict()
                    )
                    state.cancel_sent, state.phase = True, "cancelling"
                except Exception as error:
                    if not context.is_replaying:
                        logger.warning("cancel of %s failed: %s", snapshot.id, _reason(error))
                snapshot = BatchSnapshot.from_dict(state.batch)
                if snapshot.is_terminal:  # it ended before the cancel reached it: report what Azure reports
                    continue
            if timed_out:
                still = "" if state.cancel_sent else " The cancel did not go through: the batch may still be running."
                return finish(
                    RunStatus.FAILED,
                    _failure(
                        "timeout",
                        "The batch did not finish within its completion window plus grace, so the run cancelled "
                        f"it.{still}",
                        hint=HINTS["timeout"],
                    ),
                )
            if checks_here >= POLLS_PER_EXECUTION:
                publish()
                context.continue_as_new(state.to_dict())
                return state.resource_view()
            observation = Observation(
                status=snapshot.status,
                now=now.timestamp(),
                created_at=float(snapshot.created_at or now.timestamp()),
                in_progress_at=snapshot.in_progress_at,
                finalizing_at=snapshot.finalizing_at,
                cancelling_at=snapshot.cancelling_at,
                total=snapshot.total,
                completed=snapshot.completed,
                failed=snapshot.failed,
                expires_at=snapshot.expires_at,
            )
            if (yield from wait(poll_delay(observation))):
                continue  # cancel asked: cancel the batch before looking again
            try:
                checked = yield context.call_activity("check_batch", state.to_dict())
            except Exception as error:
                failed_checks += 1
                if not context.is_replaying:
                    logger.warning(
                        "status of %s unavailable (%d in a row): %s", snapshot.id, failed_checks, _reason(error)
                    )
                if failed_checks >= MAX_FAILED_CHECKS:
                    return finish(
                        RunStatus.FAILED,
                        {
                            "code": "status_unavailable",
                            "message": "Azure OpenAI did not report the batch's status for too long; the batch "
                            f"may still be running (id {snapshot.id}).",
                            "line": None,
                            "param": None,
                            "hint": None,
                        },
                    )
                continue
            failed_checks = 0
            checks_here += 1
            state.polls += 1
            state.batch = checked["batch"]
            state.cancel_requested = state.cancel_requested or bool(checked.get("cancelRequested"))
            state.status = run_status(BatchSnapshot.from_dict(state.batch).status).value
    return finish(RunStatus(state.status))


def _failure(code: str, message: str, *, param: str | None = None, hint: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "line": None, "param": param, "hint": hint}


def _reason(error: Exception) -> str:
    """The message of an activity failure as Durable reports it (the activity's own exception message)."""
    text = str(error)
    return text.split("Exception: ", 1)[-1].strip() if "Exception: " in text else text


# Activities -------------------------------------------------------------------------------------------------------


@bp.activity_trigger(input_name="run")
def resolve_batch_input(run: dict[str, Any]) -> dict[str, str]:
    from shared import services
    from shared.batching import resolve_input
    from shared.runs import BatchRunState

    return resolve_input(BatchRunState.from_dict(run), services.secret_reader())


@bp.activity_trigger(input_name="run")
def submit_batch(run: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.batching import submit
    from shared.runs import BatchRunState
    from shared.secrets import SecretUnavailable

    state = BatchRunState.from_dict(run)
    secrets = services.secret_reader() if state.input_file_secret else None
    cancel_requested = services.catalog().cancel_requested(state.run_id)
    try:
        outcome = submit(state, services.openai_client(state.resource), secrets, cancel_requested)
    except SecretUnavailable as error:  # the message names the secret, never its value
        if error.transient:
            raise  # the activity's retries, then the run's own, try again
        return {"outcome": "rejected", "error": {"code": "input_secret_unavailable", "message": str(error)}}
    logger.info("run %s: submit %s", state.run_id, outcome["outcome"])
    return outcome


@bp.activity_trigger(input_name="run")
def check_batch(run: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.batching import check
    from shared.runs import BatchRunState

    state = BatchRunState.from_dict(run)
    assert state.batch is not None
    return {
        "batch": check(state.batch["id"], services.openai_client(state.resource)),
        "cancelRequested": services.catalog().cancel_requested(state.run_id),
    }


@bp.activity_trigger(input_name="run")
def cancel_batch(run: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.batching import cancel
    from shared.runs import BatchRunState

    state = BatchRunState.from_dict(run)
    assert state.batch is not None
    return cancel(state.batch["id"], services.openai_client(state.resource))
