"""How many prompt tokens a chat request will cost, estimated without a tokenizer: a documented, conservative rule.

Azure counts a batch's enqueued tokens against the deployment's quota from the prompts, so the app estimates them
before it submits (and, later, to cut an input into shards that fit). No tokenizer is both offline and well kept
for Python today: tiktoken downloads its encodings at first use, and the packages that ship them are young. So the
estimate is a rule: a third of the text's UTF-8 bytes (English runs about four characters a token, and UTF-8 text
in other scripts more bytes a token than that), plus the chat format's framing of four tokens a message and three
for the reply's priming. It overestimates English prose by about a third and stays at or above the o200k_base and
cl100k_base counts on the sample in `bench/tokens.py` (see bench/README.md), so a quota decision made on it errs on
the safe side.
"""

from __future__ import annotations

import math
from typing import Any

BYTES_PER_TOKEN = 3.0
TOKENS_PER_MESSAGE = 4  # role and separators around each message
REPLY_PRIMING_TOKENS = 3
IMAGE_TOKENS = 1_105  # a high-detail image of up to 2048 x 768 (the most tiles a 1024-wide side allows), counted high


def text_tokens(text: str) -> int:
    """Conservative tokens for `text`."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def request_tokens(body: dict[str, Any]) -> int:
    """Conservative prompt tokens of a chat completions request body (its `messages`, and any `tools`)."""
    total = REPLY_PRIMING_TOKENS
    for message in body.get("messages") or []:
        total += TOKENS_PER_MESSAGE
        if not isinstance(message, dict):
            continue
        total += text_tokens(str(message.get("name") or ""))
        content = message.get("content")
        if isinstance(content, str):
            total += text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    total += IMAGE_TOKENS
                elif isinstance(part, dict):
                    total += text_tokens(str(part.get("text") or ""))
    if body.get("tools"):
        total += text_tokens(str(body["tools"]))
    return total
