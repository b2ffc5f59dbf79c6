"""What the batch set's activities do with shards: cut the input, read what the shards report, cut a follow-up
round from the requests that failed for transient reasons, and merge the shards' results. Everything streams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from shared.batch_run import Phase
from shared.batch_set import MAX_SHARDS
from shared.inputs import MAX_FILE_BYTES, MAX_REQUESTS
from shared.results import KINDS, Collected, result_of, staged_name
from shared.runs import RunStatus
from shared.staging import lines
from shared.tokens import request_tokens

if TYPE_CHECKING:
    from shared.staging import BlockWriter, Staging

# Failures worth another try (the request may well succeed later); content filtering and invalid requests are final.
TRANSIENT_CODES = frozenset(
    {"batch_expired", "batch_cancelled", "request_timeout", "timeout", "server_error", "rate_limit_exceeded", "429"}
)


# A shard's lines name the deployment that runs it, which may be another resource's with a longer name (Azure allows
# 64 characters): each line is counted this much longer, so a shard stays within a file's bytes wherever it runs.
DEPLOYMENT_NAME_ROOM = 64


def shard_input_name(run_id: str, index: int) -> str:
    return f"shards/{run_id}/s{index}.jsonl"


def is_transient(result: dict[str, Any]) -> bool:
    """Whether a failed request's result is worth retrying: throttled, a server error, timed out, expired, or
    cancelled (the set retries only when a user did not ask for the cancel)."""
    if result.get("status") != "failed":
        return False
    status = result.get("statusCode")
    if isinstance(status, int) and (status == 429 or status >= 500 or status == 408):
        return True
    code = str((result.get("error") or {}).get("code") or "")
    return code in TRANSIENT_CODES


class _ShardWriter:
    """Writes consecutive shards of at most the limits, numbering them from `first`."""

    def __init__(self, run_id: str, staging: Staging, first: int, token_budget: int | None, round_: int) -> None:
        self.run_id, self.staging, self.token_budget, self.round = run_id, staging, token_budget, round_
        self.index = first
        self.planned: list[dict[str, Any]] = []
        self.writer: BlockWriter | None = None
        self.requests = self.bytes = self.tokens = 0

    def add(self, line: bytes, tokens: int, **extra: Any) -> None:
        size = len(line) + 1 + DEPLOYMENT_NAME_ROOM
        full = self.writer is not None and (
            self.requests + 1 > MAX_REQUESTS
            or self.bytes + size > MAX_FILE_BYTES
            or (self.token_budget is not None and self.tokens + tokens > self.token_budget)
        )
        if full:
            self.close(**extra)
        if self.writer is None:
            self.writer = self.staging.writer(shard_input_name(self.run_id, self.index))
        self.writer.write(line + b"\n")
        self.requests, self.bytes, self.tokens = self.requests + 1, self.bytes + size, self.tokens + tokens

    def abandon(self) -> None:
        """Stops without the shard being written (its blob is never committed)."""
        self.writer = None

    def close(self, **extra: Any) -> None:
        if self.writer is None:
            return
        self.writer.close("application/jsonl")
        self.planned.append(
            {
                "index": self.index,
                "round": self.round,
                "staged_input": shard_input_name(self.run_id, self.index),
                "requests": self.requests,
                "estimated_tokens": self.tokens,
                **extra,
            }
        )
        self.index += 1
        self.writer, self.requests, self.bytes, self.tokens = None, 0, 0, 0


class TooManyShards(Exception):
    """The input needs more shards than a set takes (`at_least` of them, counted so far)."""

    def __init__(self, at_least: int) -> None:
        super().__init__(f"at least {at_least} shards")
        self.at_least = at_least


def plan_shards(
    run_id: str, staged_input: str, token_budget: int | None, staging: Staging, *, max_shards: int = MAX_SHARDS
) -> list[dict[str, Any]]:
    """Cuts the run's staged input into shards in order, each within one file's limits and `token_budget`
    estimated tokens (a single request above the budget is a shard of its own); TooManyShards, as soon as it knows,
    when that takes more than `max_shards`."""
    shards = _ShardWriter(run_id, staging, 0, token_budget, 0)
    for line in _request_lines(staging, staged_input):
        shards.add(line, request_tokens(json.loads(line)["body"]))
        if shards.index + (shards.writer is not None) > max_shards:
            shards.abandon()
            raise TooManyShards(max_shards + 1)
    shards.close()
    return shards.planned


def plan_retries(
    run_id: str, round_: int, sources: list[dict[str, Any]], next_index: int, staging: Staging
) -> list[dict[str, Any]]:
    """One follow-up shard (round `round_` + 1) per source shard with requests that failed for transient reasons:
    the source's input lines of those requests, as they were sent."""
    shards = _ShardWriter(run_id, staging, next_index, None, round_ + 1)
    for source in sources:
        retry = {
            r["custom_id"]
            for r in (json.loads(raw) for raw in _request_lines(staging, staged_name(source["id"], "failed")))
            if is_transient(r)
        }
        if not retry:
            continue
        for line in _request_lines(staging, source["staged_input"]):
            if json.loads(line)["custom_id"] in retry:
                shards.add(line, request_tokens(json.loads(line)["body"]))
        shards.close(source=source["index"])
    return shards.planned


def merge_results(run_id: str, shards: list[dict[str, Any]], staging: Staging) -> Collected:
    """The set's staged results from its shards': each request's last outcome with its number of attempts. A failed
    request of a shard whose transient failures were retried is left out (its retry's outcome stands). Usage counts
    every attempt: each was paid for."""
    writers = {kind: staging.writer(staged_name(run_id, kind)) for kind in KINDS}
    collected = Collected()
    for shard in shards:
        retried = bool(shard["superseded"])
        for raw in _request_lines(staging, staged_name(shard["id"], "raw")):
            try:
                line = json.loads(raw)
            except ValueError:
                line = {}
            result = result_of(line if isinstance(line, dict) else {})
            if result["usage"]:
                collected.usage.add(result["usage"])
            if retried and is_transient(result):
                continue
            result["attempts"] = int(shard["round"]) + 1
            encoded = (json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            writers["raw"].write(raw + b"\n")
            writers["all"].write(encoded)
            if result["status"] == "failed":
                collected.failed += 1
                writers["raw-failed"].write(raw + b"\n")
                writers["failed"].write(encoded)
            else:
                collected.succeeded += 1
    for writer in writers.values():
        writer.close()
    return collected


def report_of(index: int, view: dict[str, Any] | None) -> dict[str, Any]:
    """What the set needs of a shard's run resource (None: the run is not in the task hub yet)."""
    if view is None:
        return {"index": index, "status": RunStatus.STARTING.value, "phase": Phase.SUBMITTING.value}
    outputs = view.get("outputs") or {}
    usage = {k: outputs.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")}
    return {
        "index": index,
        "status": view.get("status"),
        "phase": view.get("phase"),
        "resource": view.get("resource"),
        "batchId": view.get("runId"),
        "inputFileId": view.get("inputFileId"),
        "outputFileId": outputs.get("output_file_id"),
        "errorFileId": outputs.get("error_file_id"),
        "completed": outputs.get("request_counts_completed") or 0,
        "failed": outputs.get("request_counts_failed") or 0,
        "usage": usage if usage["total_tokens"] is not None else None,
        "failure": view.get("failure"),
    }


def _request_lines(staging: Staging, name: str) -> Iterator[bytes]:
    if staging.size(name) is None:
        return
    for line in lines(staging.chunks(name)):
        if line.strip():
            yield line
