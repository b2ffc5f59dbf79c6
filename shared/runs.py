"""Runs of jobs: the state a batch run carries, Azure's batch as the run sees it, and the run resource.

Everything here crosses the boundary between orchestrator and activities, so it is plain data that round-trips
through JSON. No secret value ever enters it: an input file id read from Key Vault stays inside the activity
that reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    STARTING = "Starting"  # before Azure accepted the batch: resolving input, waiting for quota
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED})
AZURE_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})

# The seed's mapping, plus `cancelled`, which its table lacks.
_AZURE_TO_RUN = {
    "validating": RunStatus.RUNNING,
    "in_progress": RunStatus.RUNNING,
    "finalizing": RunStatus.RUNNING,
    "cancelling": RunStatus.RUNNING,
    "completed": RunStatus.SUCCESS,
    "failed": RunStatus.FAILED,
    "expired": RunStatus.FAILED,
    "cancelled": RunStatus.CANCELLED,
}

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


INPUT_FILE_PLACEHOLDER = "<input file id>"


def redact_input_file_id(text: Any, input_file_id: str | None) -> Any:
    """`text` with the input file id replaced: Azure's messages quote it ("Invalid file id 'file-…'", "The input
    file 'file-…' was not found"), and it may be a Key Vault secret's value."""
    if isinstance(text, str) and input_file_id:
        return text.replace(input_file_id, INPUT_FILE_PLACEHOLDER)
    return text


def run_status(azure_status: str) -> RunStatus:
    """The run status for an Azure batch status (unknown statuses count as still running)."""
    return _AZURE_TO_RUN.get(azure_status, RunStatus.RUNNING)


def iso(unix_seconds: int | float | None) -> str | None:
    if unix_seconds in (None, "", 0):
        return None
    return datetime.fromtimestamp(float(unix_seconds), UTC).isoformat().replace("+00:00", "Z")


@dataclass
class BatchSnapshot:
    """What a status call showed of a batch, minus the input file id (which may come from a secret)."""

    id: str
    status: str
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
    errors: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_azure(cls, batch: dict[str, Any]) -> BatchSnapshot:
        """Tolerates the service's quirks: "" for absent file ids, null request counts, errors as null. Error
        messages quoting the input file id get a placeholder instead (it may come from a secret)."""
        counts = batch.get("request_counts") or {}
        errors = (batch.get("errors") or {}).get("data") or []
        input_file_id = batch.get("input_file_id")
        stamps = {
            name: batch.get(name) or None
            for name in (
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
        }
        return cls(
            id=str(batch["id"]),
            status=str(batch.get("status") or "validating"),
            **stamps,
            output_file_id=batch.get("output_file_id") or None,
            error_file_id=batch.get("error_file_id") or None,
            total=counts.get("total"),
            completed=counts.get("completed"),
            failed=counts.get("failed"),
            errors=[
                {k: redact_input_file_id(e.get(k), input_file_id) for k in ("code", "message", "line", "param")}
                for e in errors
                if isinstance(e, dict)
            ],
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchSnapshot:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_terminal(self) -> bool:
        return self.status in AZURE_TERMINAL

    @property
    def ended_at(self) -> int | None:
        """`completed_at`, or the end stamp of a failed / expired / cancelled batch (the seed's gap)."""
        return {
            "completed": self.completed_at,
            "failed": self.failed_at,
            "expired": self.expired_at,
            "cancelled": self.cancelled_at,
        }.get(self.status)

    def outputs(self) -> dict[str, Any]:
        """The seed's five outputs."""
        return {
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "request_counts_total": self.total,
            "request_counts_completed": self.completed,
            "request_counts_failed": self.failed,
        }

    def failure(self) -> dict[str, Any] | None:
        """Failure detail from `errors.data`, with a hint where the cause is known."""
        if self.status == "expired":
            return {
                "code": "expired",
                "message": "The batch expired before all requests finished.",
                "line": None,
                "param": None,
                "hint": HINTS["expired"],
            }
        if self.status != "failed":
            return None
        first = self.errors[0] if self.errors else {"code": "failed", "message": "The batch failed."}
        code = str(first.get("code") or "failed")
        return {
            "code": code,
            "message": first.get("message"),
            "line": first.get("line"),
            "param": first.get("param"),
            "hint": HINTS.get(code),
        }

    def progress(self) -> dict[str, Any] | None:
        if not self.total:
            return None
        done = (self.completed or 0) + (self.failed or 0)
        return {
            "total": self.total,
            "completed": self.completed or 0,
            "failed": self.failed or 0,
            "percent": round(100 * done / self.total, 1),
        }


@dataclass
class BatchRunState:
    """Everything a batch run knows; the orchestrator's input, carried across continue-as-new."""

    run_id: str
    resource: str
    external_id: str
    deployment: str
    endpoint: str
    completion_window: str
    requested_at: str
    deadline: str
    monitor_url: str
    input_file_id: str | None = None
    input_file_secret: str | None = None
    secret_version: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    phase: str = "resolving"  # resolving → submitting ⇄ quota → polling → (cancelling) → done
    batch: dict[str, Any] | None = None
    quota_attempts: int = 0
    attempt: int = 1  # the run's batch attempt: a batch failed for quota is followed by the next attempt
    submit_failures: int = 0
    lookup_only: bool = False  # the next submit only looks for this run's batch: the run is ending
    polls: int = 0
    cancel_requested: bool = False
    cancel_sent: bool = False
    status: str = RunStatus.STARTING.value
    failure: dict[str, Any] | None = None
    next_check_at: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchRunState:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def snapshot(self) -> BatchSnapshot | None:
        return BatchSnapshot.from_dict(self.batch) if self.batch else None

    def resource_view(self) -> dict[str, Any]:
        """The run resource (also the orchestration's custom status): small, and free of secrets."""
        snapshot = self.snapshot
        empty_outputs = {
            "output_file_id": None,
            "error_file_id": None,
            "request_counts_total": None,
            "request_counts_completed": None,
            "request_counts_failed": None,
        }
        return {
            "id": self.run_id,
            "runId": snapshot.id if snapshot else None,
            "jobId": self.external_id,
            "jobType": "batch",
            "resource": self.resource,
            "status": self.status,
            "azureStatus": snapshot.status if snapshot else None,
            "phase": self.phase,
            "requestedAt": self.requested_at,
            "startedAt": iso(snapshot.created_at) if snapshot else None,
            "endedAt": iso(snapshot.ended_at) if snapshot else None,
            "outputs": snapshot.outputs() if snapshot else empty_outputs,
            "failure": self.failure,
            "monitorUrl": self.monitor_url,
            "progress": snapshot.progress() if snapshot else None,
            "quotaAttempts": self.quota_attempts,
            "nextCheckAt": self.next_check_at,
        }
