"""The lines of a JSONL body, as the inputs API reads them: the same lines as splitting the body, found lazily."""

from __future__ import annotations

import tracemalloc

import pytest

from shared.inputs import lines_of


@pytest.mark.parametrize(
    "body",
    [b"", b"\n", b"a", b"a\n", b"a\nb", b"a\r\nb\r\n", b"\n\na\n\n", b"a\r\r\nb\r", b"\r", b'{"x": 1}\n{"y": 2}'],
)
def test_a_bodys_lines_are_its_lines_split_at_line_feeds_less_trailing_carriage_returns(body: bytes) -> None:
    assert list(lines_of(body)) == [line.rstrip(b"\r") for line in body.split(b"\n")]


def test_a_bodys_lines_are_found_one_at_a_time_not_copied_all_at_once() -> None:
    body = b"".join(b'{"custom_id": "r%07d"}\n' % n for n in range(400_000))  # 9.6 MB

    tracemalloc.start()
    try:
        lines = lines_of(body)
        first = next(lines)
        count = 1 + sum(1 for _ in lines)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (first, count) == (b'{"custom_id": "r0000000"}', 400_001)
    assert peak < len(body) // 10  # splitting first would hold every line besides the body
