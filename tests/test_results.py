"""Pages of a staged results copy on Azurite: lines in order across reads, a continuation offset at the next line
and none on the last page, the copy's end found without asking its size, and one Blob request for a page that fits
in one read."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from shared import results
from shared.results import page
from shared.staging import BlobRange, Staging
from tests.conftest import RunningAzurite

NAME = "results/run/all.ndjson"


class CountingStaging(Staging):
    """A staging container whose Blob requests are recorded: method and range, one entry a request."""

    def __init__(self, azurite: RunningAzurite) -> None:
        from azure.storage.blob import BlobServiceClient

        self.requests: list[tuple[str, str | None]] = []
        service = BlobServiceClient.from_connection_string(azurite.connection_string, raw_request_hook=self._record)
        super().__init__(service, f"results{os.urandom(4).hex()}")

    def _record(self, request: Any) -> None:
        headers = request.http_request.headers
        self.requests.append((request.http_request.method, headers.get("x-ms-range")))

    def stage(self, content: bytes) -> None:
        self.write(NAME, [content])
        self.requests.clear()


@pytest.fixture
def staging(azurite: RunningAzurite) -> CountingStaging:
    return CountingStaging(azurite)


def every_page(staging: Staging, top: int) -> Iterator[tuple[int, list[bytes]]]:
    """(offset, lines) of each page from the start to the last."""
    offset: int | None = 0
    while offset is not None:
        found = page(staging, NAME, offset, top)
        assert found is not None
        yield offset, found.lines
        offset = found.next_offset


def numbered(count: int) -> list[bytes]:
    return [b'{"custom_id":"r%d","content":"%s"}' % (i, b"x" * (i * 7 % 23)) for i in range(count)]


def test_pages_across_reads_give_every_line_once_in_order_each_starting_where_the_last_ended(
    staging: CountingStaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "READ_BYTES", 100)  # lines span reads, and a read holds several lines
    lines = numbered(50)
    content = b"".join(line + b"\n" for line in lines)
    staging.stage(content)

    pages = list(every_page(staging, 7))

    assert [line for _, found in pages for line in found] == lines
    assert [len(found) for _, found in pages] == [7] * 7 + [1]
    line_starts = [content.index(line) for line in lines]
    assert [offset for offset, _ in pages] == line_starts[::7]


def test_the_last_page_is_the_one_that_reaches_the_end_even_when_it_is_full(staging: CountingStaging) -> None:
    lines = numbered(10)
    staging.stage(b"".join(line + b"\n" for line in lines))

    assert [found for _, found in every_page(staging, 5)] == [lines[:5], lines[5:]]
    assert [found for _, found in every_page(staging, 10)] == [lines]


def test_a_copy_without_a_final_line_break_still_gives_its_last_line(staging: CountingStaging) -> None:
    staging.stage(b"one\ntwo\nthree")

    assert [found for _, found in every_page(staging, 2)] == [[b"one", b"two"], [b"three"]]
    assert [found for _, found in every_page(staging, 5)] == [[b"one", b"two", b"three"]]


def test_a_line_longer_than_a_read_comes_whole(staging: CountingStaging, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "READ_BYTES", 64)
    long_line = b"y" * 1000
    staging.stage(b"a\n" + long_line + b"\nb\n")

    assert [found for _, found in every_page(staging, 2)] == [[b"a", long_line], [b"b"]]


@pytest.mark.parametrize("content", [b"", b"a\nb\n"])
def test_an_offset_at_or_past_the_end_is_an_empty_last_page(staging: CountingStaging, content: bytes) -> None:
    staging.stage(content)

    for offset in (len(content), len(content) + 1_000):
        found = page(staging, NAME, offset, 10)
        assert found is not None
        assert (found.lines, found.next_offset) == ([], None)


def test_no_such_copy_is_none(staging: CountingStaging) -> None:
    staging.stage(b"a\n")

    assert page(staging, "results/other/all.ndjson", 0, 10) is None


def test_a_page_of_lines_up_to_a_kib_is_one_ranged_request_even_at_the_end(staging: CountingStaging) -> None:
    lines = numbered(3000)  # about 100 KiB
    staging.stage(b"".join(line + b"\n" for line in lines))

    first = page(staging, NAME, 0, 1000)
    assert first is not None
    assert first.next_offset is not None
    last = page(staging, NAME, first.next_offset, 5000)  # the end is inside its read: nothing more to ask

    assert last is not None
    assert (len(last.lines), last.next_offset) == (2000, None)
    assert staging.requests == [
        ("GET", f"bytes=0-{1000 * 1024 - 1}"),  # top * LINE_BYTES
        ("GET", f"bytes={first.next_offset}-{first.next_offset + 1024 * 1024 - 1}"),  # READ_BYTES at most
    ]


def test_a_page_of_longer_lines_reads_on_a_megabyte_at_a_time(
    staging: CountingStaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "LINE_BYTES", 4)
    monkeypatch.setattr(results, "READ_BYTES", 100)
    content = b"".join(line + b"\n" for line in numbered(20))  # lines of 29 to 53 bytes
    staging.stage(content)

    found = page(staging, NAME, 0, 20)

    assert found is not None
    assert found.next_offset is None
    ranges = ["bytes=0-79"] + [f"bytes={at}-{at + 99}" for at in range(80, len(content), 100)]  # 20 * 4, then 100s
    assert staging.requests == [("GET", r) for r in ranges]


def test_a_read_past_the_end_gives_the_tail_and_the_blobs_size(staging: CountingStaging) -> None:
    staging.stage(b"0123456789")

    assert staging.read(NAME, 4, 100) == BlobRange(b"456789", 10)
    assert staging.read(NAME, 11, 100) == BlobRange(b"", None)  # 416 InvalidRange (Azure's at 10 already)
    assert staging.read("no/such/blob", 0, 100) is None
