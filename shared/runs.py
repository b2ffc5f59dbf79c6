"""What every run shares, whatever its job type: its id, its status, how it failed, and its resource in the API.

A run is one Durable Functions orchestration; its instance id is the run id. Nothing here knows Functions: the
triggers hand over the orchestration's plain status values.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.jobs import BATCH_SUFFIX, DEPLOYMENT_NAME, JobType, deployment_of
from shared.problems import FieldError, Problem, validation_problem

MAX_FAILURE_MESSAGE = 1_000  # characters: a cause in a sentence or two, never a traceback
MAX_FAILURE_PARAM = 200


class RunStatus(StrEnum):
    STARTING = "Starting"  # before Azure accepted the batch: resolving input, waiting for quota
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED)


# Run ids --------------------------------------------------------------------------------------------------------

_ID_TOKEN = {JobType.BATCH: "batch", JobType.CHAT_COMPLETION: "chat"}
_TOKEN_TYPE = {token: job_type for job_type, token in _ID_TOKEN.items()}
# Checked with `fullmatch`: `$` alone also matches before a final newline, which would reach the task hub.
_RUN_ID = re.compile(
    r"^(?P<deployment>[^:]+)::(?P<kind>batch|chat)::(?P<unique>[0-9a-f]{32})(::s(?P<shard>0|[1-9][0-9]{0,5}))?$"
)
_SHARD = "::s"
MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class RunId:
    """`<deployment>::<batch|chat>::<32 hex>`: readable in the portal's instance list, and safe in any URL. A shard
    of a batch run that was split (`::s<n>`) is a run of its own, listed under its parent's id."""

    deployment: str
    job_type: JobType
    unique: str
    shard: int | None = None

    def __str__(self) -> str:
        shard = f"{_SHARD}{self.shard}" if self.shard is not None else ""
        return f"{self.deployment}::{_ID_TOKEN[self.job_type]}::{self.unique}{shard}"

    def shard_of(self, index: int) -> RunId:
        """The id of this run's shard `index`."""
        return RunId(self.deployment, self.job_type, self.unique, index)

    @property
    def shards_prefix(self) -> str:
        """The id prefix all of this run's shards share (the task hub lists them by prefix)."""
        return f"{self}{_SHARD}"

    @property
    def parent(self) -> RunId | None:
        """The run a shard belongs to (None for a run that is no shard)."""
        return None if self.shard is None else RunId(self.deployment, self.job_type, self.unique)

    @classmethod
    def new(cls, resource: str, deployment: str, job_type: JobType, idempotency_key: str | None = None) -> RunId:
        """A fresh run id; with an `Idempotency-Key` the unique part comes from the key, so a retried request names
        the same run (and never starts a second one)."""
        if idempotency_key is None:
            return cls(deployment, job_type, uuid.uuid4().hex)
        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise validation_problem(
                [FieldError("Idempotency-Key", f"must be 1-{MAX_IDEMPOTENCY_KEY} characters")],
                f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters.",
            )
        name = f"{resource}|{deployment}|{_ID_TOKEN[job_type]}|{idempotency_key}"
        return cls(deployment, job_type, hashlib.sha256(name.encode()).hexdigest()[:32])

    @classmethod
    def parse(cls, text: str) -> RunId:
        """The run id in `text`, or a 400 naming `runId`: nothing outside the grammar reaches the task hub."""
        match = _RUN_ID.fullmatch(text)
        only_batches_have_shards = not match or match["shard"] is None or match["kind"] == "batch"
        if not match or not DEPLOYMENT_NAME.fullmatch(match["deployment"]) or not only_batches_have_shards:
            raise Problem(
                400,
                "invalid-run-id",
                "Invalid run id",
                "A run id is '<deployment>::batch::<32 hex digits>' (with '::s<n>' for a shard) or "
                "'<deployment>::chat::<32 hex digits>', as returned when the run started.",
                [FieldError("runId", "is not a run id")],
            )
        shard = int(match["shard"]) if match["shard"] is not None else None
        return cls(match["deployment"], _TOKEN_TYPE[match["kind"]], match["unique"], shard)

    @staticmethod
    def prefix_of_job(external_id: str) -> str:
        """The id prefix all runs of a job share (the task hub lists them by prefix)."""
        job_type = JobType.BATCH if external_id.endswith(BATCH_SUFFIX) else JobType.CHAT_COMPLETION
        return f"{deployment_of(external_id)}::{_ID_TOKEN[job_type]}::"


# Failures -------------------------------------------------------------------------------------------------------

HINTS = {
    "input_file_not_found": "Files are scoped to the Azure OpenAI resource that uploaded them: upload the input file "
    "to this job's resource and use the new file id.",
    "model_not_found": "The deployment named in the input file's `model` field does not exist in this resource: "
    "re-import the deployments (POST /api/jobs/import) and check the file.",
    "token_limit_exceeded": "The deployment's enqueued-token quota is used up by other batches: wait for them to "
    "finish, or raise the quota.",
    "invalid_request": "A line has the wrong schema, or the deployment is not a GlobalBatch or DataZoneBatch "
    "deployment (only those run batches).",
    "model_mismatch": "All lines of a batch must name the same deployment in `model`.",
    "expired": "The batch did not finish within its completion window; results of the requests that did finish are "
    "in the output file.",
    "timeout": "The run passed its deadline (completion window plus grace) and the batch was cancelled.",
}


