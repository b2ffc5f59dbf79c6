"""The Azure OpenAI Batch Job run as plain domain code: its state, what it observes, and one pure decision.

`decide(run, seen, now)` takes the run's state, what was just observed (an episode began, an activity answered or
failed, a timer fired, a cancel arrived) and the orchestration's clock, and returns the next state and the next
step: resolve the input secret, submit (or only look for the run's batch), wait until a moment, check the batch,
cancel it, continue as new, or finish. The orchestrator only carries steps out with the Durable API; every rule
(deadline, backoffs, the give-up limits, continue-as-new, the failure shape) lives here, once.

Everything here crosses the orchestrator/activity boundary as JSON. No secret value ever enters it: an input file
id read from Key Vault stays inside the activity that reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.polling import Observation as PollObservation
from shared.polling import poll_delay
from shared.runs import FROM_INPUT, Failure, RunStatus, iso, iso_of_unix, parse_iso

GRACE = timedelta(hours=1)  # past the completion window, before the run gives up on the batch
WINDOW_SECONDS = {"24h": 24 * 3600}
MAX_SUBMIT_FAILURES = 15  # submits in a row whose outcome stayed unknown (~45 minutes of backoff)
MAX_RESOLVE_FAILURES = 5  # Key Vault reads in a row that failed transiently
MAX_FAILED_CHECKS = 20  # status calls in a row that failed
MAX_COLLECT_FAILURES = 5  # tries to read a finished batch's results; then the run ends without them
MAX_ERRORS_KEPT = 5  # of a failed batch's errors.data: the first is reported, a few more help in the portal
# History events per episode: one episode is replayed at every step, so its history must stay short. DTFx records
# OrchestratorStarted + ExecutionStarted + OrchestratorCompleted for the episode's start, four events for each
# activity or timer (scheduled, answered, and the replay around the answer), three for an external event, and one
# to continue as new. The run continues as new before a step could take the episode past this limit.
MAX_EPISODE_EVENTS = 64
EPISODE_START_EVENTS = 3
STEP_EVENTS = 4
# A cancel event may arrive at any moment (3 events), and a timer abandoned for it still fires later (3 more).
EVENT_RESERVE = 6
CONTINUE_EVENTS = 1


@dataclass(frozen=True)
class Backoff:
    """Waits that grow geometrically from `first` by `factor`, never longer than `longest` (seconds)."""

    first: float
    factor: float
    longest: float

    def delay(self, tries: int) -> float:
        """The wait after the `tries`-th failure in a row (1-based)."""
        return min(self.longest, self.first * self.factor ** max(0, tries - 1))


QUOTA_BACKOFF = Backoff(60.0, 2.0, 10 * 60.0)  # while the quota is used up: short, so freed quota is soon taken
# Submits whose outcome stayed unknown (Azure unreachable, 5xx storms) are tried again: safe, because every attempt
# first looks for a batch an earlier one created.
SUBMIT_BACKOFF = Backoff(5.0, 2.0, 300.0)
ACTIVITY_BACKOFF = Backoff(5.0, 2.0, 60.0)  # a Key Vault read or a cancel that failed transiently


class Phase(StrEnum):
    RESOLVING = "resolving"  # checking the Key Vault secret that holds the input file id
    SUBMITTING = "submitting"
    QUOTA = "quota"  # waiting for the deployment's enqueued-token quota
    POLLING = "polling"
    CANCELLING = "cancelling"  # Azure was asked to cancel; waiting for it to end
    COLLECTING = "collecting"  # the batch ended: its results are read into the app's storage and summed
    DONE = "done"


class SubmitOutcome(StrEnum):
    SUBMITTED = "submitted"  # Azure created the run's batch
    REATTACHED = "reattached"  # an earlier attempt had created it
    QUOTA = "quota"  # token_limit_exceeded: try again later
    REJECTED = "rejected"  # Azure refused the request for good
    CANCELLED = "cancelled"  # cancel asked before any batch existed; none was created
    NOT_CREATED = "not_created"  # only asked to look, and the run has no batch


# Azure's batch statuses as run statuses: the seed's mapping, plus `cancelled`, which its table lacks.
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
AZURE_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
INPUT_FILE_PLACEHOLDER = "<input file id>"


def run_status(azure_status: str) -> RunStatus:
    """The run status for an Azure batch status (unknown statuses count as still running)."""
    return _AZURE_TO_RUN.get(azure_status, RunStatus.RUNNING)


def redact_input_file_id(text: str, input_file_id: str | None) -> str:
    """`text` with the input file id replaced: Azure's messages quote it ("Invalid file id 'file-…'", "The input
    file 'file-…' was not found"), and it may be a Key Vault secret's value."""
    return text.replace(input_file_id, INPUT_FILE_PLACEHOLDER) if input_file_id else text


