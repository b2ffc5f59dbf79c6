"""The Chat Completion Job run: one orchestration, one activity calling chat completions synchronously."""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

bp = df.Blueprint()
logger = logging.getLogger(__name__)

CHAT_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2_000, max_number_of_attempts=4)


@bp.orchestration_trigger(context_name="context")
def chat_run(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    from shared.batch_run import IndexRun
    from shared.chat import UNANSWERED, ChatRun, custom_status_of
    from shared.runs import Failure, RunStatus, iso

    run = ChatRun.from_dict(context.get_input())
    started = iso(context.current_utc_datetime)
    context.set_custom_status(run.resource_view(RunStatus.RUNNING, started_at=started))
    try:
        result = yield context.call_activity_with_retry("complete_chat", CHAT_RETRY, run.to_dict())
    except Exception as error:  # the details go to the logs; the run says the cause in a sentence
        if not context.is_replaying:
            logger.warning("chat run %s: the completion failed: %s", run.run_id, error)
        result = {"failure": UNANSWERED.to_dict()}
    ended = iso(context.current_utc_datetime)
    if "failure" in result:
        failure = Failure.from_dict(result["failure"])
        view = run.resource_view(RunStatus.FAILED, failure=failure, started_at=started, ended_at=ended)
    else:
        view = run.resource_view(RunStatus.SUCCESS, outputs=result, started_at=started, ended_at=ended)
    try:  # the run index learns how the run ended first (it is only a view: a failure leaves the run as it is)
        yield context.call_activity("index_run", IndexRun(run.run_id, ended, custom_status_of(view)).to_dict())
    except Exception as error:
        if not context.is_replaying:
            logger.warning("chat run %s: the run index was not updated: %s", run.run_id, error)
    context.set_custom_status(custom_status_of(view))
    return view


@bp.activity_trigger(input_name="run")
def complete_chat(run: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.chat import ChatRun, complete

    chat = ChatRun.from_dict(run)
    return complete(chat, services.openai_client(chat.resource))
