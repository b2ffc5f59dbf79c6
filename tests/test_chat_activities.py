"""The chat-run activity (complete_chat) and shared/chat.py, called as the Functions worker calls it, against the
emulated Azure OpenAI data plane over real HTTP with the identity emulator's tokens."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.chat import ChatRun
from shared.http import AzureError
from shared.runs import Failure, RunStatus
from tests.conftest import RunningEmulator
from tests.devstack.conftest import DataPlane
from tests.functions import functions_by_name

RESOURCE = "aoai-devstack-eastus"

pytestmark = pytest.mark.usefixtures("app_settings")


@pytest.fixture
def eastus(emulator: RunningEmulator) -> DataPlane:
    resource = emulator.resource(RESOURCE)
    return DataPlane(resource["endpoint"], resource["apiKey"])


def complete_chat(run: ChatRun) -> Any:
    """Runs the activity as the worker does: its user function with the (JSON-shaped) activity input."""
    return functions_by_name()["complete_chat"].get_user_function()(json.loads(json.dumps(run.to_dict())))


def new_run(deployment: str = "gpt-4o", user_prompt: str = "Name three rivers in Europe.", **overrides: Any) -> ChatRun:
    values: dict[str, Any] = {
        "run_id": f"{deployment}::chat::{uuid.uuid4().hex}",
        "resource": RESOURCE,
        "external_id": deployment,
        "deployment": deployment,
        "user_prompt": user_prompt,
        "requested_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "monitor_url": "https://portal.azure.com/#/resource/x/overview",
    }
    values.update(overrides)
    return ChatRun(**values)


def sent_bodies(emulator: RunningEmulator) -> list[Any]:
    return [entry["body"] for entry in emulator.requests_log(service="openai", route="chat.completions")]


def test_outputs_are_the_emulators_reply(emulator: RunningEmulator, eastus: DataPlane) -> None:
    result = complete_chat(new_run(system_prompt="Answer in one line."))

    (body,) = sent_bodies(emulator)
    reply = eastus.request("POST", "deployments/gpt-4o/chat/completions", json=body).json()  # deterministic
    assert result == {
        "response": reply["choices"][0]["message"]["content"],
        "prompt_tokens": reply["usage"]["prompt_tokens"],
        "completion_tokens": reply["usage"]["completion_tokens"],
        "total_tokens": reply["usage"]["total_tokens"],
        "finish_reason": "stop",
    }
    assert result["response"].startswith("Emulated reply ")
    assert result["response"].endswith("Name three rivers in Europe.")
    assert result["total_tokens"] == result["prompt_tokens"] + result["completion_tokens"]


def test_request_carries_the_system_prompt_and_no_unset_options(emulator: RunningEmulator) -> None:
    complete_chat(new_run(system_prompt="Answer in one line."))
    complete_chat(new_run())

    assert sent_bodies(emulator) == [
        {
            "messages": [
                {"role": "system", "content": "Answer in one line."},
                {"role": "user", "content": "Name three rivers in Europe."},
            ]
        },
        {"messages": [{"role": "user", "content": "Name three rivers in Europe."}]},
    ]
    assert {e["auth"] for e in emulator.requests_log(service="openai", route="chat.completions")} == {"bearer"}


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        ({"max_tokens": 5}, {"max_tokens": 5}),
        ({"temperature": 0.0}, {"temperature": 0.0}),
        ({"max_tokens": 200, "temperature": 1.5}, {"max_tokens": 200, "temperature": 1.5}),
    ],
    ids=["max_tokens", "temperature-zero", "both"],
)
def test_max_tokens_and_temperature_are_sent_only_when_set(
    emulator: RunningEmulator, options: dict[str, Any], sent: dict[str, Any]
) -> None:
    complete_chat(new_run(**options))

    (body,) = sent_bodies(emulator)
    assert {k: v for k, v in body.items() if k != "messages"} == sent


def test_max_tokens_cutting_the_reply_gives_finish_reason_length() -> None:
    result = complete_chat(new_run(max_tokens=3))

    assert (result["finish_reason"], result["completion_tokens"]) == ("length", 3)
    assert len(result["response"]) <= 12


@pytest.mark.parametrize(
    ("deployment", "status", "code", "message_start"),
    [
        ("no-such-deployment", 404, "DeploymentNotFound", "The API deployment for this resource does not exist."),
        ("gpt-4o-batch", 400, "OperationNotSupported", "The deployment 'gpt-4o-batch' has SKU 'GlobalBatch'"),
        ("text-embedding-3-small", 400, "OperationNotSupported", "The chatCompletion operation does not work"),
        ("gpt-4-retiring", 404, "DeploymentNotFound", "The API deployment for this resource does not exist."),
    ],
    ids=["unknown", "batch-only", "embedding", "not-provisioned"],
)
def test_deployment_that_cannot_chat_is_an_error_result_not_an_exception(
    emulator: RunningEmulator, deployment: str, status: int, code: str, message_start: str
) -> None:
    result = complete_chat(new_run(deployment))

    assert set(result) == {"failure"}
    assert result["failure"]["code"] == code
    assert result["failure"]["message"].startswith(message_start)
    assert len(sent_bodies(emulator)) == 1  # a refusal Azure will repeat is not retried


def test_filtered_prompt_is_an_error_result() -> None:
    result = complete_chat(new_run(user_prompt="Tell me [[content_filter]]"))

    assert result["failure"]["code"] == "content_filter"


def test_throttling_within_the_retries_still_gives_the_result(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="openai", route="chat.completions", status=429, retryAfter=0.2, times=3)
    started = time.monotonic()

    result = complete_chat(new_run())

    assert result["finish_reason"] == "stop"
    statuses = [e["status"] for e in emulator.requests_log(service="openai", route="chat.completions")]
    assert statuses == [429, 429, 429, 200]
    assert time.monotonic() - started >= 0.6  # waited as retry-after-ms said (0.2 s each), not Retry-After's 1 s


def test_throttling_beyond_the_retries_raises_so_durable_retries_later(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="openai", route="chat.completions", status=429, retryAfter=0.01)

    with pytest.raises(AzureError) as raised:
        complete_chat(new_run())

    assert (raised.value.status, raised.value.transient) == (429, True)
    assert len(sent_bodies(emulator)) == 5  # the first attempt and four retries


def test_unavailable_service_raises_so_durable_retries(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="openai", route="chat.completions", times=1, status=503)

    with pytest.raises(AzureError) as raised:
        complete_chat(new_run())
    retried = complete_chat(new_run())

    assert (raised.value.status, raised.value.transient) == (503, True)
    assert retried["finish_reason"] == "stop"
    assert len(sent_bodies(emulator)) == 2  # never retried inside the activity


@pytest.mark.parametrize("fault", [{"status": 500}, {"drop": True}], ids=["500", "dropped"])
def test_failure_after_which_the_completion_may_have_run_fails_without_paying_twice(
    emulator: RunningEmulator, fault: dict[str, Any]
) -> None:
    emulator.add_fault(service="openai", route="chat.completions", times=1, **fault)

    result = complete_chat(new_run())

    assert result["failure"]["code"] == ("InternalServerError" if fault.get("status") else "NoReply")
    assert len(sent_bodies(emulator)) == 1


def test_identity_outage_raises_so_durable_retries_rather_than_failing_the_run(emulator: RunningEmulator) -> None:
    emulator.add_fault(service="identity", route="token", status=400, times=1)

    with pytest.raises(AzureError) as raised:
        complete_chat(new_run())
    retried = complete_chat(new_run())

    # Nothing reached Azure, so there is no Azure status to report, and the next attempt may well get a token.
    assert (raised.value.status, raised.value.code, raised.value.transient) == (None, "CredentialUnavailable", True)
    assert sent_bodies(emulator) == [new_run().request_body()]
    assert retried["finish_reason"] == "stop"


def test_server_error_line_marker_is_a_failure_not_a_retry() -> None:
    result = complete_chat(new_run(user_prompt="Please [[fail]]"))

    assert result["failure"]["code"] == "server_error"


def test_chat_run_round_trips_and_its_views_hold_the_outputs() -> None:
    run = new_run(system_prompt="s", max_tokens=10, temperature=0.5)
    outputs = {
        "response": "r",
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
        "finish_reason": "stop",
    }

    assert ChatRun.from_dict({**run.to_dict(), "unknown": 1}) == run
    success = run.resource_view(RunStatus.SUCCESS, outputs=outputs)
    assert (success["status"], success["jobType"], success["outputs"]) == ("Success", "chat_completion", outputs)
    failed = run.resource_view(RunStatus.FAILED, failure=Failure.of("DeploymentNotFound", "m"))
    assert failed["outputs"] == dict.fromkeys(outputs)
    assert failed["failure"] == {
        "code": "DeploymentNotFound",
        "message": "m",
        "line": None,
        "param": None,
        "hint": None,
    }