@dataclass(frozen=True)
class BatchSnapshot:
    """What one call showed of the run's batch, minus the input file id (it may come from a secret)."""

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
    errors: tuple[Failure, ...] = ()
    output_blob: str | None = None  # a blob batch's results, once it ended (each written only when it has lines)
    error_blob: str | None = None

    @classmethod
    def of(cls, batch: Any) -> BatchSnapshot:
        """From a `shared.azure_openai.Batch`: its first errors kept (messages quoting the input file id get a
        placeholder instead, and are bounded)."""
        kept = {f.name for f in fields(cls)} - {"errors"}
        return cls(
            **{name: getattr(batch, name) for name in kept},
            errors=tuple(
                Failure.of(e.code, redact_input_file_id(e.message, batch.input_file_id), line=e.line, param=e.param)
                for e in batch.errors[:MAX_ERRORS_KEPT]
            ),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchSnapshot:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["errors"] = tuple(Failure.from_dict(e) for e in data.get("errors") or ())
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"errors": [e.to_dict() for e in self.errors]}

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
        """The seed's five outputs, and where a blob batch's results went."""
        return {
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "request_counts_total": self.total,
            "request_counts_completed": self.completed,
            "request_counts_failed": self.failed,
            "output_blob": self.output_blob,
            "error_blob": self.error_blob,
        }

    def failure(self) -> Failure | None:
        """Why the batch did not succeed: its first error (with a hint where the cause is known), or expiry."""
        if self.status == "expired":
            return Failure.of("expired", "The batch expired before all requests finished.")
        if self.status != "failed":
            return None
        return self.errors[0] if self.errors else Failure.of("failed", "The batch failed.")

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

    def poll_observation(self, now: datetime) -> PollObservation:
        moment = now.timestamp()
        return PollObservation(
            status=self.status,
            now=moment,
            created_at=float(self.created_at or moment),
            in_progress_at=self.in_progress_at,
            finalizing_at=self.finalizing_at,
            cancelling_at=self.cancelling_at,
            total=self.total,
            completed=self.completed,
            failed=self.failed,
            expires_at=self.expires_at,
        )


USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")
EMPTY_OUTPUTS = {
    "output_file_id": None,
    "error_file_id": None,
    "request_counts_total": None,
    "request_counts_completed": None,
    "request_counts_failed": None,
    "output_blob": None,
    "error_blob": None,
}


