"""The Azure OpenAI Batch Job run: an orchestrator that carries out the steps `shared.batch_run.decide` chooses,
and the activities that do the I/O.

Cancel arrives as the external event `cancel` (and as a durable cancel record the activities read, so it survives
continue-as-new).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import replace
from datetime import datetime
from typing import Any

import azure.durable_functions as df

bp = df.Blueprint()
logger = logging.getLogger(__name__)

CANCEL_EVENT = "cancel"
ACTIVITIES = {
    "ResolveInput": "resolve_batch_input",
    "Submit": "submit_batch",
    "Check": "check_batch",
    "CancelBatch": "cancel_batch",
    "UploadInput": "upload_input",
    "DeleteUploads": "delete_uploads",
    "CollectResults": "collect_results",
    "IndexRun": "index_run",
}


@bp.orchestration_trigger(context_name="context")
def batch_run(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    from shared.batch_run import BatchRun, decide

    run = BatchRun.from_dict(context.get_input())
    return (yield from carry_out(context, run, decide, ACTIVITIES, lambda ended: ended.resource_view()))


def carry_out(
    context: df.DurableOrchestrationContext,
    run: Any,
    decide_next: Callable[[Any, Any, datetime], tuple[Any, Any]],
    activities: dict[str, str],
    finished: Callable[[Any], dict[str, Any]],
) -> Generator[Any, Any, dict[str, Any]]:
    """The loop of a batch run and of a batch set alike: `decide_next` chooses the step from what was just seen,
    this carries it out with the Durable API (an activity by `activities`, a durable timer raced against the cancel
    event, continue-as-new, the end with `finished(run)`) and turns what happened into the next observation."""
    from shared.batch_run import (
        ActivityFailed,
        Began,
        CancelArrived,
        ContinueAsNew,
        Finish,
        Seen,
        TimerFired,
        Wait,
        seen_from_dict,
    )
    from shared.runs import parse_iso

    cancel = context.wait_for_external_event(CANCEL_EVENT)  # one waiter, shared by every wait below
    seen: Seen = Began()
    while True:
        run, step = decide_next(run, seen, context.current_utc_datetime)
        if run.indexed_status == run.status.value:  # the portal shows a status only once the run index has it
            context.set_custom_status(run.custom_status())
        if isinstance(step, Finish):
            return finished(run)
        if isinstance(step, ContinueAsNew):
            context.continue_as_new(run.to_dict())
            return dict(run.resource_view())
        if isinstance(step, Wait):
            timer = context.create_timer(parse_iso(step.until))
            if run.cancel_requested:  # a completed cancel would win every wait: only the timer can end this one
                yield timer
                seen = TimerFired()
            elif (yield context.task_any([timer, cancel])) is cancel:
                timer.cancel()
                seen = CancelArrived()
            else:
                seen = TimerFired()
        else:
            activity = activities[type(step).__name__]
            try:
                seen = seen_from_dict((yield context.call_activity(activity, step.to_dict())))
            except Exception as error:  # the details go to the logs; the run decides from the fact alone
                if not context.is_replaying:
                    logger.warning("run %s: %s failed: %s", run.run_id, activity, error)
                seen = ActivityFailed(step=type(step))
        if cancel.is_completed and not run.cancel_requested:
            seen = replace(seen, cancel_requested=True)


# Activities -------------------------------------------------------------------------------------------------------


@bp.activity_trigger(input_name="step")
def resolve_batch_input(step: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.batch_run import ResolveInput, seen_to_dict
    from shared.batching import resolve_input

    return seen_to_dict(resolve_input(ResolveInput.from_dict(step), services.secret_reader()))


@bp.activity_trigger(input_name="step")
def submit_batch(step: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.batch_run import Submit, seen_to_dict
    from shared.batching import submit

    request: Submit = Submit.from_dict(step)
    secrets = services.secret_reader() if request.input_file_secret else None
    cancel_requested = services.catalog().cancel_requested(request.run_id)
    client = services.openai_client(request.resource)
    answer = submit(request, client, services.submit_ledger(), secrets, cancel_requested)
    logger.info("run %s: submit %s", request.run_id, answer.outcome.value)
    return seen_to_dict(answer)


@bp.activity_trigger(input_name="step")
def check_batch(step: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.batch_run import Check, seen_to_dict
    from shared.batching import check

    request: Check = Check.from_dict(step)
    cancel_requested = services.catalog().cancel_requested(request.run_id)
    return seen_to_dict(check(request, services.openai_client(request.resource), cancel_requested))


@bp.activity_trigger(input_name="step")
def cancel_batch(step: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.batch_run import CancelBatch, seen_to_dict
    from shared.batching import cancel

    request: CancelBatch = CancelBatch.from_dict(step)
    return seen_to_dict(cancel(request, services.openai_client(request.resource)))


@bp.activity_trigger(input_name="step")
def index_run(step: dict[str, Any]) -> dict[str, Any]:
    """Writes the run's row in the run index (batch and chat runs alike)."""
    from shared import services
    from shared.batch_run import Indexed, IndexRun, seen_to_dict
    from shared.runs import parse_iso

    request: IndexRun = IndexRun.from_dict(step)
    services.run_index().record(request.view, parse_iso(request.at))
    return seen_to_dict(Indexed(status=str(request.view["status"])))


@bp.activity_trigger(input_name="step")
def collect_results(step: dict[str, Any]) -> dict[str, Any]:
    """Stages the ended batch's results in the app's storage and sums what its requests used and cost."""
    from shared import services
    from shared.batch_run import CollectResults, ResultsCollected, seen_to_dict
    from shared.results import collect, estimated_cost, result_contents
    from shared.settings import get_settings

    request: CollectResults = CollectResults.from_dict(step)
    client, endpoints = services.openai_client(request.resource), get_settings().input_blob_endpoints
    contents = result_contents(request, client, services.credential(), endpoints)
    collected = collect(request.run_id, contents, services.staging())
    cost = estimated_cost(collected.usage, get_settings().prices, request.model, request.model_version)
    answer = ResultsCollected(
        succeeded=collected.succeeded, failed=collected.failed, usage=collected.usage.to_dict(), estimated_cost=cost
    )
    return seen_to_dict(answer)


@bp.activity_trigger(input_name="step")
def delete_uploads(step: dict[str, Any]) -> dict[str, Any]:
    """Deletes the input files a shard uploaded, on each resource it ran on."""
    from shared import services
    from shared.batch_run import DeleteUploads, UploadsDeleted, seen_to_dict

    request: DeleteUploads = DeleteUploads.from_dict(step)
    for resource, file_id in request.files.items():
        services.openai_client(resource).delete_file(file_id)
    return seen_to_dict(UploadsDeleted())


@bp.activity_trigger(input_name="step")
def upload_input(step: dict[str, Any]) -> dict[str, Any]:
    """Uploads a shard's staged input to the resource that will run it, and waits until Azure has processed it."""
    from shared import services
    from shared.batch_run import InputUploaded, UploadInput, seen_to_dict
    from shared.inputs import upload_staged

    request: UploadInput = UploadInput.from_dict(step)
    client = services.openai_client(request.resource)
    staging = services.staging()
    file_id = upload_staged(request.staged_input, f"{request.run_id}.jsonl", staging, client, request.deployment)
    return seen_to_dict(InputUploaded(resource=request.resource, file_id=file_id))
