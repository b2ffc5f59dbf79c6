"""Azure OpenAI files and batches of one resource, and the batch lifecycle simulator.

A batch's life is a pure function of emulated time: `advance(batch, now)` moves it through
validating → in_progress → finalizing → completed (or failed / expired, or cancelling → cancelled) exactly as far
as `now` allows, so reading a batch at any moment gives the state Azure would report then.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from devstack.emulator.completions import (
    CHAT_PROMPT_CACHE_IDLE_SECONDS,
    CompletionResult,
    PromptCache,
    chat_request_problem,
    complete,
    request_tokens,
)
from devstack.emulator.config import Deployment, EmulatorConfig, Resource, Speeds
from devstack.emulator.user_blobs import BlobReply, BlobUrl, BlobUrlError, UserBlobs

BATCH_STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
COMPLETION_WINDOWS = {"24h": 24 * 3600}
API_2024_10_21 = "2024-10-21"
API_V1 = "v1"
# The batch create body's `endpoint` each API takes, and the value the batch then reports. v1: Learn's v1 REST and
# Python examples send "/chat/completions"; the openai SDK's types allow only "/v1/chat/completions", which Azure
# takes and reports as "/chat/completions" (a create answered by Azure, BerriAI/litellm#9187).
BATCH_ENDPOINTS = {
    API_2024_10_21: {"/chat/completions": "/chat/completions"},
    API_V1: {"/chat/completions": "/chat/completions", "/v1/chat/completions": "/chat/completions"},
}
# The `url` each line of the input may give, by the API the batch was created through: Learn's v1 examples write
# "/v1/chat/completions" in the lines of a batch created with endpoint "/chat/completions".
LINE_URLS = {API_2024_10_21: ("/chat/completions",), API_V1: ("/chat/completions", "/v1/chat/completions")}
# Expiry a v1 upload (`expires_after`) or a v1 batch's results (`output_expires_after`) may ask for: 14 to 30 days.
EXPIRY_SECONDS = (1_209_600, 2_592_000)
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4()}"


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes | bytearray  # an upload is stored in the buffer it was read into
    created_at: int
    processed_at: float
    expires_at: int | None = None  # from `expires_after` (v1): the file is deleted then

    def status(self, now: float) -> str:
        """Azure answers an upload with `pending` and reports `processed` once it has imported the file."""
        return "processed" if now >= self.processed_at else "pending"

    def to_json(self, now: float) -> dict[str, Any]:
        data: dict[str, Any] = {
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "id": self.id,
            "object": "file",
            "purpose": self.purpose,
            "status": self.status(now),
            "status_details": None,
        }
        if self.expires_at is not None:
            data["expires_at"] = self.expires_at
        return data


@dataclass
class Task:
    """One request line of a validated batch, with the result it will produce when processed."""

    custom_id: str
    result: CompletionResult
    request_id: str

    def output_line(self) -> dict[str, Any]:
        response = {"body": self.result.body, "request_id": self.request_id, "status_code": self.result.status_code}
        return {"custom_id": self.custom_id, "response": response, "error": None}

    def unprocessed_line(self, code: str, message: str) -> dict[str, Any]:
        return {"custom_id": self.custom_id, "response": None, "error": {"code": code, "message": message}}


@dataclass
class BatchRequest:
    """A create-batch body the service accepts, read for the API it came through."""

    input_file_id: str | None
    endpoint: str  # as the batch reports it
    completion_window: str
    metadata: dict[str, str] | None
    line_urls: tuple[str, ...]
    input_blob: BlobUrl | None = None  # v1 on a resource with blob storage: input_blob and output_folder.url
    output_folder: BlobUrl | None = None
    output_expires_after: int | None = None  # seconds (v1)


@dataclass
class BlobInput:
    """What the resource's identity found at `input_blob` when the batch was created: the content, or the validation
    error the batch fails with."""

    content: bytes | None
    problem: dict[str, Any] | None = None


@dataclass
class Batch:
    id: str
    endpoint: str
    input_file_id: str | None
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    speeds: Speeds
    deployment: str | None = None
    enqueued_tokens: int = 0
    status: str = "validating"
    errors: list[dict[str, Any]] | None = None
    tasks: list[Task] = field(default_factory=list)
    processed: int = 0
    over_quota: str | None = None
    lines_seen: int = 0
    empty_file_ids: bool = True
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    line_urls: tuple[str, ...] = LINE_URLS[API_2024_10_21]
    output_expires_after: int | None = None
    # Blob batches (v1): the input read when the batch was created, where results go, and results not yet written.
    input_blob: str | None = None
    input_content: bytes | None = None
    input_problem: dict[str, Any] | None = None
    output_folder: str | None = None
    output_blob: str | None = None
    error_blob: str | None = None
    blob_writes: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def expires_at(self) -> float:
        return self.created_at + COMPLETION_WINDOWS[self.completion_window]

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def request_counts(self) -> dict[str, int | None]:
        if self.status == "failed" and self.in_progress_at is None:
            # As Azure reports a batch that failed validation: the lines it saw, nothing processed (null members).
            return {"completed": None, "failed": None, "total": self.lines_seen}
        done = self.tasks[: self.processed]
        failed = sum(1 for task in done if task.result.status_code != 200)
        return {"completed": len(done) - failed, "failed": failed, "total": len(self.tasks)}

    def to_json(self) -> dict[str, Any]:
        def stamp(value: float | None) -> int | None:
            return None if value is None else int(value)

        data: dict[str, Any] = {
            "cancelled_at": stamp(self.cancelled_at),
            "cancelling_at": stamp(self.cancelling_at),
            "completed_at": stamp(self.completed_at),
            "completion_window": self.completion_window,
            "created_at": stamp(self.created_at),
            "endpoint": self.endpoint,
            "error_file_id": self.error_file_id or ("" if self.empty_file_ids else None),
            "errors": None if self.errors is None else {"data": self.errors, "object": "list"},
            "expired_at": stamp(self.expired_at),
            "expires_at": stamp(self.expires_at),
            "failed_at": stamp(self.failed_at),
            "finalizing_at": stamp(self.finalizing_at),
            "id": self.id,
            "in_progress_at": stamp(self.in_progress_at),
            "input_file_id": self.input_file_id,
            "metadata": self.metadata,
            "object": "batch",
            "output_file_id": self.output_file_id or ("" if self.empty_file_ids else None),
            "request_counts": self.request_counts(),
            "status": self.status,
        }
        if self.input_blob is not None:
            # As Learn shows a blob batch: no file ids (null), the result blobs "" until the batch ends, then set
            # whether or not each was written (a blob is written only when it has lines).
            data |= {"input_file_id": None, "output_file_id": None, "error_file_id": None}
            data |= {"input_blob": self.input_blob, "output_blob": self.output_blob or ""}
            data["error_blob"] = self.error_blob or ""
        return data


class BatchRequestError(Exception):
    """A create-batch request the service refuses outright (HTTP 400), before any batch exists."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class ResourceState:
    """Files and batches of one Azure OpenAI resource; files are visible only to the resource that holds them."""

    def __init__(self, resource: Resource, config: EmulatorConfig) -> None:
        self.resource = resource
        self.config = config
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self.chat_prompt_caches: dict[str, PromptCache] = {}
        self.blob_lock = asyncio.Lock()

    def chat_prompt_cache(self, deployment: str, now: float) -> PromptCache:
        """The prompt cache of a chat deployment, rid of prefixes idle too long by emulated time `now`."""
        cache = self.chat_prompt_caches.setdefault(deployment, PromptCache(CHAT_PROMPT_CACHE_IDLE_SECONDS))
        cache.forget_idle(now)
        return cache

    # Files -----------------------------------------------------------------------------------------------------
    def add_file(
        self, filename: str, purpose: str, content: bytes | bytearray, now: float, expires_after: int | None = None
    ) -> StoredFile:
        """Stores an upload; it reads as `pending` for the resource's file-processing time, and is deleted
        `expires_after` seconds after its creation when that is given."""
        processed_at = now + (self.resource.speeds.file_processing_seconds if purpose == "batch" else 0.0)
        stored = StoredFile(new_file_id(), filename, purpose, content, int(now), processed_at)
        if expires_after is not None:
            stored.expires_at = stored.created_at + expires_after
        self.files[stored.id] = stored
        return stored

    def forget_expired_files(self, now: float) -> None:
        """Deletes the files whose `expires_at` has passed, as Azure does."""
        for file_id in [f.id for f in self.files.values() if f.expires_at is not None and f.expires_at <= now]:
            del self.files[file_id]

    # Batches ---------------------------------------------------------------------------------------------------
    def create_batch(self, request: BatchRequest, now: float, blob_input: BlobInput | None = None) -> Batch:
        """A new batch in `validating`, or BatchRequestError for an input or quota the service refuses at once.
        A blob batch comes with what the resource's identity read from its `input_blob` (`blob_input`)."""
        batch = Batch(
            new_batch_id(),
            request.endpoint,
            request.input_file_id,
            request.completion_window,
            request.metadata,
            now,
            Speeds(**vars(self.resource.speeds)),
            empty_file_ids=self.config.empty_file_ids,
            line_urls=request.line_urls,
            output_expires_after=request.output_expires_after,
        )
        content: bytes | bytearray | None = None
        if request.input_blob is not None and request.output_folder is not None:
            assert blob_input is not None
            batch.input_blob, batch.output_folder = request.input_blob.url, request.output_folder.url
            batch.input_content, batch.input_problem = blob_input.content, blob_input.problem
            content = blob_input.content
        elif request.input_file_id is not None:
            stored = self.files.get(request.input_file_id)
            if stored is not None and stored.status(now) != "processed":
                raise BatchRequestError("invalid_request", not_processed_message(stored, now), "input_file_id")
            content = stored.content if stored is not None else None
        if content is not None:
            deployment, tokens = _enqueued_tokens(content)
            target = self.resource.deployment(deployment) if deployment else None
            if target is not None and target.is_batch and target.enqueued_token_limit is not None:
                self.advance_all(now)
                in_queue = self.enqueued_tokens(target.name)
                if in_queue + tokens > target.enqueued_token_limit:
                    if self.resource.quota_check == "create":
                        raise BatchRequestError("token_limit_exceeded", _token_limit_message(target))
                    batch.over_quota = _token_limit_message(target)  # fails when validation ends
                else:
                    batch.deployment, batch.enqueued_tokens = target.name, tokens
        self.batches[batch.id] = batch
        return batch

    def enqueued_tokens(self, deployment: str) -> int:
        return sum(b.enqueued_tokens for b in self.batches.values() if b.deployment == deployment and not b.is_terminal)

    def advance_all(self, now: float) -> None:
        """Every batch as far as `now` allows; files past their expiry are gone by then too."""
        self.forget_expired_files(now)
        for batch in self.batches.values():
            self.advance(batch, now)

    def cancel(self, batch: Batch, now: float) -> None:
        """Moves a running batch to `cancelling`; results of requests already done are kept."""
        self.advance(batch, now)
        if batch.status in {"validating", "in_progress", "finalizing"}:
            if batch.status == "in_progress":
                batch.processed = self._processed_by(batch, now)
            batch.status, batch.cancelling_at = "cancelling", now

    def advance(self, batch: Batch, now: float) -> None:
        """Moves `batch` through every lifecycle step that has happened by emulated time `now`."""
        speeds = batch.speeds
        while True:
            if batch.status == "validating":
                validated_at = batch.created_at + speeds.validation_seconds
                if min(validated_at, batch.expires_at) > now:
                    return
                if validated_at >= batch.expires_at:
                    self._end(batch, "expired", batch.expires_at)
                    return
                self._validate(batch, validated_at)
            elif batch.status == "in_progress":
                assert batch.in_progress_at is not None
                done_at = batch.in_progress_at + len(batch.tasks) / speeds.requests_per_second
                if done_at >= batch.expires_at and now >= batch.expires_at:
                    batch.processed = self._processed_by(batch, batch.expires_at)
                    self._end(batch, "expired", batch.expires_at)
                    return
                if done_at > now:
                    batch.processed = self._processed_by(batch, now)
                    return
                batch.processed = len(batch.tasks)
                batch.status, batch.finalizing_at = "finalizing", done_at
            elif batch.status == "finalizing":
                assert batch.finalizing_at is not None
                finished_at = batch.finalizing_at + speeds.finalizing_seconds
                if finished_at >= batch.expires_at and now >= batch.expires_at:
                    self._end(batch, "expired", batch.expires_at)
                    return
                if finished_at > now:
                    return
                self._end(batch, "completed", finished_at)
            elif batch.status == "cancelling":
                assert batch.cancelling_at is not None
                cancelled_at = batch.cancelling_at + speeds.cancelling_seconds
                if cancelled_at > now:
                    return
                self._end(batch, "cancelled", cancelled_at)
            else:
                return

    def _processed_by(self, batch: Batch, moment: float) -> int:
        assert batch.in_progress_at is not None
        elapsed = max(0.0, moment - batch.in_progress_at)
        return min(len(batch.tasks), math.floor(elapsed * batch.speeds.requests_per_second + 1e-9))

    def _validate(self, batch: Batch, at: float) -> None:
        content: bytes | bytearray | None = None
        tasks: list[Task] = []
        if batch.input_blob is not None:
            content = batch.input_content
            errors = [batch.input_problem] if batch.input_problem else []
        elif (stored := self.files.get(batch.input_file_id or "")) is not None:
            content, errors = stored.content, []
        else:
            errors = [
                validation_error(
                    "input_file_not_found",
                    f"The input file '{batch.input_file_id}' was not found. "
                    "Files are scoped to the Azure OpenAI resource they were uploaded to.",
                )
            ]
        if content is not None and not errors:
            batch.lines_seen = sum(1 for line in content.splitlines() if line.strip())
            tasks, errors = validate_input(content, batch.endpoint, self.resource, self.config, at, batch.line_urls)
            if not errors and batch.over_quota:
                errors = [validation_error("token_limit_exceeded", batch.over_quota)]
        if errors:
            batch.status, batch.errors, batch.failed_at = "failed", errors, at
            return
        batch.tasks = tasks
        batch.status, batch.in_progress_at = "in_progress", at

    def _end(self, batch: Batch, status: str, at: float) -> None:
        batch.status = status
        setattr(batch, f"{status}_at", at)
        if batch.in_progress_at is None:
            return  # never validated: there are no results to publish
        done, left = batch.tasks[: batch.processed], batch.tasks[batch.processed :]
        output = [t.output_line() for t in done if t.result.status_code == 200]
        errors = [t.output_line() for t in done if t.result.status_code != 200]
        if status in {"expired", "cancelled"}:
            code = f"batch_{status}"
            message = (
                "This request could not be executed before the completion window expired."
                if status == "expired"
                else "This request was not executed because the batch was cancelled."
            )
            errors += [t.unprocessed_line(code, message) for t in left]
        if batch.output_folder is not None:
            # Learn: {output_folder}/{GUID}/results.jsonl and errors.jsonl; both URLs are reported whether or not a
            # blob was written, and a blob is written only when it has lines. The GUID is not the batch id's.
            folder = f"{batch.output_folder}/{uuid.uuid4()}"
            batch.output_blob, batch.error_blob = f"{folder}/results.jsonl", f"{folder}/errors.jsonl"
            written = ((batch.output_blob, output), (batch.error_blob, errors))
            batch.blob_writes = [(url, _jsonl(lines)) for url, lines in written if lines]
            return
        batch.output_file_id = self._result_file(batch, "output", output, at).id
        batch.error_file_id = self._result_file(batch, "error", errors, at).id

    def _result_file(self, batch: Batch, kind: str, lines: list[dict[str, Any]], at: float) -> StoredFile:
        # Azure names its result files with a dashed uuid, unlike uploads (file-<32 hex>).
        name = f"{batch.id}_{kind}.jsonl"
        stored = StoredFile(f"file-{uuid.uuid4()}", name, "batch_output", _jsonl(lines), int(at), at)
        if batch.output_expires_after is not None:
            stored.expires_at = stored.created_at + batch.output_expires_after
        self.files[stored.id] = stored
        return stored

    async def write_results(self, blobs: UserBlobs) -> None:
        """Writes the result blobs of blob batches that have ended, with the resource's identity. Every reply that
        shows batches awaits this after advancing them, so none shows a blob batch ended before its blobs exist (a
        reply that finds another writing waits for it)."""
        async with self.blob_lock:
            for batch in list(self.batches.values()):
                while batch.blob_writes:
                    url, content = batch.blob_writes[0]
                    reply = await blobs.write(self.resource.name, url, content)
                    if not reply.ok:
                        self.results_not_written(batch, describe_reply(reply))
                        break
                    batch.blob_writes.pop(0)

    def results_not_written(self, batch: Batch, reason: str) -> None:
        """A blob batch whose results the resource's identity could not write: it fails instead of ending as it
        would have (the emulator's own handling; Azure documents none)."""
        ended_at = getattr(batch, f"{batch.status}_at")
        setattr(batch, f"{batch.status}_at", None)
        batch.status, batch.failed_at = "failed", ended_at
        batch.output_blob = batch.error_blob = None
        batch.blob_writes = []
        message = f"The results could not be written to the output folder '{batch.output_folder}': {reason}."
        batch.errors = [validation_error("output_folder_write_failed", message)]


