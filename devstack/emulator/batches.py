"""Azure OpenAI files and batches of one resource, and the batch lifecycle simulator.

A batch's life is a pure function of emulated time: `advance(batch, now)` moves it through
validating → in_progress → finalizing → completed (or failed / expired, or cancelling → cancelled) exactly as far
as `now` allows, so reading a batch at any moment gives the state Azure would report then.
"""

from __future__ import annotations

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
BATCH_ENDPOINTS = ("/chat/completions",)
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

    def status(self, now: float) -> str:
        """Azure answers an upload with `pending` and reports `processed` once it has imported the file."""
        return "processed" if now >= self.processed_at else "pending"

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "id": self.id,
            "object": "file",
            "purpose": self.purpose,
            "status": self.status(now),
            "status_details": None,
        }


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
class Batch:
    id: str
    endpoint: str
    input_file_id: str
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

    @property
    def expires_at(self) -> float:
        return self.created_at + COMPLETION_WINDOWS[self.completion_window]

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def request_counts(self) -> dict[str, int | None]:
        if self.status == "failed":
            # As Azure reports a batch that failed validation: the lines it saw, nothing processed (null members).
            return {"completed": None, "failed": None, "total": self.lines_seen}
        done = self.tasks[: self.processed]
        failed = sum(1 for task in done if task.result.status_code != 200)
        return {"completed": len(done) - failed, "failed": failed, "total": len(self.tasks)}

    def to_json(self) -> dict[str, Any]:
        def stamp(value: float | None) -> int | None:
            return None if value is None else int(value)

        return {
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

    def chat_prompt_cache(self, deployment: str, now: float) -> PromptCache:
        """The prompt cache of a chat deployment, rid of prefixes idle too long by emulated time `now`."""
        cache = self.chat_prompt_caches.setdefault(deployment, PromptCache(CHAT_PROMPT_CACHE_IDLE_SECONDS))
        cache.forget_idle(now)
        return cache

    # Files -----------------------------------------------------------------------------------------------------
    def add_file(self, filename: str, purpose: str, content: bytes | bytearray, now: float) -> StoredFile:
        """Stores an upload; it reads as `pending` for the resource's file-processing time."""
        processed_at = now + (self.resource.speeds.file_processing_seconds if purpose == "batch" else 0.0)
        stored = StoredFile(new_file_id(), filename, purpose, content, int(now), processed_at)
        self.files[stored.id] = stored
        return stored

    # Batches ---------------------------------------------------------------------------------------------------
    def create_batch(self, body: Any, now: float) -> Batch:
        """A new batch in `validating`, or BatchRequestError for a body or quota the service refuses at once."""
        input_file_id, endpoint, window, metadata = _batch_request(body)
        batch = Batch(
            new_batch_id(),
            endpoint,
            input_file_id,
            window,
            metadata,
            now,
            Speeds(**vars(self.resource.speeds)),
            empty_file_ids=self.config.empty_file_ids,
        )
        stored = self.files.get(input_file_id)
        if stored is not None and stored.status(now) != "processed":
            raise BatchRequestError("invalid_request", not_processed_message(stored, now), "input_file_id")
        if stored is not None:
            deployment, tokens = _enqueued_tokens(stored.content)
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
        stored = self.files.get(batch.input_file_id)
        if stored is None:
            errors = [
                _error(
                    "input_file_not_found",
                    f"The input file '{batch.input_file_id}' was not found. "
                    "Files are scoped to the Azure OpenAI resource they were uploaded to.",
                )
            ]
        else:
            batch.lines_seen = sum(1 for line in stored.content.splitlines() if line.strip())
            tasks, errors = validate_input(stored.content, batch.endpoint, self.resource, self.config, at)
            if not errors and batch.over_quota:
                errors = [_error("token_limit_exceeded", batch.over_quota)]
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
        batch.output_file_id = self._result_file(batch, "output", output, at).id
        batch.error_file_id = self._result_file(batch, "error", errors, at).id

    def _result_file(self, batch: Batch, kind: str, lines: list[dict[str, Any]], at: float) -> StoredFile:
        content = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        # Azure names its result files with a dashed uuid, unlike uploads (file-<32 hex>).
        stored = StoredFile(f"file-{uuid.uuid4()}", f"{batch.id}_{kind}.jsonl", "batch_output", content, int(at), at)
        self.files[stored.id] = stored
        return stored


def validate_input(
    content: bytes | bytearray, endpoint: str, resource: Resource, config: EmulatorConfig, at: float
) -> tuple[list[Task], list[dict[str, Any]]]:
    """The tasks of a batch input file, or the validation errors that fail the batch (code, message, line)."""
    if not content.strip():
        # Blank lines only count as empty too; Azure's message has these three spaces.
        return [], [
            _error(
                "empty_file", "The input file is empty. Please ensure that the batch contains at least one   request."
            )
        ]
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return [], [_error("invalid_json_line", "The input file is not valid UTF-8.", line=1)]
    if text.startswith("\ufeff"):
        return [], [
            _error("invalid_json_line", "The input file starts with a byte order mark; use UTF-8 without BOM.", line=1)
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
                _error("invalid_json_line", "A line in the input file could not be parsed as JSON.", line=number)
            )
            continue
        problem = _line_schema_problem(line)
        if problem:
            errors.append(_error("invalid_request", problem, line=number))
            continue
        if line["url"] != endpoint:
            errors.append(
                _error(
                    "url_mismatch",
                    f"The url '{line['url']}' does not match the batch endpoint '{endpoint}'.",
                    param="url",
                    line=number,
                )
            )
            continue
        if line["custom_id"] in seen:
            errors.append(
                _error(
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
            _error(
                "too_many_tasks",
                f"The number of requests in the input file exceeds the maximum of {config.max_requests_per_file:,}.",
            )
        ]
    first_line, first = requests[0]
    model = first["body"].get("model")
    for number, line in requests[1:]:
        if line["body"].get("model") != model:
            return [], [
                _error(
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
            _error(
                "model_not_found",
                f"The provided model deployment '{model}' does not exist in the Azure OpenAI resource.",
                param="body.model",
                line=first_line,
            )
        ]
    if not deployment.is_batch:
        return [], [
            _error(
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


def _error(code: str, message: str, *, param: str | None = None, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def _batch_request(body: Any) -> tuple[str, str, str, dict[str, str] | None]:
    if not isinstance(body, dict):
        raise BatchRequestError("invalid_request", "The request body must be a JSON object.")
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise BatchRequestError("invalid_request", "input_file_id is required.", "input_file_id")
    if not input_file_id.startswith("file-"):
        raise BatchRequestError("invalid_request", f"Invalid file id '{input_file_id}'.", "input_file_id")
    endpoint = body.get("endpoint")
    if endpoint not in BATCH_ENDPOINTS:
        raise BatchRequestError(
            "invalid_request",
            f"The endpoint '{endpoint}' is not supported. Supported values: {', '.join(BATCH_ENDPOINTS)}.",
            "endpoint",
        )
    window = body.get("completion_window")
    if window not in COMPLETION_WINDOWS:
        raise BatchRequestError(
            "invalid_request",
            f"The completion window '{window}' is not supported. Supported values: 24h.",
            "completion_window",
        )
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise BatchRequestError(
                "invalid_request", "metadata must be an object of string keys and string values.", "metadata"
            )
        if len(metadata) > MAX_METADATA_PAIRS:
            raise BatchRequestError(
                "invalid_request", f"metadata can have at most {MAX_METADATA_PAIRS} pairs.", "metadata"
            )
        for key, value in metadata.items():
            if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
                raise BatchRequestError(
                    "invalid_request",
                    f"metadata keys are limited to {MAX_METADATA_KEY} characters and values to {MAX_METADATA_VALUE}.",
                    "metadata",
                )
    return input_file_id, str(endpoint), str(window), metadata


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