@dataclass(frozen=True)
class BatchRun:
    """Everything a batch run knows: the orchestration's input, carried across continue-as-new."""

    run_id: str
    resource: str
    external_id: str
    deployment: str
    endpoint: str
    completion_window: str
    requested_at: str
    monitor_url: str
    input_file_id: str | None = None
    input_file_secret: str | None = None
    secret_version: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    input_id: str | None = None  # the input the app built, when the run names one
    # Or a user's blob that Azure reads itself, its results going to a folder (a resource with batchBlobStorage).
    input_blob: str | None = None
    output_folder: str | None = None
    estimated_tokens: int | None = None  # the input's prompt tokens, estimated (known for inputs the app built)
    model: str = ""  # the deployment's model and version: what the price table is looked up by
    model_version: str = ""
    # A shard of a split run: its input staged in the app's storage (uploaded to whichever resource runs it), the
    # deployments that may run it (the first is where it runs now), and the files uploaded so far, by resource.
    parent_id: str | None = None
    staged_input: str | None = None
    requests: int | None = None
    places: list[dict[str, str]] = field(default_factory=list)  # [{resource, deployment, monitorUrl}, ...]
    uploaded: dict[str, str] = field(default_factory=dict)
    uploads_deleted: bool = False  # the uploaded files are deleted once the run no longer needs them
    refused_here: int = 0  # quota refusals in a row at the current place
    phase: Phase = Phase.RESOLVING
    status: RunStatus = RunStatus.STARTING
    deadline: str | None = None  # set from the orchestration's clock, then from the batch's created_at
    batch: BatchSnapshot | None = None
    attempt: int = 1  # the run's batch attempt: a batch failed for quota is followed by the next attempt
    quota_waits: int = 0
    submit_failures: int = 0  # in a row: a batch of this run may exist while this is above zero
    resolve_failures: int = 0  # in a row: Key Vault reads of the input secret, or a shard's uploads of its input
    failed_checks: int = 0
    polls: int = 0
    cancel_requested: bool = False
    cancel_sent: bool = False
    failure: Failure | None = None
    next_check_at: str | None = None
    results_collected: bool = False
    collect_failures: int = 0
    usage: dict[str, int] | None = None  # tokens the batch's requests used, summed from its output file
    estimated_cost: dict[str, Any] | None = None  # {amount, currency} by the price table; None without a price
    episode_events: int = EPISODE_START_EVENTS  # history events of this episode so far (see MAX_EPISODE_EVENTS)
    resume: dict[str, Any] | None = None  # the step put off by an index write or a continue-as-new, taken next
    indexed_status: str | None = None  # the status the run index last learned

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchRun:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if "phase" in values:
            values["phase"] = Phase(values["phase"])
        if "status" in values:
            values["status"] = RunStatus(values["status"])
        if values.get("batch"):
            values["batch"] = BatchSnapshot.from_dict(values["batch"])
        if values.get("failure"):
            values["failure"] = Failure.from_dict(values["failure"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"], data["status"] = self.phase.value, self.status.value
        data["batch"] = self.batch.to_dict() if self.batch else None
        data["failure"] = self.failure.to_dict() if self.failure else None
        return data

    def submit_step(self, at: datetime, *, lookup_only: bool = False) -> Submit:
        return Submit(
            run_id=self.run_id,
            attempt=self.attempt,
            resource=self.resource,
            endpoint=self.endpoint,
            completion_window=self.completion_window,
            requested_at=self.requested_at,
            metadata=dict(self.metadata),
            input_file_id=self.input_file_id,
            input_file_secret=self.input_file_secret,
            secret_version=self.secret_version,
            lookup_only=lookup_only,
            decided_at=iso(at),
            input_blob=self.input_blob,
            output_folder=self.output_folder,
        )

    def check_step(self) -> Check:
        assert self.batch is not None
        return Check(self.run_id, self.resource, self.batch.id)

    def cancel_step(self) -> CancelBatch:
        assert self.batch is not None
        return CancelBatch(self.run_id, self.resource, self.batch.id)

    def resource_view(self) -> dict[str, Any]:
        """The run resource (also the orchestration's custom status): small, and free of secrets."""
        batch = self.batch
        return {
            "id": self.run_id,
            "runId": batch.id if batch else None,
            "jobId": self.external_id,
            "jobType": "batch",
            "resource": self.resource,
            "status": self.status.value,
            "azureStatus": batch.status if batch else None,
            "phase": self.phase.value,
            "requestedAt": self.requested_at,
            "startedAt": iso_of_unix(batch.created_at) if batch else None,
            "endedAt": iso_of_unix(batch.ended_at) if batch else None,
            "outputs": (batch.outputs() if batch else dict(EMPTY_OUTPUTS))
            | (self.usage or dict.fromkeys(USAGE_FIELDS))
            | {"estimatedCost": self.estimated_cost},
            "failure": self.failure.to_dict() if self.failure else None,
            "monitorUrl": self.monitor_url,
            "progress": batch.progress() if batch else None,
            "quotaAttempts": self.quota_waits,
            "nextCheckAt": self.next_check_at,
            "inputId": self.input_id,
            "inputBlob": self.input_blob,
            "outputFolder": self.output_folder,
            "estimatedTokens": self.estimated_tokens,
            # A shard's: the run it belongs to, and its input file on the resource that runs it (the app's upload).
            "parentRun": self.parent_id,
            "inputFileId": self.input_file_id if self.staged_input else None,
        }

    def custom_status(self) -> dict[str, Any]:
        """The run resource as the orchestration's custom status (what the portal shows): without what the
        orchestration's input holds (`FROM_INPUT`), so it fits Durable's 16 KB whatever the run says."""
        return {name: value for name, value in self.resource_view().items() if name not in FROM_INPUT}

    def view_with_status(self, custom_status: dict[str, Any]) -> dict[str, Any]:
        """The run resource from the custom status the run published, this being the orchestration's input: what
        never changes from here, the monitor link of the place the run is at (a shard moves) from its places."""
        view = self.resource_view() | custom_status
        links = {place["resource"]: place.get("monitorUrl", self.monitor_url) for place in self.places}
        view["monitorUrl"] = links.get(view["resource"], self.monitor_url)
        return view


def deadline_for(start: datetime, completion_window: str) -> datetime:
    """When the run gives up on its batch: the completion window after `start`, plus grace."""
    return start + timedelta(seconds=WINDOW_SECONDS.get(completion_window, 24 * 3600)) + GRACE


# What the run observes ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Seen:
    """Something the orchestration observed; every observation may also bring news of a cancel request."""

    cancel_requested: bool = False


@dataclass(frozen=True, kw_only=True)
class Began(Seen):
    """An episode began: the first, or the next after continue-as-new."""


@dataclass(frozen=True, kw_only=True)
class InputResolved(Seen):
    """The resolve activity answered: the secret's current version, or why it cannot be read."""

    version: str | None = None
    refusal: Failure | None = None


@dataclass(frozen=True, kw_only=True)
class SubmitAnswered(Seen):
    outcome: SubmitOutcome
    batch: BatchSnapshot | None = None
    refusal: Failure | None = None


@dataclass(frozen=True, kw_only=True)
class BatchChecked(Seen):
    batch: BatchSnapshot


@dataclass(frozen=True, kw_only=True)
class CancelAnswered(Seen):
    """Azure took the cancel (or the batch had already ended: then this is what it ended as)."""

    batch: BatchSnapshot


@dataclass(frozen=True, kw_only=True)
class TimerFired(Seen):
    pass


@dataclass(frozen=True, kw_only=True)
class InputUploaded(Seen):
    """The shard's input is on `resource` as `file_id` (processed)."""

    resource: str
    file_id: str


@dataclass(frozen=True, kw_only=True)
class ResultsCollected(Seen):
    """The batch's results are staged: how many requests succeeded and failed, what they used, what it cost."""

    succeeded: int
    failed: int
    usage: dict[str, int]
    estimated_cost: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Indexed(Seen):
    """The run index holds the run at this status (or the write failed: the index is only a view, and the
    rebuild route repairs it)."""

    status: str


@dataclass(frozen=True, kw_only=True)
class CancelArrived(Seen):
    """A cancel request arrived while the run waited on a timer."""

    cancel_requested: bool = True


@dataclass(frozen=True, kw_only=True)
class UploadsDeleted(Seen):
    pass


@dataclass(frozen=True, kw_only=True)
class ActivityFailed(Seen):
    """The activity for `step` raised: its outcome is unknown (details are in the logs, never in the run)."""

    step: type[Step]


SEEN: dict[str, type[Seen]] = {
    kind.__name__: kind
    for kind in (
        InputResolved,
        InputUploaded,
        SubmitAnswered,
        BatchChecked,
        CancelAnswered,
        ResultsCollected,
        UploadsDeleted,
        Indexed,
    )
}


def seen_to_dict(seen: Seen) -> dict[str, Any]:
    """An activity's answer as JSON (the activities answer with observations)."""
    data: dict[str, Any] = {"seen": type(seen).__name__}
    for item in fields(seen):
        value = getattr(seen, item.name)
        data[item.name] = value.to_dict() if isinstance(value, BatchSnapshot | Failure) else value
    return data


def seen_from_dict(data: dict[str, Any]) -> Seen:
    values = dict(data)
    kind = SEEN[values.pop("seen")]
    if values.get("batch"):
        values["batch"] = BatchSnapshot.from_dict(values["batch"])
    if values.get("refusal"):
        values["refusal"] = Failure.from_dict(values["refusal"])
    if "outcome" in values:
        values["outcome"] = SubmitOutcome(values["outcome"])
    return kind(**values)


# What the run does next -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """The next thing the orchestration does. Activity steps are also the activity's whole input."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return cls(**data)


@dataclass(frozen=True)
class ResolveInput(Step):
    run_id: str
    secret: str


@dataclass(frozen=True)
class Submit(Step):
    run_id: str
    attempt: int
    resource: str
    endpoint: str
    completion_window: str
    requested_at: str
    metadata: dict[str, str]
    input_file_id: str | None
    input_file_secret: str | None
    secret_version: str | None
    lookup_only: bool  # the run is ending: only look for a batch an earlier attempt may have created
    decided_at: str  # when the run decided this submit (its clock): the intent's time in the submit ledger
    input_blob: str | None = None  # a blob batch's input and results folder (then no input file, no metadata)
    output_folder: str | None = None

    @property
    def identity(self) -> dict[str, str]:
        """The metadata that ties a batch to its run and attempt."""
        return {RUN_ID_METADATA: self.run_id, RUN_ATTEMPT_METADATA: str(self.attempt)}


@dataclass(frozen=True)
class Check(Step):
    run_id: str
    resource: str
    batch_id: str


@dataclass(frozen=True)
class CancelBatch(Step):
    run_id: str
    resource: str
    batch_id: str


@dataclass(frozen=True)
class Wait(Step):
    until: str  # ISO time on the orchestration's clock


@dataclass(frozen=True)
class UploadInput(Step):
    """Upload the shard's staged input to the resource that will run it (files belong to the resource), its lines
    naming that resource's deployment."""

    run_id: str
    resource: str
    staged_input: str
    deployment: str


@dataclass(frozen=True)
class DeleteUploads(Step):
    """Delete the input files the shard uploaded (by resource): each counts against its resource's file limit, and
    its batch has ended (or none was made), so nothing reads them any more. The input stays staged in the app."""

    run_id: str
    files: dict[str, str]


@dataclass(frozen=True)
class CollectResults(Step):
    """Read the ended batch's output and error files (or blobs) into the app's storage, and sum their usage."""

    run_id: str
    resource: str
    file_ids: list[str]
    model: str
    model_version: str
    # A blob batch's result blobs, read with the app's identity. A blob that does not exist has no lines, as Azure
    # writes each only when it has some, except the output blob of a batch that completed requests.
    output_blob: str | None = None
    error_blob: str | None = None
    completed: int = 0


@dataclass(frozen=True)
class IndexRun(Step):
    """Write the run's row in the run index: its status changed."""

    run_id: str
    at: str  # the orchestration's clock: a row never goes back to an older state
    view: dict[str, Any]


@dataclass(frozen=True)
class ContinueAsNew(Step):
    pass


@dataclass(frozen=True)
class Finish(Step):
    pass


STEPS: dict[str, type[Step]] = {
    kind.__name__: kind
    for kind in (
        ResolveInput,
        UploadInput,
        Submit,
        Check,
        CancelBatch,
        CollectResults,
        DeleteUploads,
        IndexRun,
        Wait,
        ContinueAsNew,
        Finish,
    )
}


def step_to_dict(step: Step) -> dict[str, Any]:
    return {"step": type(step).__name__, **step.to_dict()}


def step_from_dict(data: dict[str, Any]) -> Step:
    values = dict(data)
    step: Step = STEPS[values.pop("step")].from_dict(values)
    return step


RUN_ID_METADATA = "runId"
# Which batch of the run this is: a batch that Azure failed for quota (token_limit_exceeded at validation) is
# followed by another, and re-attaching must find the current one, not the failed one.
RUN_ATTEMPT_METADATA = "runAttempt"
RESERVED_METADATA = (RUN_ID_METADATA, RUN_ATTEMPT_METADATA)


# The decision ---------------------------------------------------------------------------------------------------


def decide(run: BatchRun, seen: Seen, now: datetime) -> tuple[BatchRun, Step]:
    """The run's next state and step, given what was just seen at `now` (the orchestration's clock)."""
    if seen.cancel_requested and not run.cancel_requested:
        run = replace(run, cancel_requested=True)
    if isinstance(seen, ActivityFailed) and seen.step is IndexRun:  # the index is only a view: carry on
        seen = Indexed(status=run.status.value, cancel_requested=seen.cancel_requested)
    if isinstance(seen, Began):
        run = replace(run, episode_events=EPISODE_START_EVENTS)
    else:
        run = replace(run, episode_events=run.episode_events + _events_of(seen))
    if run.deadline is None:  # the run's clock is the orchestration's, as the timers' are
        run = replace(run, deadline=iso(deadline_for(now, run.completion_window)))
    if isinstance(seen, Began | Indexed) and run.resume is not None:  # the step put off comes first
        put_off = run.resume
        run, step = replace(run, resume=None), step_from_dict(put_off)
        if isinstance(seen, Indexed):
            run = replace(run, indexed_status=seen.status)
        if run.cancel_requested and _creates(step):  # a cancel came meanwhile: at most a last look for a batch
            run, step = _submit(run, now)
    else:
        run, step = _next(replace(run, next_check_at=None), seen, now)
    if isinstance(step, Finish) and run.uploaded and not run.uploads_deleted and not _batch_may_run(run):
        step = DeleteUploads(run.run_id, dict(run.uploaded))
    if isinstance(step, Finish):
        run = replace(run, phase=Phase.DONE, next_check_at=None)
    elif isinstance(step, Wait):
        run = replace(run, next_check_at=step.until)
    if run.indexed_status != run.status.value:  # the run index learns of every change of status first
        run = replace(run, resume=step_to_dict(step))
        step = IndexRun(run.run_id, iso(now), run.resource_view())
    if over_budget(run.episode_events, step):
        return replace(run, resume=step_to_dict(step)), ContinueAsNew()  # a fresh episode begins with this step
    return replace(run, episode_events=run.episode_events + _cost(step)), step


def over_budget(episode_events: int, step: Step) -> bool:
    """Whether `step` would take the episode's history past its limit, so the run continues as new first. An index
    write never waits for a new episode (every other step leaves room for one): a new status is indexed in the
    episode that decided it, so no execution ever starts from a status the index does not have."""
    if isinstance(step, Finish | IndexRun):
        return False
    room_kept = STEP_EVENTS + EVENT_RESERVE + CONTINUE_EVENTS  # an index write, a cancel, the continue-as-new
    return episode_events + _cost(step) + room_kept > MAX_EPISODE_EVENTS


def _creates(step: Step) -> bool:
    """Whether `step` creates something in Azure: a batch, or a shard's upload of its input."""
    return isinstance(step, UploadInput) or (isinstance(step, Submit) and not step.lookup_only)


def _events_of(seen: Seen) -> int:
    """History events that the observation itself added beyond its step's cost: a cancel that won a wait."""
    return 3 if isinstance(seen, CancelArrived) else 0


def _cost(step: Step) -> int:
    return 0 if isinstance(step, Finish | ContinueAsNew) else STEP_EVENTS


def _next(run: BatchRun, seen: Seen, now: datetime) -> tuple[BatchRun, Step]:
    match seen:
        case Began():
            if run.phase is Phase.RESOLVING:
                return _resolve(run, now)
            if run.phase in (Phase.SUBMITTING, Phase.QUOTA):
                return _submit(run, now)
            return _watch(run, now)
        case InputResolved(version=version, refusal=refusal):
            if refusal is not None:
                return _finish(run, RunStatus.FAILED, refusal)
            return _submit(replace(run, secret_version=version, phase=Phase.SUBMITTING, resolve_failures=0), now)
        case InputUploaded(resource=resource, file_id=file_id):
            uploaded = {**run.uploaded, resource: file_id}
            input_file_id = file_id if resource == run.resource else None
            run = replace(run, uploaded=uploaded, input_file_id=input_file_id, resolve_failures=0)
            return _submit(run, now)
        case SubmitAnswered():
            return _submitted(replace(run, submit_failures=0), seen, now)
        case BatchChecked(batch=batch):
            # The run is Running while Azure has its batch; the batch's end becomes the run's once its results are in.
            run = replace(run, batch=batch, status=RunStatus.RUNNING, polls=run.polls + 1, failed_checks=0)
            return _watch(run, now)
        case CancelAnswered(batch=batch):
            return _watch(replace(run, batch=batch, cancel_sent=True, phase=Phase.CANCELLING), now)
        case ResultsCollected():
            collected = replace(run, results_collected=True, usage=seen.usage, estimated_cost=seen.estimated_cost)
            return _watch(collected, now)
        case UploadsDeleted():
            return replace(run, uploads_deleted=True), Finish()
        case TimerFired() | CancelArrived():
            if run.phase is Phase.RESOLVING:
                return _resolve(run, now)
            if run.phase in (Phase.SUBMITTING, Phase.QUOTA):
                return _submit(run, now)
            if isinstance(seen, CancelArrived) or run.phase is Phase.COLLECTING:
                return _watch(run, now)  # cancel the batch before looking again
            return run, run.check_step()
        case ActivityFailed(step=failed):
            return _after_failure(run, failed, now)

    raise ValueError(f"unknown observation {seen!r}")


def _resolve(run: BatchRun, now: datetime) -> tuple[BatchRun, Step]:
    """Check the Key Vault secret exists and pin its version (the value stays in the vault)."""
    if run.cancel_requested:
        return _finish(run, RunStatus.CANCELLED)
    if run.input_file_secret and not run.secret_version:
        return run, ResolveInput(run.run_id, run.input_file_secret)
    return _submit(replace(run, phase=Phase.SUBMITTING), now)


def _moved(run: BatchRun) -> BatchRun:
    """The run at the next place of its pool: that resource's deployment, and its upload of the input if any."""
    index = next((i for i, p in enumerate(run.places) if p["resource"] == run.resource), 0)
    place = run.places[(index + 1) % len(run.places)]
    return replace(
        run,
        resource=place["resource"],
        deployment=place["deployment"],
        monitor_url=place.get("monitorUrl", run.monitor_url),
        input_file_id=run.uploaded.get(place["resource"]),
        refused_here=run.refused_here + 1,
        phase=Phase.SUBMITTING,
    )


def _submit(run: BatchRun, now: datetime) -> tuple[BatchRun, Step]:
    """Submit exactly once; once the run is ending (cancel, deadline), only look for a batch it may have made."""
    # After a submit whose outcome stayed unknown, a batch of this run may exist: the run may end only once a last
    # look (no create) has found it or shown there is none, so no paid batch is left behind untracked.
    maybe_created = run.submit_failures > 0
    ending = run.cancel_requested or now >= _deadline(run)
    if ending and not maybe_created:
        if run.cancel_requested:
            return _finish(run, RunStatus.CANCELLED)
        return _finish(
            run,
            RunStatus.FAILED,
            Failure.of(
                "timeout",
                "The deployment's token quota stayed exhausted until the run's deadline; no batch was created.",
            ),
        )
    if run.staged_input and not run.input_file_id and not ending:
        return run, UploadInput(run.run_id, run.resource, run.staged_input, run.deployment)
    return run, run.submit_step(now, lookup_only=ending)


def _submitted(run: BatchRun, seen: SubmitAnswered, now: datetime) -> tuple[BatchRun, Step]:
    match seen.outcome:
        case SubmitOutcome.SUBMITTED | SubmitOutcome.REATTACHED:
            assert seen.batch is not None
            created = datetime.fromtimestamp(seen.batch.created_at, now.tzinfo) if seen.batch.created_at else now
            run = replace(
                run,
                batch=seen.batch,
                phase=Phase.POLLING,
                status=RunStatus.RUNNING,
                deadline=iso(deadline_for(created, run.completion_window)),
            )
            return _watch(run, now)
        case SubmitOutcome.QUOTA:
            if len(run.places) > 1 and run.refused_here + 1 < len(run.places):
                # Another deployment of the pool may have quota free: the shard moves there (nothing was created).
                return _submit(_moved(run), now)
            run = replace(run, phase=Phase.QUOTA, quota_waits=run.quota_waits + 1, refused_here=0)
            return _wait(run, now, QUOTA_BACKOFF.delay(run.quota_waits))
        case SubmitOutcome.CANCELLED | SubmitOutcome.NOT_CREATED:
            if run.cancel_requested:
                return _finish(run, RunStatus.CANCELLED)
            return _finish(
                run,
                RunStatus.FAILED,
                Failure.of("timeout", "The run reached its deadline before Azure accepted a batch; none was created."),
            )
        case SubmitOutcome.REJECTED:
            return _finish(run, RunStatus.FAILED, seen.refusal or Failure.of("rejected", "Azure refused the batch."))
    raise ValueError(f"unknown submit outcome {seen.outcome!r}")


def _watch(run: BatchRun, now: datetime, *, may_cancel: bool = True) -> tuple[BatchRun, Step]:
    """With the batch as last seen: finish, resubmit after a quota failure, cancel, give up, or wait to look."""
    batch = run.batch
    assert batch is not None
    failure = batch.failure()
    if failure and failure.code == "token_limit_exceeded" and not run.cancel_requested:
        # Where Azure checks quota only at validation the batch fails; its guidance is to submit again later. A
        # shard of a pool first tries the pool's other deployments (the failed batch holds nothing, costs nothing).
        run = replace(run, attempt=run.attempt + 1, batch=None, status=RunStatus.STARTING, cancel_sent=False)
        if len(run.places) > 1 and run.refused_here + 1 < len(run.places):
            return _submit(_moved(run), now)
        run = replace(run, phase=Phase.QUOTA, quota_waits=run.quota_waits + 1, refused_here=0)
        return _wait(run, now, QUOTA_BACKOFF.delay(run.quota_waits))
    if batch.is_terminal:
        if not run.results_collected and run.collect_failures < MAX_COLLECT_FAILURES:
            file_ids = [f for f in (batch.output_file_id, batch.error_file_id) if f]
            step = CollectResults(run.run_id, run.resource, file_ids, run.model, run.model_version)
            if run.input_blob:
                step = replace(
                    step,
                    output_blob=batch.output_blob,
                    error_blob=batch.error_blob,
                    completed=batch.completed or 0,
                )
            return replace(run, phase=Phase.COLLECTING), step
        return _finish(run, run_status(batch.status), failure)
    timed_out = now >= _deadline(run)
    if may_cancel and (run.cancel_requested or timed_out) and not run.cancel_sent:
        return run, run.cancel_step()
    if timed_out:
        still = "" if run.cancel_sent else " The cancel did not go through: the batch may still be running."
        return _finish(
            run,
            RunStatus.FAILED,
            Failure.of(
                "timeout",
                f"The batch did not finish within its completion window plus grace, so the run cancelled it.{still}",
            ),
        )
    return _wait(run, now, poll_delay(batch.poll_observation(now)))


def _after_failure(run: BatchRun, failed: type[Step], now: datetime) -> tuple[BatchRun, Step]:
    """An activity raised: try again after a backoff, or give up with a cause a user can act on."""
    if failed is ResolveInput:
        run = replace(run, resolve_failures=run.resolve_failures + 1)
        if run.resolve_failures >= MAX_RESOLVE_FAILURES:
            return _finish(
                run,
                RunStatus.FAILED,
                Failure.of(
                    "input_secret_unavailable",
                    f"Key Vault did not answer when the run read secret '{run.input_file_secret}' "
                    f"({run.resolve_failures} tries).",
                    param="inputFileSecret",
                ),
            )
        return _wait(run, now, ACTIVITY_BACKOFF.delay(run.resolve_failures))
    if failed is Submit:
        # Even a run that is ending tries again: another copy of its submit may still be creating the batch.
        run = replace(run, submit_failures=run.submit_failures + 1)
        if run.submit_failures >= MAX_SUBMIT_FAILURES:
            look_for = (
                f"look for a batch whose input_blob is {run.input_blob}"
                if run.input_blob
                else f"look for a batch whose metadata has runId={run.run_id}"
            )
            return _finish(
                run,
                RunStatus.FAILED,
                Failure.of(
                    "submit_unknown",
                    f"Azure OpenAI did not answer whether the batch was created ({run.submit_failures} tries); "
                    f"{look_for}.",
                ),
            )
        return _wait(run, now, SUBMIT_BACKOFF.delay(run.submit_failures))
    if failed is UploadInput:  # nothing was created: a later try uploads again
        run = replace(run, resolve_failures=run.resolve_failures + 1)
        if run.resolve_failures >= MAX_RESOLVE_FAILURES:
            return _finish(
                run,
                RunStatus.FAILED,
                Failure.of(
                    "upload_failed",
                    f"The shard's input could not be uploaded to resource '{run.resource}' "
                    f"({run.resolve_failures} tries).",
                ),
            )
        return _wait(run, now, ACTIVITY_BACKOFF.delay(run.resolve_failures))
    if failed is CollectResults:  # Azure's files may be back in a moment; the run ends without them otherwise
        run = replace(run, collect_failures=run.collect_failures + 1)
        if run.collect_failures >= MAX_COLLECT_FAILURES:
            return _watch(run, now)
        return _wait(run, now, ACTIVITY_BACKOFF.delay(run.collect_failures))
    if failed is DeleteUploads:  # a file left behind costs nothing: the run ends all the same
        return replace(run, uploads_deleted=True), Finish()
    if failed is CancelBatch:  # look again later, and ask again after that
        return _watch(run, now, may_cancel=False)
    if failed is Check:
        run = replace(run, failed_checks=run.failed_checks + 1)
        if run.failed_checks >= MAX_FAILED_CHECKS:
            batch_id = run.batch.id if run.batch else "unknown"
            return _finish(
                run,
                RunStatus.FAILED,
                Failure.of(
                    "status_unavailable",
                    "Azure OpenAI did not report the batch's status for too long; the batch may still be running "
                    f"(id {batch_id}).",
                ),
            )
        return _watch(run, now)
    raise ValueError(f"no activity for {failed!r}")


def _wait(run: BatchRun, now: datetime, seconds: float) -> tuple[BatchRun, Step]:
    """A durable timer `seconds` from now, never past the deadline (the run must act on it in time)."""
    until = min(now + timedelta(seconds=seconds), _deadline(run))
    return run, Wait(iso(max(until, now)))


def _batch_may_run(run: BatchRun) -> bool:
    """Whether the run's batch may still be running (the run gave up on it): its input file must then stay."""
    return run.batch is not None and not run.batch.is_terminal


def _finish(run: BatchRun, status: RunStatus, failure: Failure | None = None) -> tuple[BatchRun, Step]:
    return replace(run, status=status, failure=failure if failure is not None else run.failure), Finish()


def _deadline(run: BatchRun) -> datetime:
    assert run.deadline is not None
    return parse_iso(run.deadline)
