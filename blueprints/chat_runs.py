"""The Chat Completion Job run: one orchestration, one activity calling chat completions synchronously."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

bp = df.Blueprint()

CHAT_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2_000, max_number_of_attempts=4)


@bp.orchestration_trigger(context_name="context")
def chat_run(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    from shared.chat import ChatRun

    run = ChatRun.from_dict(context.get_input())
    started = context.current_utc_datetime.isoformat().replace("+00:00", "Z")
    context.set_custom_status(run.resource_view("Running", started_at=started))
    try:
        result = yield context.call_activity_with_retry("complete_chat", CHAT_RETRY, run.to_dict())
    except Exception as error:
        message = str(error).split("Exception: ", 1)[-1].strip()
        result = {"error": {"code": "chat_failed", "message": message}}
    ended = context.current_utc_datetime.isoformat().replace("+00:00", "Z")
    if "error" in result:
        view = run.resource_view("Failed", failure=result["error"], started_at=started, ended_at=ended)
    else:
        view = run.resource_view("Success", outputs=result, started_at=started, ended_at=ended)
    context.set_custom_status(view)
    return view


@bp.activity_trigger(input_name="run")
def complete_chat(run: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.chat import ChatRun, complete

    chat = ChatRun.from_dict(run)
    return complete(chat, services.openai_client(chat.resource))
