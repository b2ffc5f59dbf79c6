"""Chat completions on the emulated data plane: deterministic replies, usage, finish_reason and errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.devstack.conftest import DataPlane


def chat(plane: DataPlane, deployment: str, body: dict[str, Any]) -> Any:
    return plane.request("POST", f"deployments/{deployment}/chat/completions", json=body)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime number."}]


def test_chat_completion_is_deterministic_with_usage(eastus: DataPlane) -> None:
    first = chat(eastus, "gpt-4o", {"messages": MESSAGES})
    second = chat(eastus, "gpt-4o", {"messages": MESSAGES})

    assert first.status_code == 200
    body = first.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o-2024-08-06"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Name a prime number." in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert choice["message"]["content"] == second.json()["choices"][0]["message"]["content"]


def test_longer_prompts_count_more_prompt_tokens(eastus: DataPlane) -> None:
    short = chat(eastus, "gpt-4o", {"messages": [{"role": "user", "content": "Hi"}]}).json()
    long = chat(eastus, "gpt-4o", {"messages": [{"role": "user", "content": "Hi " * 200}]}).json()

    assert long["usage"]["prompt_tokens"] > short["usage"]["prompt_tokens"] + 100


def test_max_tokens_truncates_with_finish_reason_length(eastus: DataPlane) -> None:
    body = chat(eastus, "gpt-4o", {"messages": MESSAGES, "max_tokens": 3, "temperature": 0.2}).json()

    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_unknown_or_failed_deployment_is_404_deployment_not_found(eastus: DataPlane) -> None:
    for deployment in ("no-such-deployment", "gpt-4-retiring"):
        response = chat(eastus, deployment, {"messages": MESSAGES})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "DeploymentNotFound"


def test_embedding_deployment_refuses_chat(eastus: DataPlane) -> None:
    response = chat(eastus, "text-embedding-3-small", {"messages": MESSAGES})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "OperationNotSupported"


def test_batch_deployment_refuses_synchronous_chat(eastus: DataPlane) -> None:
    response = chat(eastus, "gpt-4o-batch", {"messages": MESSAGES})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "OperationNotSupported"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"messages": MESSAGES, "temperature": 3}, "temperature"),
    ],
)
def test_malformed_chat_request_is_400_naming_the_param(eastus: DataPlane, body: dict[str, Any], param: str) -> None:
    response = chat(eastus, "gpt-4o", body)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_failure_marker_in_chat_prompt_returns_that_status(eastus: DataPlane) -> None:
    response = chat(eastus, "gpt-4o", {"messages": [{"role": "user", "content": "[[fail]]"}]})

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"


def test_chat_with_unparseable_json_is_400(eastus: DataPlane) -> None:
    response = eastus.request(
        "POST", "deployments/gpt-4o/chat/completions", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
