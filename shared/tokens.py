"""How many prompt tokens a chat request will cost, estimated without a tokenizer: a documented, conservative rule.

Azure counts a batch's enqueued tokens against the deployment's quota from the prompts, so the app estimates them
before it submits (and, later, to cut an input into shards that fit). No tokenizer is both offline and well kept
for Python today: tiktoken downloads its encodings at first use, and the packages that ship them are young. So the
estimate is a rule, counted by character:

- an ASCII lowercase letter is ½ token;
- a space before an ASCII letter is nothing (the word's token takes it in);
- any other ASCII character (capitals, digits, punctuation, other whitespace) is 1 token;
- any other character is ¾ token per byte of its UTF-8 encoding;

rounded up per text, plus the chat format's framing: 4 tokens a message, 1 more for a message's `name`, and 3 for
the reply's priming. An image is `IMAGE_TOKENS`; `tools` are counted as the text of their Python repr.

Why by character: a rule by bytes is not conservative at any useful ratio. Digits, punctuation, random ids and
emoji take a token every byte or two, while English words take one every four characters or more (bench/README.md,
`tokens.py`: a third of the UTF-8 bytes, the rule before this one, fell under the exact count on JSON, numbers, ids,
emoji, and on Chinese, Japanese and Arabic in cl100k_base). Measured against exact o200k_base and cl100k_base counts
in `bench/tokens.py`, this rule was never under on any request or text of three samples (600 and twice 1,500
requests); it overestimates English prose about 2.2 times and the whole sample about 2.4 times (o200k_base), so a
quota decision made on it errs on the safe side, and may leave quota unused.

It is counted on the UTF-8 bytes with `bytes.translate` (an ASCII character is one byte and every byte of another
character is 0x80 or above): about 200 MB/s in CPython, a second for a 200 MB input, four times the same rule
written with regular expressions.
"""

from __future__ import annotations

import math
import string
from typing import Any

TOKENS_PER_MESSAGE = 4  # role and separators around each message
TOKENS_PER_NAME = 1  # a name's separator, beside the name's own text
REPLY_PRIMING_TOKENS = 3
IMAGE_TOKENS = 1_105  # a high-detail image of up to 2048 x 768 (the most tiles a 1024-wide side allows), counted high

LOWERCASE_LETTERS = string.ascii_lowercase.encode()
NON_ASCII_BYTES = bytes(range(0x80, 0x100))
LETTERS_TO_A = bytes.maketrans(string.ascii_letters.encode(), b"a" * len(string.ascii_letters))


def text_tokens(text: str) -> int:
    """Conservative tokens for `text`: ½ an ASCII lowercase letter, nothing a space before an ASCII letter, 1 any
    other ASCII character, ¾ a UTF-8 byte of any other character; rounded up."""
    data = text.encode("utf-8")
    lowercase = len(data) - len(data.translate(None, LOWERCASE_LETTERS))
    non_ascii = 0 if text.isascii() else len(data) - len(data.translate(None, NON_ASCII_BYTES))
    spaces_before_letters = data.translate(LETTERS_TO_A).count(b" a")
    other_ascii = len(data) - non_ascii - lowercase - spaces_before_letters
    return math.ceil(lowercase / 2 + other_ascii + 0.75 * non_ascii)


def request_tokens(body: dict[str, Any]) -> int:
    """Conservative prompt tokens of a chat completions request body (its `messages`, and any `tools`)."""
    total = REPLY_PRIMING_TOKENS
    for message in body.get("messages") or []:
        total += TOKENS_PER_MESSAGE
        if not isinstance(message, dict):
            continue
        if message.get("name"):
            total += TOKENS_PER_NAME + text_tokens(str(message["name"]))
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
