"""File uploads read as a stream: chunked or with Content-Length, the size limit enforced while reading, content
downloaded byte for byte."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from devstack.emulator.openai_api import UPLOAD_CHUNK_BYTES
from tests.conftest import TEST_CONFIG, RunningEmulator, start_emulator, stop_emulator
from tests.devstack.conftest import API_VERSION, DataPlane, batch_lines

SMALL_LIMIT = 64 * 1024
BOUNDARY = "devstack-upload-test"


def multipart_around(filename: str, purpose: str = "batch") -> tuple[bytes, bytes]:
    """The multipart/form-data bytes before and after a file's content."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head, f"\r\n--{BOUNDARY}--\r\n".encode()


def upload_chunked(plane: DataPlane, content: bytes, piece: int = 50_000) -> requests.Response:
    """Uploads with Transfer-Encoding: chunked (requests sends a generator body that way)."""
    head, tail = multipart_around("chunked.jsonl")

    def body() -> Iterator[bytes]:
        yield head
        for start in range(0, len(content), piece):
            yield content[start : start + piece]
        yield tail

    response = plane.request(
        "POST", "files", data=body(), headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    return response


def varied_bytes(size: int) -> bytes:
    """Content that a lossy read would change: multi-byte UTF-8, CRLF and lone LF, NUL, and bytes that are not UTF-8,
    never ending on a chunk boundary of a power of two."""
    pattern = "é—🙂\r\n\x00line\n".encode() + bytes(range(256))
    return (pattern * (size // len(pattern) + 1))[:size]


@pytest.fixture(scope="module")
def small_limit_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    """An emulator whose maxFileBytes is 64 KiB, so that the limit can be passed without sending 200 MB."""
    state_dir = tmp_path_factory.mktemp("small-limit")
    config = state_dir / "config.json"
    config.write_text(json.dumps({**json.loads(Path(TEST_CONFIG).read_text()), "maxFileBytes": SMALL_LIMIT}))
    emulator = start_emulator(state_dir, time_scale=20.0, config=config)
    yield emulator
    stop_emulator(emulator)


@pytest.fixture
def small(small_limit_emulator: RunningEmulator) -> DataPlane:
    small_limit_emulator.reset()
    resource = small_limit_emulator.resource("aoai-devstack-eastus")
    return DataPlane(resource["endpoint"], resource["apiKey"])


def test_an_input_file_downloads_byte_for_byte(eastus: DataPlane) -> None:
    content = varied_bytes(3 * 1024 * 1024 + 7)  # many read chunks
    file_id = eastus.upload(content, filename="mixed.bin")["id"]

    described = eastus.request("GET", f"files/{file_id}").json()
    downloaded = eastus.request("GET", f"files/{file_id}/content")

    assert described["purpose"] == "batch"
    assert described["bytes"] == len(content)
    assert downloaded.status_code == 200
    assert downloaded.content == content


def test_a_chunked_upload_is_stored_as_sent(eastus: DataPlane) -> None:
    content = batch_lines(2000).encode()

    response = upload_chunked(eastus, content)

    assert response.status_code == 201, response.text
    assert response.json()["bytes"] == len(content)
    assert eastus.request("GET", f"files/{response.json()['id']}/content").content == content


def test_an_upload_of_exactly_max_file_bytes_is_accepted(small: DataPlane) -> None:
    content = varied_bytes(SMALL_LIMIT)

    uploaded = small.upload(content, wait=False)

    assert uploaded["bytes"] == SMALL_LIMIT
    assert small.request("GET", f"files/{uploaded['id']}/content").content == content


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_an_upload_over_max_file_bytes_is_400_and_not_stored(small: DataPlane, transfer: str) -> None:
    content = varied_bytes(SMALL_LIMIT + 1)

    if transfer == "chunked":
        response = upload_chunked(small, content)
    else:
        response = small.request("POST", "files", data={"purpose": "batch"}, files={"file": ("big.jsonl", content)})

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalidPayload",
            "message": f"The file exceeds the maximum upload size of {SMALL_LIMIT:,} bytes.",
            "param": "file",
        }
    }
    assert small.request("GET", "files").json()["data"] == []


def test_an_upload_over_the_limit_is_answered_before_the_rest_of_its_body_is_sent(small: DataPlane) -> None:
    # The body announces 8 MiB and sends the limit and four read chunks more (the multipart reader holds a chunk back
    # to find the boundary) before it waits for the answer: a server that read the whole file before checking its
    # size would still be waiting when the client's read times out.
    head, tail = multipart_around("huge.jsonl")
    content = varied_bytes(8 * 1024 * 1024)
    sent_first = SMALL_LIMIT + 4 * UPLOAD_CHUNK_BYTES
    target = urlsplit(small.url("files"))
    connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
    try:
        connection.putrequest("POST", f"{target.path}?api-version={API_VERSION}")
        connection.putheader("api-key", str(small.session.headers["api-key"]))
        connection.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
        connection.putheader("Content-Length", str(len(head) + len(content) + len(tail)))
        connection.endheaders()
        connection.send(head + content[:sent_first])
        response = connection.getresponse()
        status, body = response.status, json.loads(response.read())
        # The rest still goes through (the emulator reads and drops it), as a client that sends before it reads does.
        connection.send(content[sent_first:] + tail)
    finally:
        connection.close()

    assert status == 400
    assert body["error"]["param"] == "file"
