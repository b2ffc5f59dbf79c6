"""A finished batch's results: read from Azure's output and error files (or, for a batch with blob storage, from the
blobs Azure wrote to the run's output folder) once, streamed, merged into one result per request, staged in the app's
Blob Storage, and summed into usage and an estimated cost.

The results API then serves the staged copies a page at a time (byte offsets as continuation), so neither reading
Azure's files nor answering a page ever holds more than a block of them in memory, and reading results needs access
to this API only, not an Azure OpenAI role.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from shared.problems import FieldError, validation_problem

if TYPE_CHECKING:
    from shared.azure_openai import AzureOpenAIClient
    from shared.batch_run import CollectResults
    from shared.settings import Prices
    from shared.staging import Staging

KINDS = ("all", "failed", "raw", "raw-failed")  # the staged copies: normalized or Azure's lines, every one or failed
READ_BYTES = 1024 * 1024  # a page is read from its staged copy this much at a time at most
LINE_BYTES = 1024  # a page's first read expects lines of this size at most on average (top * LINE_BYTES)


@dataclass
class Usage:
    """Tokens summed over a batch's results (`cached_tokens` are the prompt tokens served from the prompt cache)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0

    def add(self, usage: dict[str, Any]) -> None:
        self.prompt_tokens += _whole(usage.get("prompt_tokens"))
        self.completion_tokens += _whole(usage.get("completion_tokens"))
        self.total_tokens += _whole(usage.get("total_tokens"))
        self.cached_tokens += _whole(usage.get("cached_tokens"))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Collected:
    """What reading a batch's results found."""

    succeeded: int = 0
    failed: int = 0
    usage: Usage = field(default_factory=Usage)


def result_of(line: dict[str, Any]) -> dict[str, Any]:
    """One request's result from a line of Azure's output or error file: whether it succeeded, its answer (the first
    choice), what it used, or why it failed."""
    response = _object(line.get("response"))
    body = _object(response.get("body"))
    status_code = response.get("status_code")
    counted = None
    if isinstance(body.get("usage"), dict):
        usage = body["usage"]
        counted = {
            "prompt_tokens": _whole(usage.get("prompt_tokens")),
            "completion_tokens": _whole(usage.get("completion_tokens")),
            "total_tokens": _whole(usage.get("total_tokens")),
            "cached_tokens": _whole(_object(usage.get("prompt_tokens_details")).get("cached_tokens")),
        }
    error = line.get("error") if isinstance(line.get("error"), dict) else None
    if status_code == 200 and error is None:
        choices = body.get("choices") if isinstance(body.get("choices"), list) else []
        choice = _object(choices[0] if choices else None)
        return {
            "custom_id": line.get("custom_id"),
            "status": "succeeded",
            "statusCode": 200,
            "content": _object(choice.get("message")).get("content"),
            "finishReason": choice.get("finish_reason"),
            "usage": counted,
            "error": None,
        }
    failure = error or _object(body.get("error"))
    return {
        "custom_id": line.get("custom_id"),
        "status": "failed",
        "statusCode": status_code,
        "content": None,
        "finishReason": None,
        "usage": counted,
        "error": {"code": failure.get("code"), "message": failure.get("message")},
    }


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def staged_name(run_id: str, kind: str) -> str:
    return f"results/{run_id}/{kind}.ndjson"


def result_contents(
    step: CollectResults, client: AzureOpenAIClient, credential: Any, blob_endpoints: tuple[str, ...] = ()
) -> list[Iterator[bytes]]:
    """The ended batch's output and error contents, each a stream of chunks, read only when consumed: Azure's files,
    or a blob batch's blobs read with the app's identity. Those must be blobs of Azure Storage (or of `blob_endpoints`,
    as the run's URLs must), so the app's token goes nowhere else; a missing one has no lines, as Azure writes each
    only when it has some, except the output blob of a batch that completed requests, whose absence fails the
    collect."""
    from shared.inputs import storage_url_error
    from shared.staging import blob_chunks

    contents = [client.file_content(file_id) for file_id in step.file_ids]
    for url, required in ((step.output_blob, step.completed > 0), (step.error_blob, False)):
        if not url:
            continue
        if storage_url_error(url, "output_blob", blob_endpoints) is not None:
            raise ValueError("Azure OpenAI named a result blob that is not a storage blob URL; it was not read")
        contents.append(blob_chunks(url, credential, missing_ok=not required))
    return contents


