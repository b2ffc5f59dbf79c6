"""The app's Blob Storage for what passes through it: staged copies of inputs, and the results of finished runs.

Everything here streams: blobs are written a block at a time and read a chunk at a time, so an input or a result
file of any size passes through in bounded memory.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient

from shared.settings import Settings

BLOCK_BYTES = 4 * 1024 * 1024  # each staged block; what a writer holds in memory at most
READ_CHUNK_BYTES = 1024 * 1024


def blob_service(settings: Settings) -> BlobServiceClient:
    """The Blob service of the host's storage account: a connection string, or identity-based in Azure."""
    storage = settings.storage
    if storage.connection_string:
        return BlobServiceClient.from_connection_string(storage.connection_string)
    if storage.blob_service_uri:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=storage.client_id)
        return BlobServiceClient(storage.blob_service_uri, credential=credential)
    from shared.settings import SettingsError

    raise SettingsError("Set AzureWebJobsStorage, or AzureWebJobsStorage__blobServiceUri for an identity-based one.")


class BlockWriter:
    """Writes one block blob from pieces, a block at a time; `close` commits it (nothing is visible before)."""

    def __init__(self, container: ContainerClient, name: str) -> None:
        self.blob = container.get_blob_client(name)
        self.blocks: list[BlobBlock] = []
        self.buffer = bytearray()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.buffer += data
        self.size += len(data)
        while len(self.buffer) >= BLOCK_BYTES:
            self._stage(bytes(self.buffer[:BLOCK_BYTES]))
            del self.buffer[:BLOCK_BYTES]

    def close(self, content_type: str = "application/x-ndjson") -> int:
        """Commits the blob (an empty one if nothing was written); returns its size."""
        from azure.storage.blob import ContentSettings

        if self.buffer:
            self._stage(bytes(self.buffer))
            self.buffer.clear()
        self.blob.commit_block_list(self.blocks, content_settings=ContentSettings(content_type=content_type))
        return self.size

    def _stage(self, data: bytes) -> None:
        block_id = base64.b64encode(uuid.uuid4().bytes).decode()
        self.blob.stage_block(block_id, data)
        self.blocks.append(BlobBlock(block_id=block_id))


@dataclass(frozen=True)
class BlobRange:
    """Bytes read from a blob, and the blob's whole size as the reply's Content-Range gave it."""

    data: bytes
    blob_size: int | None  # None when the range started at or past the blob's end (a 416 InvalidRange)


class Staging:
    """One container of the host's storage account (STAGING_CONTAINER), created on first use."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self.container = service.get_container_client(container)
        self._ready = False

    def _client(self) -> ContainerClient:
        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self.container.create_container()
            self._ready = True
        return self.container

    def writer(self, name: str) -> BlockWriter:
        return BlockWriter(self._client(), name)

    def write(self, name: str, pieces: Iterable[bytes]) -> int:
        """The blob `name` from `pieces`, streamed; returns its size."""
        writer = self.writer(name)
        for piece in pieces:
            writer.write(piece)
        return writer.close()

    def chunks(self, name: str) -> Iterator[bytes]:
        """The blob's content, a chunk at a time."""
        downloader: Any = self._client().get_blob_client(name).download_blob()
        yield from downloader.chunks()

    def read(self, name: str, offset: int, length: int) -> BlobRange | None:
        """Up to `length` bytes of the blob from `offset` in one ranged GET (fewer at its end, none from its end on),
        or None when there is no such blob."""
        blob = self._client().get_blob_client(name)
        try:
            downloader: Any = blob.download_blob(offset=offset, length=length)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if exc.status_code == 416:  # InvalidRange: the range starts at or past the end (any range of an empty blob)
                return BlobRange(b"", None)
            raise
        # Azure answers a range running past the end with the bytes up to it, and "bytes start-end/size"
        blob_size = int(downloader.properties.content_range.rsplit("/", 1)[1])
        return BlobRange(downloader.readall(), blob_size)

    def size(self, name: str) -> int | None:
        """The blob's size, or None when there is no such blob."""
        try:
            properties = self._client().get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return int(properties.size)

    def delete(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._client().get_blob_client(name).delete_blob()


def lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a stream of chunks (without their line breaks), holding at most one line and one chunk."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r")
    if pending:
        yield pending.rstrip(b"\r")


def blob_chunks(url: str, credential: Any, *, missing_ok: bool = False) -> Iterator[bytes]:
    """A user's blob, read with the app's identity a chunk at a time; a Problem naming `blobUrl` when the blob is
    missing (unless `missing_ok`: then nothing), the identity may not read it, or its account cannot be reached."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
    from azure.storage.blob import BlobClient

    from shared.problems import FieldError, Problem

    forbidden = Problem(
        403,
        "blob-forbidden",
        "The app may not read the blob",
        "The storage account refused the app's identity: grant it Storage Blob Data Reader on the account (or the "
        "container).",
        [FieldError("blobUrl", "is not readable by the app's identity")],
    )
    client = BlobClient.from_blob_url(url, credential=credential)
    try:
        downloader: Any = client.download_blob()
        yield from downloader.chunks()
    except ResourceNotFoundError as exc:
        if missing_ok:
            return
        missing = [FieldError("blobUrl", "does not exist")]
        raise Problem(404, "blob-not-found", "Blob not found", "No blob exists at blobUrl.", missing) from exc
    except ClientAuthenticationError as exc:
        raise forbidden from exc
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise forbidden from exc
        answer = f"The storage account answered {exc.status_code}."
        raise Problem(502, "blob-unreadable", "The blob could not be read", answer) from exc
    except AzureError as exc:
        unreachable = "The storage account did not answer."
        raise Problem(502, "blob-unreachable", "The blob could not be read", unreachable) from exc