def describe_reply(reply: BlobReply) -> str:
    if reply.status == 0:
        return f"the storage account could not be reached ({reply.error_code})"
    return f"HTTP {reply.status} {reply.error_code}".rstrip()


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()


def validate_input(
    content: bytes | bytearray,
    endpoint: str,
    resource: Resource,
    config: EmulatorConfig,
    at: float,
    line_urls: tuple[str, ...] | None = None,
) -> tuple[list[Task], list[dict[str, Any]]]:
    """The tasks of a batch input file, or the validation errors that fail the batch (code, message, line). A line's
    url must be one of `line_urls` (the batch endpoint alone by default)."""
    if not content.strip():
        # Blank lines only count as empty too; Azure's message has these three spaces.
        return [], [
            validation_error(
                "empty_file", "The input file is empty. Please ensure that the batch contains at least one   request."
            )
        ]
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return [], [validation_error("invalid_json_line", "The input file is not valid UTF-8.", line=1)]
    if text.startswith("\ufeff"):
        return [], [
            validation_error(
                "invalid_json_line", "The input file starts with a byte order mark; use UTF-8 without BOM.", line=1
            )
        ]
    requests: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    errors: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            errors.append(
                validation_error(
                    "invalid_json_line", "A line in the input file could not be parsed as JSON.", line=number
                )
            )
            continue
        problem = _line_schema_problem(line)
        if problem:
            errors.append(validation_error("invalid_request", problem, line=number))
            continue
        if line["url"] not in (line_urls or (endpoint,)):
            errors.append(
                validation_error(
                    "url_mismatch",
                    f"The url '{line['url']}' does not match the batch endpoint '{endpoint}'.",
                    param="url",
                    line=number,
                )
            )
            continue
        if line["custom_id"] in seen:
            errors.append(
                validation_error(
                    "duplicate_custom_id",
                    f"The custom ID '{line['custom_id']}' is a duplicate of the custom ID in another request.",
                    param="custom_id",
                    line=number,
                )
            )
            continue
        seen.add(line["custom_id"])
        requests.append((number, line))
    if errors:
        return [], errors[:10]
    if len(requests) > config.max_requests_per_file:
        return [], [
            validation_error(
                "too_many_tasks",
                f"The number of requests in the input file exceeds the maximum of {config.max_requests_per_file:,}.",
            )
        ]
    first_line, first = requests[0]
    model = first["body"].get("model")
    for number, line in requests[1:]:
        if line["body"].get("model") != model:
            return [], [
                validation_error(
                    "model_mismatch",
                    "The model deployment in this request does not match the rest of "
                    "the file. All requests in a batch must use the same deployment.",
                    param="body.model",
                    line=number,
                )
            ]
    deployment = resource.deployment(str(model))
    if deployment is None or deployment.provisioning_state != "Succeeded":
        return [], [
            validation_error(
                "model_not_found",
                f"The provided model deployment '{model}' does not exist in the Azure OpenAI resource.",
                param="body.model",
                line=first_line,
            )
        ]
    if not deployment.is_batch:
        return [], [
            validation_error(
                "invalid_request",
                f"The model deployment '{model}' has SKU '{deployment.sku_name}', "
                "which does not support batch requests. Use a GlobalBatch or DataZoneBatch deployment.",
                param="body.model",
                line=first_line,
            )
        ]
    ordered = sorted(requests, key=lambda item: hashlib.sha256(item[1]["custom_id"].encode()).digest())
    # Requests run in this order; each finds in the cache the prompt prefixes of those run before it in the batch.
    prompt_cache = PromptCache()
    tasks = [
        Task(
            line["custom_id"],
            _task_result(deployment, line["body"], at, config, prompt_cache),
            str(uuid.uuid5(uuid.NAMESPACE_OID, f"{line['custom_id']}/{at}")),
        )
        for _, line in ordered
    ]
    return tasks, []