def collect(run_id: str, contents: Iterable[Iterable[bytes]], staging: Staging) -> Collected:
    """Reads the batch's output and error contents (see `result_contents`), a chunk at a time, into the four staged
    copies of its results; sums what the requests used."""
    from shared.staging import lines

    writers = {kind: staging.writer(staged_name(run_id, kind)) for kind in KINDS}
    collected = Collected()
    for content in contents:
        for raw in lines(content):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                line = {}
            result = result_of(line if isinstance(line, dict) else {})
            encoded = (json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            writers["raw"].write(raw + b"\n")
            writers["all"].write(encoded)
            if result["status"] == "failed":
                collected.failed += 1
                writers["raw-failed"].write(raw + b"\n")
                writers["failed"].write(encoded)
            else:
                collected.succeeded += 1
            if result["usage"]:
                collected.usage.add(result["usage"])
    for writer in writers.values():
        writer.close()
    return collected


def estimated_cost(usage: Usage, prices: Prices | None, model: str, version: str) -> dict[str, Any] | None:
    """What the batch cost by the price table, per million tokens at the model's standard price less its batch
    discount (the model's own, else the table's), cached prompt tokens at the cached price; None when the table has no
    price for the model."""
    price = prices.of(model, version) if prices else None
    if prices is None or price is None:
        return None
    uncached = max(0, usage.prompt_tokens - usage.cached_tokens)
    standard = (
        uncached * price.input + usage.cached_tokens * price.cached_input + usage.completion_tokens * price.output
    ) / 1_000_000
    return {"amount": round(standard * (1 - price.batch_discount), 6), "currency": prices.currency}


# Pages of the staged copies -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultsPage:
    lines: list[bytes]
    next_offset: int | None  # where the next page starts in the staged copy; None on the last page


def page(staging: Staging, name: str, offset: int, top: int) -> ResultsPage | None:
    """Up to `top` lines of a staged copy from byte `offset`, read in ranges of a megabyte at most (a page of lines of
    up to a KiB in one request); None when there is no such copy."""
    found: list[bytes] = []
    length = min(READ_BYTES, top * LINE_BYTES)
    start, pending = offset, b""  # the first line not yet taken starts at `start`; `pending` is what is read of it
    end: int | None = None  # the copy's size, once a read has told it
    while len(found) < top:
        position = start + len(pending)
        if end is not None and position >= end:
            if pending:  # the copy ends without a line break: its last line
                found.append(pending)
                start = end
            break
        read = staging.read(name, position, length)
        if read is None:
            return None
        if read.blob_size is None:  # nothing from `position` on: the copy ends there, or `offset` is past its end
            end = position
            continue
        end = read.blob_size
        length = READ_BYTES  # should the lines be longer than expected, the rest a megabyte at a time
        *lines, pending = (pending + read.data).split(b"\n")  # split once a chunk, not once a line
        taken = lines[: top - len(found)]
        found += taken
        start += sum(len(line) + 1 for line in taken)
    return ResultsPage(found, start if end is None or start < end else None)


def encode_offset(kind: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"kind": kind, "offset": offset}).encode()).decode().rstrip("=")


def decode_offset(token: str, kind: str) -> int:
    """The offset a token from `encode_offset` names, for the same kind of page; a 400 naming it otherwise."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(data, dict) or data.get("kind") != kind or not isinstance(data.get("offset"), int):
            raise ValueError(token)
        if data["offset"] < 0:
            raise ValueError(token)
        return int(data["offset"])
    except (ValueError, UnicodeDecodeError):
        raise validation_problem(
            [FieldError("continuationToken", "is not a token from a nextLink of this run's results, as given")]
        ) from None


def _whole(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
