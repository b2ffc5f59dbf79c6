"""A batch run split into shards: any size, any quota, several resources, failed requests tried again.

A run started with an input the app built is a *batch set*: its input is cut into shards, each within one file's
limits (requests, bytes) and within one deployment's enqueued-token quota (by estimated tokens), and each shard is a
batch run of its own (`<run id>::s<n>`, a child orchestration with its own exactly-once submit). The set only
coordinates, as one pure decision like the batch run's: it plans the shards, starts them where quota is free (the
pool's deployments, by configured enqueued-token limits), watches them on durable timers, cancels them when asked,
plans a follow-up round of the requests that failed for transient reasons, and merges the shards' results.

Its history stays bounded whatever the number of shards: shards are started and watched by activities, never awaited
one by one, and the set continues as new like a batch run does.

Outcome rules: the set is Cancelled when a user cancelled it; Success when every shard's last round ended Success
(requests may still have failed for good, as in one batch: they are counted and listed); otherwise Failed, naming the
shards that failed, with the results of the others readable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.batch_run import (
    ACTIVITY_BACKOFF,
    EPISODE_START_EVENTS,
    SEEN,
    STEP_EVENTS,
    STEPS,
    USAGE_FIELDS,
    ActivityFailed,
    Backoff,
    Began,
    CancelArrived,
    ContinueAsNew,
    Finish,
    Indexed,
    IndexRun,
    Phase,
    ResultsCollected,
    Seen,
    Step,
    TimerFired,
    Wait,
    over_budget,
    step_from_dict,
    step_to_dict,
)
from shared.runs import FROM_INPUT, Failure, RunId, RunStatus, iso

WATCH_BACKOFF = Backoff(30.0, 1.5, 15 * 60.0)  # between looks at the shards: soon at first, then with their pace
MAX_STARTS_PER_STEP = 50  # shards started by one activity: keeps each step's input small
MAX_STEP_FAILURES = 10  # an activity of the set failing in a row: then the set fails, saying which
DEFAULT_MAX_REQUEST_RETRIES = 2


class SetPhase(StrEnum):
    PLANNING = "planning"  # cutting the input into shards
    RUNNING = "running"  # shards start where quota is free and are watched
    RETRYING = "retrying"  # planning a follow-up round of the requests that failed for transient reasons
    COLLECTING = "collecting"  # merging the shards' results
    DONE = "done"


@dataclass
class Shard:
    """One shard as the set knows it: its input, where it runs, and what its run last reported."""

    index: int
    round: int
    staged_input: str
    requests: int
    estimated_tokens: int
    status: str = "pending"  # pending, running, ended
    run_status: str | None = None  # the shard run's status once it is known
    resource: str | None = None
    batch_id: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    usage: dict[str, int] | None = None
    failure: dict[str, Any] | None = None
    retried_by: int | None = None  # the follow-up shard that took its transiently failed requests

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Shard:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self, run_id: RunId) -> dict[str, Any]:
        """The shard as the run resource lists it (a shard not started yet is Starting, like a run Azure has not
        accepted yet)."""
        return {
            "id": str(run_id.shard_of(self.index)),
            "round": self.round,
            "status": self.run_status or (RunStatus.STARTING if self.status == "pending" else RunStatus.RUNNING).value,
            "resource": self.resource,
            "requests": self.requests,
            "runId": self.batch_id,
            "inputFileId": self.input_file_id,
            "outputFileId": self.output_file_id,
            "errorFileId": self.error_file_id,
        }


@dataclass
class BatchSet:
    """Everything a batch set knows: the orchestration's input, carried across continue-as-new."""

    run_id: str
    resource: str
    external_id: str
    deployment: str
    endpoint: str
    completion_window: str
    requested_at: str
    monitor_url: str
    input_id: str
    staged_input: str
    requests: int
    estimated_tokens: int
    model: str = ""
    model_version: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    places: list[dict[str, Any]] = field(default_factory=list)  # [{resource, deployment, monitorUrl, tokenLimit}]
    max_request_retries: int = DEFAULT_MAX_REQUEST_RETRIES
    phase: SetPhase = SetPhase.PLANNING
    status: RunStatus = RunStatus.STARTING
    shards: list[Shard] = field(default_factory=list)
    round: int = 0
    watches: int = 0  # looks at the shards since one last changed
    step_failures: int = 0
    cancel_requested: bool = False
    cancel_sent: bool = False
    failure: Failure | None = None
    usage: dict[str, int] | None = None
    estimated_cost: dict[str, Any] | None = None
    results_collected: bool = False
    next_check_at: str | None = None
    episode_events: int = EPISODE_START_EVENTS
    resume: dict[str, Any] | None = None
    indexed_status: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchSet:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if "phase" in values:
            values["phase"] = SetPhase(values["phase"])
        if "status" in values:
            values["status"] = RunStatus(values["status"])
        values["shards"] = [Shard.from_dict(s) for s in values.get("shards") or []]
        if values.get("failure"):
            values["failure"] = Failure.from_dict(values["failure"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"], data["status"] = self.phase.value, self.status.value
        data["failure"] = self.failure.to_dict() if self.failure else None
        return data

    def shard_id(self, index: int) -> str:
        return str(RunId.parse(self.run_id).shard_of(index))

    def resource_view(self, *, with_shards: bool = False) -> dict[str, Any]:
        """The run resource: the shards summed (the list of shards only where it may be long: the final output)."""
        counted = [s for s in self.shards if s.retried_by is None]  # a follow-up's numbers replace its source's
        total = sum(s.requests for s in self.shards if s.round == 0)
        completed = sum(s.completed for s in self.shards)
        failed = sum(s.failed for s in counted)
        outputs: dict[str, Any] = {
            "output_file_id": None,
            "error_file_id": None,
            "request_counts_total": total if self.shards else None,
            "request_counts_completed": completed if self.shards else None,
            "request_counts_failed": failed if self.shards else None,
        }
        outputs |= self.usage or dict.fromkeys(USAGE_FIELDS)
        outputs["estimatedCost"] = self.estimated_cost
        if with_shards:
            run_id = RunId.parse(self.run_id)
            outputs["shards"] = [s.summary(run_id) for s in self.shards]
        done = completed + failed
        return {
            "id": self.run_id,
            "runId": None,
            "jobId": self.external_id,
            "jobType": "batch",
            "resource": self.resource,
            "status": self.status.value,
            "azureStatus": None,
            "phase": self.phase.value,
            "requestedAt": self.requested_at,
            "startedAt": None,
            "endedAt": None,
            "outputs": outputs,
            "failure": self.failure.to_dict() if self.failure else None,
            "monitorUrl": self.monitor_url,
            "progress": {
                "total": total,
                "completed": completed,
                "failed": failed,
                "percent": round(100 * done / total, 1),
            }
            if total
            else None,
            "quotaAttempts": 0,
            "nextCheckAt": self.next_check_at,
            "inputId": self.input_id,
            "estimatedTokens": self.estimated_tokens,
            "shardCount": len(self.shards),
            "round": self.round,
        }

    def custom_status(self) -> dict[str, Any]:
        """The run resource as the orchestration's custom status: without what the orchestration's input holds."""
        return {name: value for name, value in self.resource_view().items() if name not in FROM_INPUT}

    def view_with_status(self, custom_status: dict[str, Any]) -> dict[str, Any]:
        """The run resource from the custom status the set published, this being the orchestration's input."""
        return self.resource_view() | custom_status

    def child(self, shard: Shard, order: list[dict[str, Any]]) -> dict[str, Any]:
        """The batch run of a shard, as its orchestration's input: it runs at the first place of `order` and may
        move to the others when that one refuses for quota."""
        from shared.batch_run import BatchRun

        first = order[0]
        run = BatchRun(
            run_id=self.shard_id(shard.index),
            resource=first["resource"],
            external_id=self.external_id,
            deployment=first["deployment"],
            endpoint=self.endpoint,
            completion_window=self.completion_window,
            requested_at=self.requested_at,
            monitor_url=first.get("monitorUrl", self.monitor_url),
            metadata=dict(self.metadata),
            input_id=self.input_id,
            estimated_tokens=shard.estimated_tokens,
            model=self.model,
            model_version=self.model_version,
            parent_id=self.run_id,
            staged_input=shard.staged_input,
            requests=shard.requests,
            places=[{k: str(v) for k, v in p.items() if k != "tokenLimit"} for p in order],
        )
        return run.to_dict()


# What the set observes, and what it does ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ShardsPlanned(Seen):
    shards: list[dict[str, Any]]  # [{index, round, staged_input, requests, estimated_tokens}]
    refusal: Failure | None = None  # why the input was not cut (it needs more than MAX_SHARDS): the set fails so


@dataclass(frozen=True, kw_only=True)
class ShardsStarted(Seen):
    indexes: list[int]


@dataclass(frozen=True, kw_only=True)
class ShardsObserved(Seen):
    """What each watched shard's run reports: its status, place, batch, counts, usage, failure."""

    shards: list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class ShardsCancelled(Seen):
    pass


@dataclass(frozen=True)
class PlanShards(Step):
    run_id: str
    staged_input: str
    token_budget: int | None  # the most estimated tokens one shard may hold (the smallest configured quota)


@dataclass(frozen=True)
class StartShards(Step):
    run_id: str
    children: list[dict[str, Any]]  # each shard's batch run


@dataclass(frozen=True)
class WatchShards(Step):
    run_id: str
    indexes: list[int]


@dataclass(frozen=True)
class CancelShards(Step):
    run_id: str
    indexes: list[int]


@dataclass(frozen=True)
class PlanRetries(Step):
    """Cut a follow-up round from the shards' transiently failed requests (one follow-up per shard that has any)."""

    run_id: str
    round: int
    shards: list[dict[str, Any]]  # [{index, staged_input}] of the round that ended
    next_index: int


@dataclass(frozen=True)
class MergeResults(Step):
    run_id: str
    shards: list[dict[str, Any]]  # [{id, round, superseded}] in order
    max_round: int
    model: str
    model_version: str


for _kind in (PlanShards, StartShards, WatchShards, CancelShards, PlanRetries, MergeResults):
    STEPS[_kind.__name__] = _kind
for _seen in (ShardsPlanned, ShardsStarted, ShardsObserved, ShardsCancelled):
    SEEN[_seen.__name__] = _seen


# The decision ---------------------------------------------------------------------------------------------------


# A set's first round holds at most this many shards (each a child orchestration, an upload and a batch): its state
# and history are measured bounded up to here (tests/test_batch_sets.py). An input that needs more is refused.
MAX_SHARDS = 1_000


def decide_set(run: BatchSet, seen: Seen, now: datetime) -> tuple[BatchSet, Step]:
    """The set's next state and step, given what was just seen at `now` (the orchestration's clock)."""
    run = replace(run)  # a shallow copy: shards are replaced, never changed in place
    if seen.cancel_requested and not run.cancel_requested:
        run.cancel_requested = True
    if isinstance(seen, ActivityFailed) and seen.step is IndexRun:
        seen = Indexed(status=run.status.value, cancel_requested=seen.cancel_requested)
    run.episode_events = EPISODE_START_EVENTS if isinstance(seen, Began) else run.episode_events + _events_of(seen)
    if isinstance(seen, Began | Indexed) and run.resume is not None:
        step = step_from_dict(run.resume)
        run.resume = None
        if isinstance(seen, Indexed):
            run.indexed_status = seen.status
    else:
        run.next_check_at = None
        run, step = _next(run, seen, now)
    if isinstance(step, Finish):
        run.phase, run.next_check_at = SetPhase.DONE, None
    elif isinstance(step, Wait):
        run.next_check_at = step.until
    if run.indexed_status != run.status.value:
        run.resume = step_to_dict(step)
        step = IndexRun(run.run_id, iso(now), run.resource_view(with_shards=isinstance(step, Finish)))
    if over_budget(run.episode_events, step):
        run.resume = step_to_dict(step)  # a fresh episode begins with this step
        return run, ContinueAsNew()
    if not isinstance(step, Finish | ContinueAsNew):
        run.episode_events += STEP_EVENTS
    return run, step


def _events_of(seen: Seen) -> int:
    return 3 if isinstance(seen, CancelArrived) else 0


def _next(run: BatchSet, seen: Seen, now: datetime) -> tuple[BatchSet, Step]:
    match seen:
        case ShardsPlanned(refusal=Failure() as refusal):
            return _finish(run, RunStatus.FAILED, refusal)
        case ShardsPlanned(shards=planned):
            new = [Shard.from_dict(s) for s in planned]
            if run.phase is SetPhase.RETRYING and not new:  # no transient failures after all: nothing to retry
                run.phase = SetPhase.COLLECTING
                return run, _merge_step(run)
            if run.phase is SetPhase.RETRYING:  # each follow-up names the shard whose failed requests it takes
                retried = {int(s["source"]): int(s["index"]) for s in planned}
                run.shards = [replace(s, retried_by=retried.get(s.index, s.retried_by)) for s in run.shards] + new
                run.round += 1
            else:
                run.shards = new
            run.phase, run.step_failures = SetPhase.RUNNING, 0
            return _schedule(run, now, look=False)
        case ShardsStarted(indexes=started):
            chosen = set(started)
            run.shards = [replace(s, status="running") if s.index in chosen else s for s in run.shards]
            run.step_failures, run.watches = 0, 0
            return _schedule(run, now, look=False)
        case ShardsObserved(shards=reports):
            return _observed(run, reports, now)
        case ShardsCancelled():
            run.cancel_sent, run.step_failures = True, 0
            return _schedule(run, now, look=False)
        case ResultsCollected():
            run.usage, run.estimated_cost, run.results_collected = seen.usage, seen.estimated_cost, True
            return _conclude(run)
        case ActivityFailed(step=failed):
            run.step_failures += 1
            if run.step_failures >= MAX_STEP_FAILURES:
                return _finish(
                    run,
                    RunStatus.FAILED,
                    Failure.of(
                        "set_step_failed",
                        f"The run could not {_STEP_PURPOSE.get(failed.__name__, 'go on')} ({run.step_failures} tries).",
                    ),
                )
            return _wait(run, now, ACTIVITY_BACKOFF.delay(run.step_failures))
        case Began() | TimerFired():
            return _resume(run, now)
        case CancelArrived():
            return _resume(run, now, look=False)
    raise ValueError(f"unknown observation {seen!r}")


_STEP_PURPOSE = {
    "PlanShards": "cut its input into shards",
    "StartShards": "start its shards",
    "WatchShards": "read its shards' status",
    "CancelShards": "cancel its shards",
    "PlanRetries": "plan the retries of its failed requests",
    "MergeResults": "merge its shards' results",
}


def _resume(run: BatchSet, now: datetime, *, look: bool = True) -> tuple[BatchSet, Step]:
    """From the state alone: what the phase calls for next (`look`: the shards are due a look)."""
    if run.phase is SetPhase.PLANNING:
        if run.cancel_requested:
            return _finish(run, RunStatus.CANCELLED)
        return run, PlanShards(run.run_id, run.staged_input, _token_budget(run))
    if run.phase is SetPhase.RETRYING:
        return _retry(run)
    if run.phase is SetPhase.COLLECTING:
        return run, _merge_step(run)
    return _schedule(run, now, look=look)


def _token_budget(run: BatchSet) -> int | None:
    return token_budget(run.places)


def token_budget(places: list[dict[str, Any]]) -> int | None:
    """The most estimated tokens one shard may hold: the smallest configured enqueued-token limit of the places it
    may run (None: no limit configured, shards are cut by a file's limits alone)."""
    limits = [int(p["tokenLimit"]) for p in places if p.get("tokenLimit")]
    return min(limits) if limits else None


def too_many_shards(at_least: int, budget: int | None) -> str:
    """Why a set will not cut its input into `at_least` shards or more (more than MAX_SHARDS): a failure's message
    (code `too_many_shards`), or the reason a start request is refused."""
    limit = f" at the token limit of {budget:,} (the smallest tokenLimit where the job may run)" if budget else ""
    return (
        f"The input needs at least {at_least:,} shards{limit}; a run takes at most {MAX_SHARDS:,}. Split the input, "
        "or raise the deployments' enqueued-token quota and their tokenLimits."
    )


def _in_flight(run: BatchSet) -> dict[str, int]:
    """What the running shards' batches hold of each deployment's quota, by resource (as `_holding` expects)."""
    held: dict[str, int] = {}
    scale = _calibration(run)
    for shard in run.shards:
        if shard.status == "running" and shard.resource:
            held[shard.resource] = held.get(shard.resource, 0) + _holding(shard, scale)
    return held


# Azure's own count of a shard's tokens may come out this much above what the shards that ended counted.
CALIBRATION_MARGIN = 1.1


def _calibration(run: BatchSet) -> float:
    """How much of its estimate a shard is expected to hold of a deployment's quota: what the requests of the shards
    that ended counted (Azure's `prompt_tokens`) against their estimate, with CALIBRATION_MARGIN, at most 1. The
    estimate errs high on purpose (about twice on English text), which alone would leave half the quota unused; a
    shard placed by too small a figure is refused by Azure and moves on, as with any refusal."""
    counted = estimated = 0.0
    for shard in run.shards:
        prompt_tokens = (shard.usage or {}).get("prompt_tokens")
        if shard.status == "ended" and prompt_tokens and shard.completed and shard.requests:
            counted += prompt_tokens
            estimated += shard.estimated_tokens * shard.completed / shard.requests
    return min(1.0, counted / estimated * CALIBRATION_MARGIN) if estimated else 1.0


def _holding(shard: Shard, scale: float) -> int:
    return math.ceil(shard.estimated_tokens * scale)


def _schedule(run: BatchSet, now: datetime, *, look: bool) -> tuple[BatchSet, Step]:
    """Cancel when asked, start pending shards where quota is free, else watch the running ones: a look now when
    `look`, else a wait first."""
    running = [s.index for s in run.shards if s.status == "running"]
    if run.cancel_requested:
        # Shards not started yet never will be; the running ones are asked to cancel, then watched to their end.
        run.shards = [
            replace(s, status="ended", run_status=RunStatus.CANCELLED.value) if s.status == "pending" else s
            for s in run.shards
        ]
        if running and not run.cancel_sent:
            return run, CancelShards(run.run_id, running)
        if not running:
            return _after_round(run)
        return _watch(run, now, running, look)
    pending = [s for s in run.shards if s.status == "pending"]
    held, scale = _in_flight(run), _calibration(run)
    children, placed = [], []
    for shard in pending:
        order = _places_for(run, shard, held, scale)
        if order is None:
            continue
        held[order[0]["resource"]] = held.get(order[0]["resource"], 0) + _holding(shard, scale)
        children.append(run.child(shard, order))
        placed.append((shard.index, order[0]["resource"]))
        if len(children) == MAX_STARTS_PER_STEP:
            break
    if children:
        where = dict(placed)
        run.shards = [replace(s, resource=where[s.index]) if s.index in where else s for s in run.shards]
        return run, StartShards(run.run_id, children)
    if running:
        return _watch(run, now, running, look)
    if pending:  # nothing fits anywhere right now (another run holds the quota): the first shard goes anyway
        shard = pending[0]
        order = _places_for(run, shard, {}, scale) or run.places
        run.shards = [replace(s, resource=order[0]["resource"]) if s.index == shard.index else s for s in run.shards]
        return run, StartShards(run.run_id, [run.child(shard, order)])
    return _after_round(run)


def _places_for(run: BatchSet, shard: Shard, held: dict[str, int], scale: float) -> list[dict[str, Any]] | None:
    """The pool's places in the order a shard tries them: the one with most quota free first, except that a
    follow-up shard goes elsewhere than where its requests just failed when another place has room (None when no
    place has room for it now). A place without a configured limit always has room."""

    def free(place: dict[str, Any]) -> float:
        limit = place.get("tokenLimit")
        return float("inf") if not limit else int(limit) - held.get(place["resource"], 0)

    failed_at = {s.resource for s in run.shards if s.retried_by == shard.index}
    needs = _holding(shard, scale)
    roomy = [p for p in run.places if free(p) >= needs]
    if not roomy:
        return None
    first = min(roomy, key=lambda p: (p["resource"] in failed_at, -free(p)))
    return [first] + [p for p in sorted(run.places, key=lambda p: -free(p)) if p is not first]


def _watch(run: BatchSet, now: datetime, indexes: list[int], look: bool) -> tuple[BatchSet, Step]:
    if look:
        return run, WatchShards(run.run_id, indexes)
    return _wait(run, now, WATCH_BACKOFF.delay(run.watches + 1))


def _observed(run: BatchSet, reports: list[dict[str, Any]], now: datetime) -> tuple[BatchSet, Step]:
    by_index = {int(r["index"]): r for r in reports}
    changed = False
    shards = []
    for shard in run.shards:
        report = by_index.get(shard.index)
        if report is None:
            shards.append(shard)
            continue
        ended = _ended(report)
        updated = replace(
            shard,
            status="ended" if ended else shard.status,
            run_status=report.get("status"),
            resource=report.get("resource") or shard.resource,
            batch_id=report.get("batchId"),
            input_file_id=report.get("inputFileId"),
            output_file_id=report.get("outputFileId"),
            error_file_id=report.get("errorFileId"),
            completed=int(report.get("completed") or 0),
            failed=int(report.get("failed") or 0),
            usage=report.get("usage"),
            failure=report.get("failure"),
        )
        changed = changed or _stage_of(updated) != _stage_of(shard)
        shards.append(updated)
    run.shards = shards
    run.step_failures = 0
    run.watches = 0 if changed else run.watches + 1  # the looks space out while no shard moves on
    if not any(s.status == "running" for s in run.shards) and not any(s.status == "pending" for s in run.shards):
        return _after_round(run)
    if run.status is RunStatus.STARTING and any(s.run_status == RunStatus.RUNNING for s in run.shards):
        run.status = RunStatus.RUNNING
    return _schedule(run, now, look=False)


def _stage_of(shard: Shard) -> tuple[Any, ...]:
    """Where a shard is in its life. Its progress counts are left out: they change at each of its own status
    checks, and a look at the set after each would keep the looks at their shortest."""
    return shard.status, shard.run_status, shard.resource, shard.batch_id


def _ended(report: dict[str, Any]) -> bool:
    """Whether a shard's run has ended: its status is final and it is done (its uploads deleted, its index written)."""
    status = report.get("status")
    return status in {s.value for s in RunStatus if s.is_terminal} and report.get("phase") == Phase.DONE


def _after_round(run: BatchSet) -> tuple[BatchSet, Step]:
    """Every shard of the round has ended: retry what failed for transient reasons, or merge the results."""
    if not run.cancel_requested and run.round < run.max_request_retries and _retryable(run):
        run.phase = SetPhase.RETRYING
        return _retry(run)
    run.phase = SetPhase.COLLECTING
    return run, _merge_step(run)


def _retryable(run: BatchSet) -> list[Shard]:
    """Shards of the current round that ended with failed or unfinished requests (the activity keeps only the
    transient ones: 429, 5xx, time-outs, expiry, and cancellation a user did not ask for)."""
    return [
        s
        for s in run.shards
        if s.round == run.round and s.status == "ended" and s.retried_by is None and (s.completed < s.requests)
    ]


def _retry(run: BatchSet) -> tuple[BatchSet, Step]:
    shards = [{"index": s.index, "staged_input": s.staged_input, "id": run.shard_id(s.index)} for s in _retryable(run)]
    next_index = max((s.index for s in run.shards), default=-1) + 1
    return run, PlanRetries(run.run_id, run.round, shards, next_index)


def _merge_step(run: BatchSet) -> MergeResults:
    shards = [
        {"id": run.shard_id(s.index), "round": s.round, "superseded": s.retried_by is not None} for s in run.shards
    ]
    return MergeResults(run.run_id, shards, run.round, run.model, run.model_version)


def _conclude(run: BatchSet) -> tuple[BatchSet, Step]:
    """The set's outcome by its rules (the module's docstring)."""
    if run.cancel_requested:
        return _finish(run, RunStatus.CANCELLED)
    last = [s for s in run.shards if s.retried_by is None]
    failed = [s for s in last if s.run_status != RunStatus.SUCCESS]
    if not failed:
        return _finish(run, RunStatus.SUCCESS)
    codes = {(s.failure or {}).get("code") for s in failed}
    code = codes.pop() if len(codes) == 1 and None not in codes else "shards_failed"
    names = ", ".join(f"s{s.index}" for s in failed[:10]) + (" …" if len(failed) > 10 else "")
    return _finish(
        run,
        RunStatus.FAILED,
        Failure.of(
            str(code),
            f"{len(failed)} of {len(last)} shards did not succeed ({names}); the results of the others are readable.",
        ),
    )


def _wait(run: BatchSet, now: datetime, seconds: float) -> tuple[BatchSet, Step]:
    return run, Wait(iso(now + timedelta(seconds=seconds)))


def _finish(run: BatchSet, status: RunStatus, failure: Failure | None = None) -> tuple[BatchSet, Step]:
    run.status = status
    if failure is not None:
        run.failure = failure
    return run, Finish()