def _task_result(
    deployment: Deployment, body: dict[str, Any], at: float, config: EmulatorConfig, prompt_cache: PromptCache
) -> CompletionResult:
    problem = chat_request_problem(body)
    if problem is not None:
        param, message = problem
        return CompletionResult(
            400,
            {
                "error": {
                    "code": "invalid_request_error",
                    "message": message,
                    "param": param,
                    "type": "invalid_request_error",
                }
            },
        )
    return complete(deployment, body, int(at), config.line_failures, prompt_cache)


def _line_schema_problem(line: Any) -> str | None:
    if not isinstance(line, dict):
        return "Each line of the input file must be a JSON object."
    for name, kind in (("custom_id", str), ("method", str), ("url", str), ("body", dict)):
        if not isinstance(line.get(name), kind):
            return f"The request is missing the required property '{name}' or it has the wrong type."
    if line["method"] != "POST":
        return f"The method '{line['method']}' is not supported. Only POST is allowed."
    if not isinstance(line["body"].get("model"), str):
        return "The request body is missing the required property 'model' (the batch deployment name)."
    return None


def validation_error(code: str, message: str, *, param: str | None = None, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


# The emulator's own text: Azure documents no error for a resource that cannot reach blob storage.
BLOB_STORAGE_OFF = (
    "This resource cannot use blob storage for batches: input_blob and output_folder need its system-assigned "
    "managed identity, with Storage Blob Data Contributor on the storage account."
)


def parse_batch_request(body: Any, api: str, blob_storage: bool = False) -> BatchRequest:
    """The create-batch body as `api` reads it, or BatchRequestError naming the param it refuses. Only v1 takes
    `input_blob`/`output_folder` (Learn documents them with the v1 API alone), and only on a resource with blob
    storage (`blob_storage`); 2024-10-21 ignores them and needs `input_file_id`."""
    if not isinstance(body, dict):
        raise BatchRequestError("invalid_request", "The request body must be a JSON object.")
    input_file_id: str | None = None
    input_blob = output_folder = None
    if api == API_V1 and body.get("input_blob") is not None:
        input_blob, output_folder = _blob_locations(body, blob_storage)
    else:
        if api == API_V1 and body.get("output_folder") is not None:
            raise BatchRequestError(
                "invalid_request", "output_folder is only supported together with input_blob.", "output_folder"
            )
        input_file_id = body.get("input_file_id")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise BatchRequestError("invalid_request", "input_file_id is required.", "input_file_id")
        if not input_file_id.startswith("file-"):
            raise BatchRequestError("invalid_request", f"Invalid file id '{input_file_id}'.", "input_file_id")
    endpoints = BATCH_ENDPOINTS[api]
    endpoint = body.get("endpoint")
    if endpoint not in endpoints:
        raise BatchRequestError(
            "invalid_request",
            f"The endpoint '{endpoint}' is not supported. Supported values: {', '.join(endpoints)}.",
            "endpoint",
        )
    window = body.get("completion_window")
    if window not in COMPLETION_WINDOWS:
        raise BatchRequestError(
            "invalid_request",
            f"The completion window '{window}' is not supported. Supported values: 24h.",
            "completion_window",
        )
    metadata = _metadata(body.get("metadata"))
    output_expires_after = None
    if api == API_V1 and body.get("output_expires_after") is not None:
        expiry = body["output_expires_after"]
        problem = (
            expiry_problem(expiry.get("seconds"), expiry.get("anchor", "created_at"))
            if isinstance(expiry, dict)
            else "must be an object with seconds and anchor"
        )
        if problem:
            raise BatchRequestError("invalid_request", f"output_expires_after {problem}.", "output_expires_after")
        output_expires_after = int(expiry["seconds"])
    return BatchRequest(
        input_file_id,
        endpoints[str(endpoint)],
        str(window),
        metadata,
        LINE_URLS[api],
        input_blob,
        output_folder,
        output_expires_after,
    )


def _blob_locations(body: dict[str, Any], blob_storage: bool) -> tuple[BlobUrl, BlobUrl]:
    """`input_blob` and `output_folder.url` of a v1 create (Learn, "Configuring Azure Blob Storage for Azure
    OpenAI"), checked as far as the request alone allows."""
    if not blob_storage:
        raise BatchRequestError("invalid_request", BLOB_STORAGE_OFF, "input_blob")
    if body.get("input_file_id") is not None:
        raise BatchRequestError("invalid_request", "Give either input_file_id or input_blob, not both.", "input_blob")
    try:
        input_blob = BlobUrl.parse(body["input_blob"], blob=True)
    except BlobUrlError as exc:
        raise BatchRequestError("invalid_request", f"input_blob {exc}.", "input_blob") from exc
    folder = body.get("output_folder")
    if not isinstance(folder, dict) or folder.get("url") is None:
        raise BatchRequestError(
            "invalid_request",
            "output_folder is required with input_blob: an object whose url is a blob container (or a folder in one).",
            "output_folder",
        )
    try:
        output_folder = BlobUrl.parse(folder["url"], blob=False)
    except BlobUrlError as exc:
        raise BatchRequestError("invalid_request", f"output_folder.url {exc}.", "output_folder") from exc
    if body.get("metadata") is not None:
        # Learn: "metadata is currently not supported with this capability".
        raise BatchRequestError(
            "invalid_request", "metadata is not supported for batches with blob storage input and output.", "metadata"
        )
    return input_blob, output_folder


def _metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    pairs = metadata.items() if isinstance(metadata, dict) else None
    if pairs is None or not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
        raise BatchRequestError(
            "invalid_request", "metadata must be an object of string keys and string values.", "metadata"
        )
    if len(metadata) > MAX_METADATA_PAIRS:
        raise BatchRequestError("invalid_request", f"metadata can have at most {MAX_METADATA_PAIRS} pairs.", "metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise BatchRequestError(
                "invalid_request",
                f"metadata keys are limited to {MAX_METADATA_KEY} characters and values to {MAX_METADATA_VALUE}.",
                "metadata",
            )
    return metadata


def expiry_problem(seconds: Any, anchor: Any) -> str | None:
    """What is wrong with an `expires_after` / `output_expires_after` (anchor `created_at`, 14 to 30 days), if
    anything (Learn: "a number between 1209600-2592000")."""
    if anchor != "created_at":
        return "anchor must be 'created_at'"
    low, high = EXPIRY_SECONDS
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not low <= seconds <= high:
        return f"seconds must be an integer from {low} to {high} (14 to 30 days)"
    return None


def _enqueued_tokens(content: bytes | bytearray) -> tuple[str | None, int]:
    """The deployment a batch input file targets and the prompt tokens it would enqueue (lenient: best effort)."""
    models: set[str] = set()
    tokens = 0
    for raw in content.decode("utf-8", errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        body = line.get("body") if isinstance(line, dict) else None
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            models.add(body["model"])
            tokens += request_tokens(body)
    return (models.pop() if len(models) == 1 else None), tokens


def not_processed_message(stored: StoredFile, now: float) -> str:
    # Azure's exact text is not documented; this says what it means and what to do.
    return (
        f"The input file '{stored.id}' has not been processed yet (status '{stored.status(now)}'). "
        "Wait until the file's status is 'processed', then create the batch."
    )


def _token_limit_message(deployment: Deployment) -> str:
    limit = deployment.enqueued_token_limit or 0
    if limit >= 1_000_000:
        shown = f"{limit / 1_000_000:g}M"
    elif limit >= 1_000:
        shown = f"{limit / 1_000:g}K"
    else:
        shown = str(limit)
    return (
        f"The number of enqueued tokens has surpassed the configured limit of {shown} for the deployment "
        f"'{deployment.name}'. Please either increase the limit or try again once the current jobs have finished."
    )
