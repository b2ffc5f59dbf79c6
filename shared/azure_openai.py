"""Azure OpenAI data-plane client: files, batches and chat completions, on a dated api-version (2024-10-21) or on
the v1 API (`/openai/v1/...`, no api-version, the deployment named in a chat body's `model`), which models released
after 2024-10-21 need for Global Batch. Both serve the same files and batches with the same bodies.

Reads (GET) are retried by the shared retry policy. Creating a batch is never retried here: when its reply is
lost the caller must first look for the batch it may have created (see `find_batch`), or it could pay twice.
A chat completion is retried only when it was throttled (429: Azure did not run it), honoring Retry-After.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
from azure.core.exceptions import ClientAuthenticationError

from shared.arm import TokenCredential
from shared.http import DEFAULT_TIMEOUT_SECONDS, MAX_RETRY_AFTER_SECONDS, AzureError, azure_session

COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
V1 = "v1"  # a resource's `apiVersion` that selects the v1 API
THROTTLE_RETRIES = 4  # further attempts of a throttled (429) chat completion
BATCH_PAGE_SIZE = 100  # the most Azure returns per page of the batch list
CONTENT_CHUNK_BYTES = 1024 * 1024
THROTTLE_BACKOFF = 0.5  # seconds before the first retry when Azure names no Retry-After; doubles each time


AZURE_OPENAI = "Azure OpenAI"  # the service name in errors
BATCH_STAMPS = (
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "expires_at",
)


@dataclass(frozen=True)
class BatchError:
    """One entry of a batch's `errors.data`: why validation failed, with the input line where Azure names one."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


