"""Deterministic chat completions: the same request always gets the same reply, with plausible usage counts."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from devstack.emulator.config import Deployment, LineFailure

SAFE_FILTER = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


@dataclass(frozen=True)
class CompletionResult:
    status_code: int
    body: dict[str, Any]


def estimate_tokens(text: str) -> int:
    """About four characters per token, as OpenAI's rule of thumb for English text."""
    return max(1, math.ceil(len(text) / 4))


def message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def prompt_tokens(messages: list[Any]) -> int:
    """Prompt tokens as OpenAI counts chat input: content plus a few tokens of framing per message."""
    return sum(estimate_tokens(message_text(m)) + 4 for m in messages) + 3


def request_tokens(body: dict[str, Any]) -> int:
    """Tokens a request enqueues against a batch deployment's quota."""
    messages = body.get("messages")
    return prompt_tokens(messages) if isinstance(messages, list) else 0


def complete(
    deployment: Deployment, body: dict[str, Any], created: int, failures: list[LineFailure]
) -> CompletionResult:
    """The reply to a chat completion request whose shape is already valid."""
    messages: list[Any] = body["messages"]
    prompt = "\n".join(message_text(m) for m in messages)
    for failure in failures:
        if failure.marker in prompt:
            error = {"code": failure.code, "message": failure.message, "param": None, "type": None}
            if failure.code == "content_filter":
                error["param"] = "prompt"
                error["innererror"] = {"code": "ResponsibleAIPolicyViolation"}
            return CompletionResult(failure.status_code, {"error": error})

    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    last_user = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    reply = f"Emulated reply {digest[:8]} from {deployment.model_name}: {' '.join(last_user.split())[:200]}"
    completion_tokens = estimate_tokens(reply)
    finish_reason = "stop"
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(max_tokens, int) and completion_tokens > max_tokens:
        reply, completion_tokens, finish_reason = reply[: max_tokens * 4], max_tokens, "length"
    prompt_count = prompt_tokens(messages)
    return CompletionResult(
        200,
        {
            "choices": [
                {
                    "content_filter_results": SAFE_FILTER,
                    "finish_reason": finish_reason,
                    "index": 0,
                    "logprobs": None,
                    "message": {"annotations": [], "content": reply, "refusal": None, "role": "assistant"},
                }
            ],
            "created": created,
            "id": f"chatcmpl-{digest[8:38]}",
            "model": f"{deployment.model_name}-{deployment.model_version}",
            "object": "chat.completion",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE_FILTER}],
            "system_fingerprint": f"fp_{digest[38:48]}",
            "usage": {
                "completion_tokens": completion_tokens,
                "completion_tokens_details": {
                    "accepted_prediction_tokens": 0,
                    "audio_tokens": 0,
                    "reasoning_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
                "prompt_tokens": prompt_count,
                "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
                "total_tokens": prompt_count + completion_tokens,
            },
        },
    )


def chat_request_problem(body: Any) -> tuple[str | None, str] | None:
    """(param, message) for a chat completion body the service would refuse with 400, else None."""
    if not isinstance(body, dict):
        return None, "The request body must be a JSON object."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages", "'messages' is a required property" if messages is None else "[] is too short - 'messages'"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in {
            "system",
            "user",
            "assistant",
            "developer",
            "tool",
            "function",
        }:
            return f"messages[{index}].role", f"Invalid value for 'messages[{index}].role'."
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        return "max_tokens", f"{max_tokens!r} is less than the minimum of 1 - 'max_tokens'"
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or isinstance(temperature, bool) or not 0 <= temperature <= 2
    ):
        return "temperature", f"{temperature!r} is greater than the maximum of 2 - 'temperature'"
    return None
