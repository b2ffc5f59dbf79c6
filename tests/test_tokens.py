"""The token estimate's rule, clause by clause: ½ token an ASCII lowercase letter, nothing a space before an ASCII
letter, 1 any other ASCII character, ¾ a UTF-8 byte of any other character, rounded up per text; and the request's
framing: 4 a message, 1 more for a name, 3 for the reply, an image at its fixed count, tools as their text."""

from __future__ import annotations

import random

import pytest

from bench import tokens as bench
from shared.tokens import IMAGE_TOKENS, request_tokens, text_tokens


def test_empty_text_is_no_tokens() -> None:
    assert text_tokens("") == 0


def test_an_ascii_lowercase_letter_is_half_a_token() -> None:
    assert text_tokens("a" * 100) == 50
    assert text_tokens("thequickbrownfox") == 8


@pytest.mark.parametrize("character", ["A", "Z", "0", "7", "{", '"', ",", "_", "\n", "\t", "\x00", "~"])
def test_any_other_ascii_character_is_a_token(character: str) -> None:
    assert text_tokens(character * 100) == 100


def test_a_space_before_an_ascii_letter_is_free() -> None:
    assert text_tokens(" a" * 100) == 50
    assert text_tokens(" A" * 100) == 100
    assert text_tokens("the quick brown fox") == 8


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        (" 1" * 100, 200),  # before a digit
        (" ," * 100, 200),  # before punctuation
        ("  " * 100, 200),  # before another space
        (" é" * 100, 250),  # before a letter outside ASCII: 1 + 2 bytes at ¾
        ("ab ", 2),  # at the end
    ],
)
def test_a_space_before_anything_but_an_ascii_letter_is_a_token(text: str, tokens: int) -> None:
    assert text_tokens(text) == tokens


@pytest.mark.parametrize(
    ("character", "utf8_bytes"),
    [("é", 2), ("ß", 2), ("ع", 2), ("中", 3), ("あ", 3), ("€", 3), ("👍", 4), ("\u00a0", 2)],
)
def test_any_other_character_is_three_quarters_of_a_token_a_utf8_byte(character: str, utf8_bytes: int) -> None:
    assert len(character.encode("utf-8")) == utf8_bytes
    assert text_tokens(character * 100) == 75 * utf8_bytes


def test_a_text_is_rounded_up_once_not_character_by_character() -> None:
    assert text_tokens("a") == 1
    assert text_tokens("abc") == 2
    assert text_tokens("é") == 2
    assert text_tokens("aé") == 2  # ½ + 1½
    assert text_tokens("中a") == 3  # 2¼ + ½


def test_mixed_text_adds_up_its_characters() -> None:
    # H 1, ello 4 at ½, "," 1, " " before w 0, world 5 at ½, ! 1, " " before 👍 1, 👍 4 bytes at ¾, " 42" 1+1+1
    assert text_tokens("Hello, world! 👍 42") == 15


def test_the_count_equals_the_rule_as_the_bench_measured_it() -> None:
    """The fast count (bytes.translate) against the rule written plainly (regular expressions) in bench/tokens.py,
    on the bench's sample and on random strings of every kind of character."""
    written = bench.by_character(1 / 2)
    texts = [t for bodies in bench.sample(10, 11).values() for body in bodies for t in bench.texts_of(body)]
    rng = random.Random(5)
    characters = "aqz AZM09 ,.{}\n\t éü中👍🇩🇪\u200d"
    texts += ["".join(rng.choice(characters) for _ in range(rng.randint(0, 40))) for _ in range(2000)]

    assert [text_tokens(t) for t in texts] == [written(t) for t in texts]


def test_an_empty_request_is_the_replys_priming() -> None:
    assert request_tokens({}) == 3
    assert request_tokens({"messages": []}) == 3


def test_each_message_is_framed_with_four_tokens() -> None:
    assert request_tokens({"messages": [{"role": "user", "content": ""}]}) == 3 + 4
    assert request_tokens({"messages": [{"role": "user", "content": "hello"}]}) == 3 + 4 + 3
    two = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]}
    assert request_tokens(two) == 3 + (4 + 5) + (4 + 3)  # B 1, e ½, " brief" 2½, . 1
    assert request_tokens({"messages": ["not a message"]}) == 3 + 4


def test_a_name_counts_its_text_and_one_token_more() -> None:
    named = {"messages": [{"role": "user", "name": "bob", "content": "hi"}]}

    assert request_tokens(named) == 3 + 4 + (1 + 2) + 1
    assert request_tokens({"messages": [{"role": "user", "name": "", "content": "hi"}]}) == 3 + 4 + 1


def test_text_parts_count_one_by_one_and_an_image_at_its_fixed_count() -> None:
    parts = [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
    ]

    assert IMAGE_TOKENS == 1_105
    assert request_tokens({"messages": [{"role": "user", "content": parts}]}) == 3 + 4 + 1 + 1 + 1_105


def test_tools_count_as_the_text_of_their_repr() -> None:
    tools = [{"type": "function"}]  # "[{'type': 'function'}]": [ { ' 1 each, type 2, ' : " '" 4, function 4, ' } ] 3

    assert request_tokens({"messages": [], "tools": tools}) == 3 + 16
    assert request_tokens({"messages": [], "tools": []}) == 3