@dataclass(frozen=True)
class Batch:
    """A batch as Azure OpenAI describes it (times are Unix seconds; absent ones are None)."""

    id: str
    status: str
    input_file_id: str | None = None
    endpoint: str | None = None
    completion_window: str | None = None
    created_at: int | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    expires_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    errors: tuple[BatchError, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    # A batch with blob storage (v1): the blob it reads, and where its results went (both set once it ended, though
    # each blob is written only when it has lines).
    input_blob: str | None = None
    output_blob: str | None = None
    error_blob: str | None = None

    @classmethod
    def from_azure(cls, data: dict[str, Any]) -> Batch:
        """Tolerates the service's quirks: "" for absent file ids and result blobs, 0 or null for absent times, null
        `request_counts` after a failed validation, `errors` as null."""
        counts = data.get("request_counts") or {}
        errors = (data.get("errors") or {}).get("data") or []
        return cls(
            id=str(data["id"]),
            status=str(data.get("status") or "validating"),
            input_file_id=data.get("input_file_id") or None,
            endpoint=data.get("endpoint") or None,
            completion_window=data.get("completion_window") or None,
            **{name: _whole(data.get(name)) or None for name in BATCH_STAMPS},
            output_file_id=data.get("output_file_id") or None,
            error_file_id=data.get("error_file_id") or None,
            total=_whole(counts.get("total")),
            completed=_whole(counts.get("completed")),
            failed=_whole(counts.get("failed")),
            errors=tuple(
                BatchError(
                    code=str(error.get("code") or "failed"),
                    message=str(error.get("message") or ""),
                    line=_whole(error.get("line")),
                    param=str(error["param"]) if error.get("param") is not None else None,
                )
                for error in errors
                if isinstance(error, dict)
            ),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            input_blob=_text(data.get("input_blob")),
            output_blob=_text(data.get("output_blob")),
            error_blob=_text(data.get("error_blob")),
        )


@dataclass(frozen=True)
class File:
    """A file as Azure OpenAI describes it; a batch input is usable once its status is `processed`."""

    id: str
    purpose: str
    status: str
    bytes: int | None = None
    filename: str | None = None
    created_at: int | None = None
    status_details: str | None = None

    @classmethod
    def from_azure(cls, data: dict[str, Any]) -> File:
        return cls(
            id=str(data["id"]),
            purpose=str(data.get("purpose") or ""),
            status=str(data.get("status") or ""),
            bytes=_whole(data.get("bytes")),
            filename=data.get("filename") or None,
            created_at=_whole(data.get("created_at")),
            status_details=data.get("status_details") or None,
        )


@dataclass(frozen=True)
class ChatCompletion:
    """The first choice of a chat completion, and what it used."""

    content: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None

    @classmethod
    def from_azure(cls, data: dict[str, Any]) -> ChatCompletion:
        choice = (data.get("choices") or [{}])[0]
        usage = data.get("usage") or {}
        return cls(
            content=(choice.get("message") or {}).get("content"),
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=_whole(usage.get("prompt_tokens")),
            completion_tokens=_whole(usage.get("completion_tokens")),
            total_tokens=_whole(usage.get("total_tokens")),
        )


def _text(value: Any) -> str | None:
    """A string field of a reply, or None when it is absent, empty or not a string."""
    return value if isinstance(value, str) and value else None


def _whole(value: Any) -> int | None:
    """An integer field of a reply, or None when it is absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


class AzureOpenAIClient:
    def __init__(
        self,
        endpoint: str,
        api_version: str,
        *,
        credential: TokenCredential | None = None,
        api_key: str | None = None,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if (credential is None) == (api_key is None):
            raise ValueError("give exactly one of credential and api_key")
        self.endpoint = endpoint.rstrip("/")
        self.api_version = api_version
        self.credential = credential
        self.api_key = api_key
        self.session = session or azure_session()
        self.timeout = timeout

    # Batches -------------------------------------------------------------------------------------------------
    def create_batch(
        self,
        input_file_id: str | None,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None = None,
        *,
        input_blob: str | None = None,
        output_folder: str | None = None,
    ) -> Batch:
        """POST …/batches with exactly Azure's body; one attempt, never retried. With `input_blob` and
        `output_folder` (v1, a resource with blob storage) the batch reads a blob and writes its results to the folder
        instead of files; Azure takes no metadata on such a batch."""
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if input_blob is not None or output_folder is not None:
            if input_file_id is not None or metadata or input_blob is None or output_folder is None:
                raise ValueError("a blob batch takes input_blob and output_folder, and no input file or metadata")
            body |= {"input_blob": input_blob, "output_folder": {"url": output_folder}}
        if metadata:
            body["metadata"] = metadata
        return Batch.from_azure(self._call("POST", "batches", json=body))

    def get_batch(self, batch_id: str) -> Batch:
        return Batch.from_azure(self._call("GET", f"batches/{_segment(batch_id)}"))

    def cancel_batch(self, batch_id: str) -> Batch:
        return Batch.from_azure(self._call("POST", f"batches/{_segment(batch_id)}/cancel"))

    def list_batches(self) -> Iterator[Batch]:
        """Every batch of the resource, newest first, paging with `after` behind the scenes."""
        after = None
        while True:
            params = {"limit": str(BATCH_PAGE_SIZE)} | ({"after": after} if after else {})
            page = self._call("GET", "batches", params=params)
            for item in page.get("data") or []:
                yield Batch.from_azure(item)
            if not page.get("has_more") or not page.get("last_id"):
                return
            after = str(page["last_id"])

    def find_batch(self, metadata: dict[str, str], created_since: int) -> Batch | None:
        """The newest batch whose metadata has every pair of `metadata`, looking back to `created_since`."""
        for batch in self.list_batches():
            if all(batch.metadata.get(key) == value for key, value in metadata.items()):
                return batch
            if batch.created_at and batch.created_at < created_since:
                return None
        return None

    def find_blob_batches(self, input_blob: str, created_since: int) -> list[Batch]:
        """The batches reading `input_blob`, newest first, looking back to `created_since` (a blob batch carries no
        metadata: its input blob is all that names it before it ends)."""
        found = []
        for batch in self.list_batches():
            if batch.created_at and batch.created_at < created_since:
                break
            if batch.input_blob == input_blob:
                found.append(batch)
        return found

    # Files ---------------------------------------------------------------------------------------------------
    def get_file(self, file_id: str) -> File:
        return File.from_azure(self._call("GET", f"files/{_segment(file_id)}"))

    def delete_file(self, file_id: str) -> None:
        """DELETE …/files/{id}; a file already gone is not an error (a repeated delete has done its work)."""
        try:
            self._call("DELETE", f"files/{_segment(file_id)}")
        except AzureError as error:
            if error.status != 404:
                raise

    def upload_file(self, filename: str, chunks: Iterable[bytes], size: int, purpose: str = "batch") -> File:
        """POST …/files (multipart: `purpose`, `file`), the content streamed from `chunks` (`size` bytes in
        all), so a file of any size is sent in bounded memory. One attempt, never retried: a lost reply leaves at
        most an unused file behind, which costs nothing."""
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        body = _StreamedBody([head], chunks, [tail], length=len(head) + size + len(tail))
        reply = self._call(
            "POST", "files", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        return File.from_azure(reply)

    def file_content(self, file_id: str) -> Iterator[bytes]:
        """GET …/files/{id}/content, a chunk at a time (results files can be large)."""
        response = self._send("GET", f"files/{_segment(file_id)}/content", stream=True)
        with response:
            yield from response.iter_content(CONTENT_CHUNK_BYTES)

    # Chat ----------------------------------------------------------------------------------------------------
    def chat_completion(self, deployment: str, body: dict[str, Any]) -> ChatCompletion:
        """POST …/chat/completions (v1: the deployment as the body's `model`). A 429 means Azure did not run the
        request, so it is retried (at most THROTTLE_RETRIES times, waiting as Retry-After says, capped); any other
        failure is raised at once."""
        if self.is_v1:
            path, body = "chat/completions", {**body, "model": deployment}
        else:
            path = f"deployments/{_segment(deployment)}/chat/completions"
        for attempt in range(THROTTLE_RETRIES + 1):
            try:
                reply = self._call("POST", path, json=body)
                return ChatCompletion.from_azure(reply)
            except AzureError as error:
                if error.status != 429 or attempt == THROTTLE_RETRIES:
                    raise
                wait = error.retry_after if error.retry_after is not None else THROTTLE_BACKOFF * 2**attempt
                time.sleep(min(wait, MAX_RETRY_AFTER_SECONDS))
        raise AssertionError("unreachable")  # pragma: no cover

    # Plumbing ------------------------------------------------------------------------------------------------
    @property
    def is_v1(self) -> bool:
        return self.api_version == V1

    def _headers(self) -> dict[str, str]:
        if self.api_key is not None:
            return {"api-key": self.api_key}
        assert self.credential is not None
        try:
            token = self.credential.get_token(COGNITIVE_SCOPE).token
        except ClientAuthenticationError as exc:
            # Not Azure's 401: nothing was sent, and an identity endpoint that failed may well answer next time.
            raise AzureError(
                AZURE_OPENAI, None, "CredentialUnavailable", "could not get a token for Azure OpenAI from the identity"
            ) from exc
        return {"Authorization": f"Bearer {token}"}

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = self._send(method, path, **kwargs).json()
        return body

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        params = ({} if self.is_v1 else {"api-version": self.api_version}) | kwargs.pop("params", {})
        headers = {**self._headers(), **kwargs.pop("headers", {})}
        base = f"{self.endpoint}/openai/v1" if self.is_v1 else f"{self.endpoint}/openai"
        try:
            response = self.session.request(
                method,
                f"{base}/{path}",
                allow_redirects=False,  # an api-key header would follow a redirect to another host
                params=params,
                headers=headers,
                timeout=self.timeout,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise AzureError(AZURE_OPENAI, None, "NoReply", f"no reply ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            raise AzureError.from_response(AZURE_OPENAI, response)
        return response


def _segment(value: str) -> str:
    """An id as one URL path segment: ids come from Azure or from users, and neither may reach another route."""
    return quote(value, safe="")


class _StreamedBody:
    """A request body read from pieces as it is sent, with its length known up front (so it goes with a
    Content-Length, not chunked): what requests and urllib3 send a file-like object as."""

    def __init__(self, *parts: Iterable[bytes], length: int) -> None:
        self._pieces = (piece for part in parts for piece in part)
        self._pending = b""
        self._length = length

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._pending) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._pending += piece
        if size < 0:
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:size], self._pending[size:]
        return data
