"""Deterministic chat completions: the same request always gets the same reply, with plausible usage counts.

Usage counts the prompt as `prompt_units` spells it, and reports prompt caching as Azure does: a prompt of at least
1,024 tokens whose prefix was seen recently has that prefix, in 128-token increments, as `cached_tokens`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devstack.emulator.config import Deployment, LineFailure

SAFE_FILTER = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}

# Azure caches prompts of at least 1,024 tokens, in 128-token increments of an identical prefix.
PROMPT_CACHE_MIN_TOKENS = 1024
PROMPT_CACHE_INCREMENT = 128
# A chat deployment's cache is cleared after 5-10 minutes of inactivity (Azure's docs); the emulator takes 5.
CHAT_PROMPT_CACHE_IDLE_SECONDS = 5 * 60


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


class PromptCache:
    """The prompt prefixes a deployment has seen, kept in 128-token blocks as Azure's prompt caching keeps them.

    A prompt gets as `cached_tokens` its longest prefix of at least 1,024 tokens, ending on a 128-token boundary,
    that an earlier prompt had too (so the shared prefix rounded down to 128). With `idle_seconds`, a prefix not
    used for that long is gone; without, every prefix stays (one batch's requests)."""

    def __init__(self, idle_seconds: float | None = None) -> None:
        self.idle_seconds = idle_seconds
        self._last_used: dict[bytes, float] = {}
        self._swept_at = -math.inf

    def cached_tokens(self, messages: list[Any], now: float = 0.0) -> int:
        """The cached tokens of this prompt; its own prefixes are remembered for the prompts after it."""
        if prompt_tokens(messages) < PROMPT_CACHE_MIN_TOKENS:
            return 0  # too short to be cached, and no prefix of it is long enough to serve another prompt
        cached = 0
        boundaries = prefix_digests(messages)
        for count, prefix in boundaries:
            if not self._is_warm(prefix, now):
                break  # a longer prefix cannot be warm when a shorter one is not
            cached = count
        for _, prefix in boundaries:
            self._last_used[prefix] = now
        return cached

    def _is_warm(self, prefix: bytes, now: float) -> bool:
        last_used = self._last_used.get(prefix)
        if last_used is None:
            return False
        return self.idle_seconds is None or now - last_used <= self.idle_seconds

    def forget_idle(self, now: float) -> None:
        """Drops prefixes idle for longer than `idle_seconds`, so a long-running emulator does not grow (a sweep at
        most once per `idle_seconds`)."""
        idle = self.idle_seconds
        if idle is None or now - self._swept_at < idle:
            return
        self._last_used = {prefix: used for prefix, used in self._last_used.items() if now - used <= idle}
        self._swept_at = now


def prefix_digests(messages: list[Any]) -> list[tuple[int, bytes]]:
    """(tokens, digest) of each prefix of the prompt that ends on a 128-token boundary at 1,024 tokens or more.

    The prompt is the tokens `prompt_tokens` counts: per message four framing tokens (the first carries the role),
    then its content in four-character pieces; at the end three tokens that prime the reply. Equal digests mean
    equal prefixes."""
    digest = hashlib.blake2b(digest_size=16)
    digests: list[tuple[int, bytes]] = []
    fed = 0

    def add(count: int, piece: Callable[[int, int], bytes]) -> None:
        # piece(i, j): the bytes of tokens i..j-1 of these `count`; fed a block at a time, not token by token.
        nonlocal fed
        done = 0
        while done < count:
            step = min(PROMPT_CACHE_INCREMENT - fed % PROMPT_CACHE_INCREMENT, count - done)
            digest.update(piece(done, done + step))
            done, fed = done + step, fed + step
            if fed % PROMPT_CACHE_INCREMENT == 0 and fed >= PROMPT_CACHE_MIN_TOKENS:
                digests.append((fed, digest.copy().digest()))

    for message in messages:
        role = str(message.get("role")) if isinstance(message, dict) else ""
        header = f"\x00{role}\x00".encode("utf-8", "surrogatepass")
        add(4, lambda i, _, header=header: header if i == 0 else b"")
        text = message_text(message)
        add(estimate_tokens(text), lambda i, j, text=text: text[4 * i : 4 * j].encode("utf-8", "surrogatepass"))
    add(3, lambda i, _: b"\x01" if i == 0 else b"")
    return digests


def request_tokens(body: dict[str, Any]) -> int:
    """Tokens a request enqueues against a batch deployment's quota."""
    messages = body.get("messages")
    return prompt_tokens(messages) if isinstance(messages, list) else 0


def complete(
    deployment: Deployment,
    body: dict[str, Any],
    created: int,
    failures: list[LineFailure],
    prompt_cache: PromptCache | None = None,
    now: float = 0.0,
) -> CompletionResult:
    """The reply to a chat completion request whose shape is already valid; `prompt_cache` (read and filled at
    emulated time `now`) gives its cached tokens, none without one."""
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
    cached_tokens = prompt_cache.cached_tokens(messages, now) if prompt_cache else 0
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
                "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": cached_tokens},
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
