"""The chat_run orchestrator through the real replay engine: one activity, outputs, sync run ids."""

from __future__ import annotations

from typing import Any

from shared.chat import UNANSWERED, ChatRun
from shared.runs import Failure
from tests.replay import Replay

RUN = ChatRun(
    run_id="gpt-4o::chat::0123456789abcdef0123456789abcdef",
    resource="aoai-devstack-eastus",
    external_id="gpt-4o",
    deployment="gpt-4o",
    user_prompt="Name a prime.",
    requested_at="2026-11-26T09:00:00Z",
    monitor_url="https://portal/x",
    system_prompt="Be brief.",
    max_tokens=50,
)
OUTPUTS = {"response": "7", "prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21, "finish_reason": "stop"}


def started() -> Replay:
    replay = Replay("chat_run", RUN.to_dict(), instance_id=RUN.run_id)
    replay.run()
    return replay


def indexed(replay: Replay) -> dict[str, Any]:
    """Answers the run index's write that ends the run; returns what it was asked to write."""
    view: dict[str, Any] = replay.activity("index_run").input["view"]
    replay.complete("index_run", {"seen": "Indexed", "status": view["status"], "cancel_requested": False})
    return view


def test_chat_run_calls_one_activity_with_the_run() -> None:
    replay = started()

    call = replay.activity("complete_chat")
    assert call.input == RUN.to_dict()
    assert replay.custom_status["status"] == "Running"
    assert replay.custom_status["runId"] is None


def test_chat_run_succeeds_with_outputs_and_sync_run_id() -> None:
    replay = started()
    replay.complete("complete_chat", OUTPUTS)
    written = indexed(replay)

    assert replay.done
    assert (written["status"], written["outputs"]["response"]) == ("Success", None)  # the index keeps it short
    run: dict[str, Any] = replay.output
    assert (run["status"], run["runId"], run["outputs"]) == ("Success", "gpt-4o#sync#Success", OUTPUTS)
    assert run["startedAt"] == "2026-11-26T09:00:00Z"  # the orchestration's clock, at start and at the end
    assert run["endedAt"] == "2026-11-26T09:00:00Z"
    assert run["jobType"] == "chat_completion"


def test_chat_refusal_fails_with_sync_failed_run_id() -> None:
    replay = started()
    replay.complete("complete_chat", {"failure": Failure.of("DeploymentNotFound", "gone").to_dict()})
    indexed(replay)

    assert (replay.output["status"], replay.output["runId"]) == ("Failed", "gpt-4o#sync#Failed")
    assert replay.output["failure"]["code"] == "DeploymentNotFound"


def test_chat_transient_failures_are_retried_then_fail() -> None:
    replay = started()
    for attempt in range(4):
        replay.fail("complete_chat", "Azure OpenAI 503 ServiceUnavailable")
        replay.fire_timer()
        if attempt < 3:
            assert replay.activity("complete_chat").attempts == attempt + 2
    replay.fail("index_run", "Azure Table Storage 503")  # the index is only a view: the run still ends

    assert replay.done
    assert replay.output["status"] == "Failed"
    failure = replay.output["failure"]
    assert (failure["code"], failure["message"]) == ("chat_failed", UNANSWERED.message)