def plain(text: str, limit: int = MAX_FAILURE_MESSAGE) -> str:
    """`text` as a user-facing sentence: its first line only (a traceback or a wrapper's text never follows it
    into a reply), at most `limit` characters, and at most three times `limit` once escaped as JSON (non-ASCII
    characters escape to six or twelve), so a run resource stays well within Durable's 16 KB custom status."""
    lines = (text or "").strip().splitlines()
    line = lines[0].strip() if lines else ""
    kept: list[str] = []
    budget = 3 * limit
    for char in line[:limit]:
        cost = _escaped_length(char)
        if cost > budget or (len(kept) == limit - 1 and len(line) > limit):
            kept.append("…")
            break
        kept.append(char)
        budget -= cost
    return "".join(kept)


def _escaped_length(char: str) -> int:
    if char in '"\\':
        return 2
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return 1
    return 12 if code > 0xFFFF else 6


@dataclass(frozen=True)
class Failure:
    """Why a run failed: a stable `code`, the cause in a sentence or two, and where Azure names them the input
    line and parameter, plus a hint on what to do."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None
    hint: str | None = None

    @classmethod
    def of(cls, code: str, message: str, *, line: int | None = None, param: str | None = None) -> Failure:
        """The failure with its message made plain and bounded, and the hint known for its code."""
        return cls(
            code=plain(code, 100) or "failed",
            message=plain(message),
            line=line,
            param=plain(param, MAX_FAILURE_PARAM) if param else None,
            hint=HINTS.get(code),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        return cls(
            code=str(data.get("code") or "failed"),
            message=str(data.get("message") or ""),
            line=data.get("line"),
            param=data.get("param"),
            hint=data.get("hint"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ORCHESTRATION_FAILED = Failure.of(
    "orchestration_failed", "The run stopped on an unexpected error in the app; the details are in the app's logs."
)
TERMINATED = Failure.of("terminated", "The run's orchestration was terminated by an operator.")


# The run resource -----------------------------------------------------------------------------------------------


def iso(moment: datetime, timespec: str = "auto") -> str:
    """A UTC time as the API writes it: ISO 8601 with a `Z` (`timespec` as `datetime.isoformat` takes it)."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def iso_of_unix(unix_seconds: int | float | None) -> str | None:
    if not unix_seconds:
        return None
    return iso(datetime.fromtimestamp(float(unix_seconds), UTC))


# What a batch run's resource says that its orchestration's input says too: what never changes over the run, and the
# monitor link (of the place the run is at, which the input lists). Its custom status leaves these out, so that it
# stays well within Durable's 16 KB whatever the run's failure and outputs say; `run_resource` adds them back.
FROM_INPUT = frozenset(
    {"id", "jobId", "jobType", "requestedAt", "inputId", "inputBlob", "outputFolder", "estimatedTokens", "parentRun"}
    | {"monitorUrl"}
)


def run_resource(
    run_id: RunId, runtime_status: str, custom_status: Any, output: Any, started_with: Any
) -> dict[str, Any]:
    """The run resource from its orchestration's status: the output once it completed, else the custom status it
    last published with what its input holds, else the run as it was started. An orchestration that failed or was
    terminated is reported as such, without its internals."""
    from shared.batch_run import BatchRun
    from shared.batch_set import BatchSet
    from shared.chat import ChatRun

    started = started_with
    if isinstance(started, str):
        try:
            started = json.loads(started)
        except ValueError:
            started = None
    run: BatchRun | BatchSet | ChatRun | None = None
    if isinstance(started, dict) and run_id.job_type is JobType.BATCH and "max_request_retries" in started:
        run = BatchSet.from_dict(started)
    elif isinstance(started, dict) and run_id.job_type is JobType.BATCH:
        run = BatchRun.from_dict(started)
    elif isinstance(started, dict):
        run = ChatRun.from_dict(started)
    if runtime_status == "Completed" and isinstance(output, dict):
        view = output
    elif isinstance(custom_status, dict):
        view = run.view_with_status(custom_status) if isinstance(run, BatchRun | BatchSet) else custom_status
    elif isinstance(run, ChatRun):
        view = run.resource_view(RunStatus.STARTING)
    elif run is not None:
        view = run.resource_view()
    else:
        view = {"id": str(run_id), "runId": None, "status": RunStatus.STARTING.value}
    view = dict(view)
    if runtime_status == "Failed":
        view["status"] = RunStatus.FAILED.value
        view["failure"] = view.get("failure") or ORCHESTRATION_FAILED.to_dict()
    elif runtime_status == "Terminated":
        view["status"] = RunStatus.CANCELLED.value
        view["failure"] = TERMINATED.to_dict()
    view["orchestrationStatus"] = runtime_status
    return view
