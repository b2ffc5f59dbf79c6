"""Prompt caching in usage: `prompt_tokens_details.cached_tokens` as Azure reports it, for batch lines and chat."""

from __future__ import annotations

import json
from typing import Any

from devstack.emulator.completions import PromptCache
from tests.devstack.conftest import DataPlane
from tests.devstack.test_openai_batches import run_to_end, submit

# 1,200 tokens of system prompt (four characters a token); with its 4 framing tokens and the user message's 4, the
# requests below share a 1,208-token prefix, which Azure caches as 1,152 (a multiple of 128).
LONG_SYSTEM_PROMPT = "Rule" * 1200
SHORT_SYSTEM_PROMPT = "Be brief."


def requests_with_system_prompt(system_prompt: str, count: int, user_prompt: str = "{i}: summarise") -> str:
    """A batch input whose requests share `system_prompt` and differ from the first character of the user message."""
    lines = []
    for i in range(count):
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user_prompt.format(i=i)}]
        body = {"model": "gpt-4o-batch", "messages": messages}
        lines.append(json.dumps({"custom_id": f"task-{i}", "method": "POST", "url": "/chat/completions", "body": body}))
    return "\n".join(lines) + "\n"


def usages_in_output_order(plane: DataPlane, content: str) -> list[dict[str, Any]]:
    batch = run_to_end(plane, submit(plane, content)["id"])
    assert batch["status"] == "completed", batch
    return [line["response"]["body"]["usage"] for line in plane.content_lines(batch["output_file_id"])]


def test_a_shared_long_system_prompt_is_cached_on_every_line_after_the_first(eastus: DataPlane) -> None:
    usages = usages_in_output_order(eastus, requests_with_system_prompt(LONG_SYSTEM_PROMPT, 5))

    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0, 1152, 1152, 1152, 1152]
    for usage in usages:
        assert usage["prompt_tokens"] > 1152
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["prompt_tokens_details"]["audio_tokens"] == 0
        assert set(usage["completion_tokens_details"]) >= {"audio_tokens", "reasoning_tokens"}


def test_a_short_shared_system_prompt_is_never_cached(eastus: DataPlane) -> None:
    usages = usages_in_output_order(eastus, requests_with_system_prompt(SHORT_SYSTEM_PROMPT, 4))

    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0, 0, 0, 0]


def test_a_shared_prefix_just_under_1024_tokens_is_not_cached(eastus: DataPlane) -> None:
    # 1,010 tokens of system prompt: a shared prefix of 1,018 tokens, each prompt over 1,024.
    content = requests_with_system_prompt("Rule" * 1010, 3, user_prompt="{i}: " + "word" * 50)
    usages = usages_in_output_order(eastus, content)

    assert all(u["prompt_tokens"] >= 1024 for u in usages)
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0, 0, 0]


def test_an_identical_prompt_is_cached_up_to_its_last_128_token_boundary(eastus: DataPlane) -> None:
    line = json.loads(requests_with_system_prompt(LONG_SYSTEM_PROMPT, 1))
    twice = json.dumps(line) + "\n" + json.dumps({**line, "custom_id": "again"}) + "\n"

    usages = usages_in_output_order(eastus, twice)

    prompt_tokens = usages[0]["prompt_tokens"]
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0, prompt_tokens // 128 * 128]


def test_the_cache_belongs_to_one_batch(eastus: DataPlane) -> None:
    content = requests_with_system_prompt(LONG_SYSTEM_PROMPT, 2)

    first = usages_in_output_order(eastus, content)
    second = usages_in_output_order(eastus, content)

    assert [u["prompt_tokens_details"]["cached_tokens"] for u in first] == [0, 1152]
    assert second == first


def test_chat_completions_cache_a_prompt_prefix_the_deployment_saw_recently(eastus: DataPlane) -> None:
    def cached_tokens(user: str, system: str = LONG_SYSTEM_PROMPT) -> int:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        response = eastus.request("POST", "deployments/gpt-4o/chat/completions", json={"messages": messages})
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        return int(usage["prompt_tokens_details"]["cached_tokens"])

    assert cached_tokens("1: summarise") == 0
    assert cached_tokens("2: summarise") == 1152
    assert cached_tokens("3: summarise", system=SHORT_SYSTEM_PROMPT) == 0


def test_a_chat_prompt_prefix_idle_for_over_five_minutes_is_no_longer_cached() -> None:
    cache = PromptCache(idle_seconds=300)
    prompt = [{"role": "system", "content": LONG_SYSTEM_PROMPT}, {"role": "user", "content": "hi"}]

    assert cache.cached_tokens(prompt, now=0) == 0
    assert cache.cached_tokens(prompt, now=300) == 1152  # used again: idle time starts over
    assert cache.cached_tokens(prompt, now=600) == 1152
    assert cache.cached_tokens(prompt, now=901) == 0
    cache.forget_idle(now=1500)
    assert cache.cached_tokens(prompt, now=1500) == 0
