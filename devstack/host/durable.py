"""Durable Functions: orchestration episodes, activities, durable timers and the client operations, on SQLite.

An orchestration instance advances in episodes. Each episode takes the instance's due messages (ExecutionStarted,
activity and sub-orchestration results, fired timers, raised events), hands the Python SDK the history with those
appended (after an OrchestratorStarted stamped with emulated time), turns the actions it returns into new history
and new work, and commits all of it in one transaction. Episodes of one instance never overlap; activities run on
a pool of `activity_concurrency` workers, at least once (again after a crash) but recorded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.functions import meta
from azure.functions._durable_functions import OrchestrationContext
from azure.functions.durable_functions import ActivityTriggerConverter

from devstack.clock import VirtualClock
from devstack.host.functions import FunctionDef, invoke
from devstack.host.history import RUNNING, TERMINAL, EventType, OrchestrationStatus, event, iso, parse_time
from devstack.host.replay import ReplayError, ReplayResult, ShimReplay, function_missing
from devstack.host.store import ActivityItem, Instance, Message, Store

log = logging.getLogger("devstack.host")

OUT_OF_PROC_DATA = "$OutOfProcData$:"
MAX_INSTANCE_ID = 256
CONTROL_KINDS = (EventType.ExecutionTerminated, EventType.ExecutionResumed)
# What the extension tells the SDK about timers on Azure Storage (longer timers are split by the SDK).
MAXIMUM_SHORT_TIMER = "6.00:00:00"
LONG_TIMER_INTERVAL = "3.00:00:00"


class Conflict(Exception):
    """An instance with this id is still running (HTTP 409)."""


class BadRequest(Exception):
    """The request cannot be carried out as given (HTTP 400)."""


@dataclass
class Episode:
    instance: Instance
    past: list[dict[str, Any]]
    new: list[dict[str, Any]]
    consumed: list[int]
    clear_history: bool
    timestamp: float
    definition: FunctionDef | None
    outcome: tuple[str, Any] = ("", None)
    duration_ms: float = 0.0


@dataclass
class Stats:
    """Counters since start, shown by GET /admin/host/status."""

    episodes: int = 0
    activity_runs: int = 0
    concurrent_activities: int = 0


class Durable:
    def __init__(
        self,
        store: Store,
        clock: VirtualClock,
        functions: list[FunctionDef],
        *,
        task_hub: str,
        activity_concurrency: int,
    ) -> None:
        self.store = store
        self.clock = clock
        self.task_hub = task_hub
        self.orchestrators = {f.durable_name: f for f in functions if f.kind == "orchestrator" and not f.problem}
        self.activities = {f.durable_name: f for f in functions if f.kind == "activity" and not f.problem}
        self.activity_concurrency = max(1, activity_concurrency)
        self.orchestrator_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="orchestrator")
        self.activity_pool = ThreadPoolExecutor(max_workers=self.activity_concurrency, thread_name_prefix="activity")
        self.wake = asyncio.Event()
        self.activity_wake = asyncio.Event()
        self.busy_instances: set[str] = set()
        self.busy_activities: set[int] = set()
        self.failures: dict[str, float] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        # Gives an activity's durableClient input binding (as the extension does for any function): set by the server.
        self.client_binding: Callable[[str | None], str] | None = None
        self.stopping = False
        self.closed = False
        self.stats = Stats()
        self._last_now = 0.0

    # time ---------------------------------------------------------------------------------------------------------
    def now(self) -> float:
        """Emulated time, never going backwards within this process."""
        self._last_now = max(self._last_now, self.clock.now())
        return self._last_now

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # client operations (HTTP API and the durable client binding) ----------------------------------------------------
    def check_instance_id(self, instance_id: str) -> None:
        if instance_id.startswith("@"):
            raise BadRequest("Orchestration instance ids must not start with @.")
        if any(c in "/\\?#" or ord(c) < 32 or ord(c) == 127 for c in instance_id):
            raise BadRequest("Orchestration instance ids must not contain /, \\, #, ?, or control characters.")
        if len(instance_id) > MAX_INSTANCE_ID:
            raise BadRequest(f"Instance ID lengths must not exceed {MAX_INSTANCE_ID} characters.")

    def start(
        self, name: str, instance_id: str | None, input_text: str | None, parent: dict[str, Any] | None = None
    ) -> str:
        """Creates (or replaces a finished) instance, Pending until its first episode. Conflict while one runs."""
        if name not in self.orchestrators:
            raise BadRequest(function_missing(name, "orchestrator", list(self.orchestrators)))
        instance_id = instance_id or uuid.uuid4().hex
        self.check_instance_id(instance_id)
        with self.store.transaction():
            existing = self.store.get_instance(instance_id)
            if existing is not None and existing.status in RUNNING:
                raise Conflict(f"An Orchestration instance with the status {existing.status} already exists.")
            self._create(instance_id, name, input_text, parent, self.now())
        self.wake.set()
        return instance_id

    def _create(
        self, instance_id: str, name: str, input_text: str | None, parent: dict[str, Any] | None, now: float
    ) -> None:
        self.store.delete_instance(instance_id)
        execution_id = uuid.uuid4().hex
        self.store.put_instance(
            Instance(instance_id, execution_id, name, "Pending", input_text, None, None, now, now, parent)
        )
        self.store.add_message(
            instance_id,
            execution_id,
            self._execution_started(instance_id, execution_id, name, input_text, parent, now),
            now,
        )

    @staticmethod
    def _execution_started(
        instance_id: str,
        execution_id: str,
        name: str,
        input_text: str | None,
        parent: dict[str, Any] | None,
        now: float,
    ) -> dict[str, Any]:
        parent_instance = None
        if parent:
            parent_instance = {
                "Name": parent["name"],
                "OrchestrationInstance": {"InstanceId": parent["instance_id"], "ExecutionId": parent["execution_id"]},
                "TaskScheduleId": parent["task_id"],
                "Version": "",
            }
        return event(
            EventType.ExecutionStarted,
            now,
            OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
            ParentInstance=parent_instance,
            Name=name,
            Version="",
            Input=input_text,
            Tags=None,
        )

    def raise_event(self, instance_id: str, name: str, data_text: str | None) -> int:
        instance = self.store.get_instance(instance_id)
        if instance is None:
            return 404
        if instance.status in TERMINAL:
            return 410
        with self.store.transaction():
            self.store.add_message(
                instance_id, None, event(EventType.EventRaised, self.now(), Name=name, Input=data_text), self.now()
            )
        self.wake.set()
        return 202

    def _control(self, instance_id: str, kind: EventType, **fields: Any) -> int:
        instance = self.store.get_instance(instance_id)
        if instance is None:
            return 404
        if instance.status in TERMINAL:
            return 410
        with self.store.transaction():
            self.store.add_message(instance_id, None, event(kind, self.now(), **fields), self.now())
        self.wake.set()
        return 202

    def terminate(self, instance_id: str, reason: str | None) -> int:
        return self._control(instance_id, EventType.ExecutionTerminated, Input=reason)

    def suspend(self, instance_id: str, reason: str | None) -> int:
        return self._control(instance_id, EventType.ExecutionSuspended, Reason=reason)

    def resume(self, instance_id: str, reason: str | None) -> int:
        return self._control(instance_id, EventType.ExecutionResumed, Reason=reason)

    def restart(self, instance_id: str, new_instance_id: bool) -> str:
        instance = self.store.get_instance(instance_id)
        if instance is None:
            raise BadRequest("InstanceId does not match a valid orchestration instance.")
        started = next(
            (e for e in self.store.history(instance_id) if e["EventType"] == EventType.ExecutionStarted), None
        )
        input_text = started.get("Input") if started else instance.input
        return self.start(instance.name, uuid.uuid4().hex if new_instance_id else instance_id, input_text)

    def purge(self, instance_id: str) -> int:
        with self.store.transaction():
            instance = self.store.get_instance(instance_id)
            if instance is None:
                return 0
            self.store.delete_instance(instance_id)
        return 1

    def purge_where(self, created_from: float, created_to: float, statuses: list[str] | None) -> int:
        with self.store.transaction():
            found = self.store.query_instances(statuses=statuses, created_from=created_from, created_to=created_to)
            for instance in found:
                self.store.delete_instance(instance.instance_id)
        return len(found)

    # the orchestration dispatcher -------------------------------------------------------------------------------------
    async def run(self) -> None:
        await asyncio.gather(self._orchestration_loop(), self._activity_loop())

    async def _orchestration_loop(self) -> None:
        while not self.stopping:
            self.wake.clear()
            now = self.now()
            retry_at = {i for i, t in self.failures.items() if t > time.monotonic()}
            for instance_id in self.store.ready_instances(now, self.busy_instances | retry_at, CONTROL_KINDS):
                self.busy_instances.add(instance_id)
                self._spawn(self._episode(instance_id))
            timeout = 0.5
            upcoming = self.store.next_due(now)
            if upcoming is not None:
                timeout = min(timeout, max(0.001, self.clock.real_delay(upcoming - now) + 0.001))
            if retry_at:
                timeout = min(timeout, 0.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def _episode(self, instance_id: str) -> None:
        try:
            episode = self._prepare(instance_id)
            if episode is not None:
                if episode.definition is not None:
                    loop = asyncio.get_running_loop()
                    episode.outcome = await loop.run_in_executor(
                        self.orchestrator_pool, self._run_orchestrator, episode
                    )
                self._finish(episode)
            self.failures.pop(instance_id, None)
        except Exception:
            log.exception("the host failed processing orchestration %s; it will try again", instance_id)
            self.failures[instance_id] = time.monotonic() + 1.0
        finally:
            self.busy_instances.discard(instance_id)
            self.wake.set()

    def _prepare(self, instance_id: str) -> Episode | None:
        now = self.now()
        messages = self.store.due_messages(instance_id, now)
        if not messages:
            return None
        instance = self.store.get_instance(instance_id)
        if instance is None or instance.status in TERMINAL:
            with self.store.transaction():  # nothing listens for these any more
                self.store.delete_messages(m.id for m in messages)
            return None
        current = [m for m in messages if m.execution_id in (None, instance.execution_id)]
        stale = [m.id for m in messages if m.execution_id not in (None, instance.execution_id)]
        kinds = {m.kind for m in current}
        if EventType.ExecutionTerminated in kinds:
            self._terminate_now(instance, current, stale, now)
            return None
        resumed: dict[str, Any] | None = None
        if instance.status == "Suspended":
            resume = next((m for m in current if m.kind == EventType.ExecutionResumed), None)
            if resume is None:
                if stale:
                    with self.store.transaction():
                        self.store.delete_messages(stale)
                return None
            resumed = resume.event
            # a suspend that came before the resume is spent; one after it suspends again
            current = [m for m in current if not (m.kind == EventType.ExecutionSuspended and m.id < resume.id)]
            stale += [m.id for m in messages if m.kind == EventType.ExecutionSuspended and m.id < resume.id]
        elif EventType.ExecutionSuspended in kinds and instance.status != "Pending":
            self._suspend_now(instance, [m for m in current if m.kind == EventType.ExecutionSuspended], stale, now)
            return None
        batch = [m for m in current if m.kind not in (EventType.ExecutionSuspended, EventType.ExecutionResumed)]
        consumed = stale + [m.id for m in current if m.kind == EventType.ExecutionResumed] + [m.id for m in batch]
        if instance.status == "Pending":  # a suspend before the first episode waits for it
            consumed = [
                i for i in consumed if i not in {m.id for m in current if m.kind == EventType.ExecutionSuspended}
            ]
        starts = [m for m in batch if m.kind == EventType.ExecutionStarted]
        past = [] if starts else self.store.history(instance_id)
        if starts:
            batch = [starts[-1]] + [m for m in batch if m.kind != EventType.ExecutionStarted]
        elif not past:
            with self.store.transaction():
                self.store.delete_messages(consumed)
            return None
        fresh = self._without_duplicates(past, batch)
        if not fresh and resumed is None:
            with self.store.transaction():
                self.store.delete_messages(consumed)
            return None
        last_started = max(
            (parse_time(e["Timestamp"]) for e in past if e["EventType"] == EventType.OrchestratorStarted), default=0.0
        )
        stamp = max(now, last_started)
        new = [event(EventType.OrchestratorStarted, stamp)]
        if resumed is not None:
            new.append({**resumed, "EventType": int(EventType.ExecutionResumed)})
        new.extend(dict(m.event) for m in fresh)
        return Episode(instance, past, new, consumed, bool(starts), stamp, self.orchestrators.get(instance.name))

    @staticmethod
    def _without_duplicates(past: list[dict[str, Any]], batch: list[Message]) -> list[Message]:
        """A completion already in the history (or twice in the batch) is dropped: each task completes once."""

        def key(item: dict[str, Any]) -> tuple[str, Any] | None:
            kind = item["EventType"]
            if kind in (EventType.TaskCompleted, EventType.TaskFailed):
                return ("task", item.get("TaskScheduledId"))
            if kind in (EventType.SubOrchestrationInstanceCompleted, EventType.SubOrchestrationInstanceFailed):
                return ("sub", item.get("TaskScheduledId"))
            if kind == EventType.TimerFired:
                return ("timer", item.get("TimerId"))
            return None

        seen = {key(e) for e in past} - {None}
        fresh = []
        for message in batch:
            k = key(message.event)
            if k is not None and k in seen:
                continue
            if k is not None:
                seen.add(k)
            fresh.append(message)
        return fresh

    def _run_orchestrator(self, episode: Episode) -> tuple[str, Any]:
        """Runs the SDK's orchestrator function (in a worker thread): ("ok", state JSON) or ("error", exception)."""
        assert episode.definition is not None
        instance = episode.instance
        stored_input = None
        if instance.input is not None:
            try:
                stored_input = json.loads(instance.input)
            except ValueError:
                stored_input = instance.input
        context = {
            "history": [{**e, "IsPlayed": True} for e in episode.past]
            + [{**e, "IsPlayed": False} for e in episode.new],
            "input": stored_input,
            "instanceId": instance.instance_id,
            "isReplaying": bool(episode.past),
            "parentInstanceId": (instance.parent or {}).get("instance_id"),
            "upperSchemaVersion": 1,
            "upperSchemaVersionNew": 2,
            "longRunningTimerIntervalDuration": LONG_TIMER_INTERVAL,
            "maximumShortTimerDuration": MAXIMUM_SHORT_TIMER,
            "defaultHttpAsyncRequestSleepTimeMillseconds": 30000,
        }
        binding = str(episode.definition.trigger.get("name") or "context")
        started = time.monotonic()
        try:
            result = episode.definition.fn(**{binding: OrchestrationContext(json.dumps(context))})
            outcome: tuple[str, Any] = ("ok", result)
        except Exception as exc:
            outcome = ("error", exc)
        episode.outcome = outcome
        episode.duration_ms = (time.monotonic() - started) * 1000
        self.stats.episodes += 1
        return outcome

    def _finish(self, episode: Episode) -> None:
        instance = episode.instance
        now = episode.timestamp
        state: dict[str, Any] | None = None
        error: str | None = None
        if episode.definition is None:
            error = function_missing(instance.name, "orchestrator", list(self.orchestrators))
        else:
            status, value = episode.outcome
            if status == "ok":
                try:
                    state = json.loads(value) if isinstance(value, str | bytes) else value
                except ValueError:
                    error = f"Out of proc orchestrators must return a valid JSON schema, not {value!r}"
            else:
                message = str(value)
                if OUT_OF_PROC_DATA in message:
                    head, _, data = message.partition(OUT_OF_PROC_DATA)
                    try:
                        state = json.loads(data)
                    except ValueError:
                        state = None
                    error = (state or {}).get("error") or head.strip()
                else:
                    error = f"{type(value).__name__}: {value}"
        replayed = ReplayResult()
        if state is not None:
            try:
                replay = ShimReplay(instance.instance_id, self.activities, self.orchestrators)
                replayed = replay.run(
                    state.get("actions") or [], int(state.get("schemaVersion") or 0), episode.past + episode.new
                )
            except ReplayError as exc:
                error = str(exc)
                replayed = ReplayResult()
        custom = state.get("customStatus") if state else None
        appended = list(episode.new)
        for task in replayed.new_tasks:
            if task.kind == "activity":
                appended.append(
                    event(EventType.TaskScheduled, now, task.task_id, Name=task.name, Version="", Input=task.input)
                )
            elif task.kind == "timer":
                assert task.fire_at is not None
                appended.append(event(EventType.TimerCreated, now, task.task_id, FireAt=iso(task.fire_at)))
            else:
                appended.append(
                    event(
                        EventType.SubOrchestrationInstanceCreated,
                        now,
                        task.task_id,
                        Name=task.name,
                        InstanceId=task.instance_id,
                        Input=json.dumps(task.input),
                        Version="",
                    )
                )
        instance.custom_status = json.dumps(custom) if custom is not None else None
        instance.updated = now
        continue_input: str | None = None
        if error is not None:
            message = f"Orchestrator function '{instance.name}' failed: {error}"
            appended.append(
                event(
                    EventType.ExecutionCompleted,
                    now,
                    OrchestrationStatus=int(OrchestrationStatus.Failed),
                    Result=message,
                    FailureDetails={"ErrorType": "OrchestrationFailureException", "ErrorMessage": message},
                )
            )
            instance.status, instance.output = "Failed", message
        elif state is not None and state.get("isDone"):
            if replayed.continue_as_new or _has_continue_as_new(state.get("actions") or []):
                raw = replayed.continue_input if replayed.continue_as_new else _continue_input(state["actions"])
                continue_input = json.dumps(raw)
                appended.append(
                    event(
                        EventType.ContinueAsNew,
                        now,
                        OrchestrationStatus=int(OrchestrationStatus.ContinuedAsNew),
                        Result=continue_input,
                    )
                )
                instance.status, instance.output = "ContinuedAsNew", None
            else:
                instance.output = json.dumps(state.get("output"))
                appended.append(
                    event(
                        EventType.ExecutionCompleted,
                        now,
                        OrchestrationStatus=int(OrchestrationStatus.Completed),
                        Result=instance.output,
                    )
                )
                instance.status = "Completed"
        else:
            instance.status = "Running"
        appended.append(event(EventType.OrchestratorCompleted, now))

        started_activity = False
        with self.store.transaction():
            current = self.store.get_instance(instance.instance_id)
            if current is None or current.execution_id != instance.execution_id:
                return  # purged or replaced while the orchestrator ran
            self.store.delete_messages(episode.consumed)
            if episode.clear_history:
                self.store.clear_history(instance.instance_id)
            self.store.append_history(instance.instance_id, appended)
            for task in replayed.new_tasks:
                if task.kind == "activity":
                    self.store.add_activity(
                        instance.instance_id, instance.execution_id, task.task_id, task.name or "", task.input
                    )
                    started_activity = True
                elif task.kind == "timer":
                    assert task.fire_at is not None
                    fired = event(EventType.TimerFired, task.fire_at, TimerId=task.task_id, FireAt=iso(task.fire_at))
                    self.store.add_message(instance.instance_id, instance.execution_id, fired, task.fire_at)
                else:
                    self._start_child(instance, task.task_id, task.name or "", task.instance_id or "", task.input, now)
            if continue_input is not None:
                instance.execution_id = uuid.uuid4().hex
                instance.input = continue_input
                instance.created = now
                started = self._execution_started(
                    instance.instance_id, instance.execution_id, instance.name, continue_input, instance.parent, now
                )
                self.store.add_message(instance.instance_id, instance.execution_id, started, now)
            self.store.put_instance(instance)
            if instance.status in TERMINAL:
                self.store.delete_pending_messages(instance.instance_id)
                self._notify_parent(instance, now)
            self.store.set_meta("last_now", repr(now))
        if started_activity:
            self.activity_wake.set()
        log.info(
            "Executed 'Functions.%s' (%s, Id=%s, Duration=%.0fms) orchestrator instance=%s runtimeStatus=%s%s",
            instance.name,
            "Failed" if episode.outcome[0] == "error" else "Succeeded",
            uuid.uuid4(),
            episode.duration_ms,
            instance.instance_id,
            instance.status,
            f" error={error!r}" if error else "",
        )

    def _start_child(
        self, parent: Instance, task_id: int, name: str, child_id: str, input_text: str | None, now: float
    ) -> None:
        existing = self.store.get_instance(child_id)
        if existing is not None and existing.status in RUNNING:
            failed = event(
                EventType.SubOrchestrationInstanceFailed,
                now,
                TaskScheduledId=task_id,
                Reason=f"An orchestration with instance ID '{child_id}' is already running.",
                Details=None,
            )
            self.store.add_message(parent.instance_id, parent.execution_id, failed, now)
            return
        link = {
            "instance_id": parent.instance_id,
            "execution_id": parent.execution_id,
            "task_id": task_id,
            "name": parent.name,
        }
        self._create(child_id, name, json.dumps(input_text), link, now)
        self.wake.set()

    def _notify_parent(self, instance: Instance, now: float) -> None:
        parent = instance.parent
        if not parent:
            return
        if instance.status == "Completed":
            done = event(
                EventType.SubOrchestrationInstanceCompleted,
                now,
                TaskScheduledId=parent["task_id"],
                Result=instance.output,
            )
        else:
            done = event(
                EventType.SubOrchestrationInstanceFailed,
                now,
                TaskScheduledId=parent["task_id"],
                Reason=instance.output if instance.status == "Failed" else f"Sub-orchestration {instance.status}",
                Details=None,
            )
        self.store.add_message(parent["instance_id"], parent["execution_id"], done, now)
        self.wake.set()

    def _terminate_now(self, instance: Instance, current: list[Message], stale: list[int], now: float) -> None:
        terminate = next(m for m in current if m.kind == EventType.ExecutionTerminated)
        reason = terminate.event.get("Input")
        starts = [m for m in current if m.kind == EventType.ExecutionStarted]
        events = [event(EventType.OrchestratorStarted, now)]
        events += [dict(starts[-1].event)] if starts else []
        events += [
            event(EventType.ExecutionTerminated, now, Input=reason),
            event(
                EventType.ExecutionCompleted,
                now,
                OrchestrationStatus=int(OrchestrationStatus.Terminated),
                Result=reason,
            ),
            event(EventType.OrchestratorCompleted, now),
        ]
        instance.status, instance.output, instance.updated = "Terminated", reason, now
        with self.store.transaction():
            self.store.delete_messages(stale + [m.id for m in current])
            if starts:
                self.store.clear_history(instance.instance_id)
            self.store.append_history(instance.instance_id, events)
            self.store.put_instance(instance)
            self.store.delete_pending_messages(instance.instance_id)
            self._notify_parent(instance, now)
        log.info("Terminated orchestration instance=%s reason=%r", instance.instance_id, reason)

    def _suspend_now(self, instance: Instance, suspends: list[Message], stale: list[int], now: float) -> None:
        reason = suspends[0].event.get("Reason")
        events = [
            event(EventType.OrchestratorStarted, now),
            event(EventType.ExecutionSuspended, now, Reason=reason),
            event(EventType.OrchestratorCompleted, now),
        ]
        instance.status, instance.updated = "Suspended", now
        with self.store.transaction():
            self.store.delete_messages(stale + [m.id for m in suspends])
            self.store.append_history(instance.instance_id, events)
            self.store.put_instance(instance)
        log.info("Suspended orchestration instance=%s reason=%r", instance.instance_id, reason)

    # activities -------------------------------------------------------------------------------------------------------
    async def _activity_loop(self) -> None:
        while not self.stopping:
            self.activity_wake.clear()
            free = self.activity_concurrency - len(self.busy_activities)
            if free > 0:
                for item in self.store.pending_activities(self.busy_activities, free):
                    self.busy_activities.add(item.id)
                    self.stats.concurrent_activities = max(self.stats.concurrent_activities, len(self.busy_activities))
                    self._spawn(self._activity(item))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.activity_wake.wait(), 0.5)

    async def _activity(self, item: ActivityItem) -> None:
        invocation_id = str(uuid.uuid4())
        started = time.monotonic()
        outcome = "Succeeded"
        try:
            self.store.count_activity_attempt(item.id)
            definition = self.activities.get(item.name)
            try:
                if definition is None:
                    raise LookupError(function_missing(item.name, "activity", list(self.activities)))
                value = ActivityTriggerConverter.decode(meta.Datum(item.input, "json"), trigger_metadata=None)
                inputs: dict[str, Any] = {str(definition.trigger.get("name")): value}
                for extra in definition.bindings:
                    if extra.get("type") == "durableClient" and self.client_binding is not None:
                        inputs[str(extra["name"])] = self.client_binding(extra.get("taskHub"))
                result = await invoke(definition, inputs, self.activity_pool, invocation_id)
                datum = ActivityTriggerConverter.encode(result.result, expected_type=None)
                completion = event(
                    EventType.TaskCompleted, self.now(), TaskScheduledId=item.task_id, Result=datum.value
                )
            except Exception as exc:
                outcome = "Failed"
                completion = self._task_failed(item, exc)
            self.stats.activity_runs += 1
            if self.closed:
                return  # finished after the host let go of the store: the work item runs again at the next start
            with self.store.transaction():
                if not self.store.activity_exists(item.id):
                    return
                self.store.delete_activity(item.id)
                completion["Timestamp"] = iso(self.now())
                self.store.add_message(item.instance_id, item.execution_id, completion, self.now())
            self.wake.set()
            log.info(
                "Executed 'Functions.%s' (%s, Id=%s, Duration=%.0fms) activity instance=%s task=%s attempt=%s",
                item.name,
                outcome,
                invocation_id,
                (time.monotonic() - started) * 1000,
                item.instance_id,
                item.task_id,
                item.attempts + 1,
            )
        except Exception:
            log.exception("the host failed running activity %s of %s", item.name, item.instance_id)
        finally:
            self.busy_activities.discard(item.id)
            self.activity_wake.set()

    def _task_failed(self, item: ActivityItem, exc: BaseException) -> dict[str, Any]:
        """TaskFailed as the extension records a Python activity's exception (an RpcException from the worker)."""
        stack = "".join(traceback.format_exception(exc)).rstrip()
        log.warning("activity %s of %s raised %s: %s\n%s", item.name, item.instance_id, type(exc).__name__, exc, stack)
        message = f"Result: Failure\nException: {type(exc).__name__}: {exc}\nStack: {stack}"
        if isinstance(exc, LookupError) and str(exc).startswith("The function"):
            message = str(exc)
        details = {
            "$type": "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException, Microsoft.Azure.WebJobs.Script",
            "ClassName": "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException",
            "Message": message,
            "Data": None,
            "InnerException": None,
            "StackTraceString": None,
            "Source": "Microsoft.Azure.WebJobs.Script",
        }
        return event(
            EventType.TaskFailed,
            self.now(),
            TaskScheduledId=item.task_id,
            Reason=f"Activity function '{item.name}' failed: {message}",
            Details=json.dumps(details),
        )

    async def stop(self, grace: float) -> None:
        self.stopping = True
        self.wake.set()
        self.activity_wake.set()
        pending = [t for t in self.tasks if not t.done()]
        if pending:  # let what runs finish and be recorded, for a while
            await asyncio.wait(pending, timeout=grace)
        self.closed = True
        self.orchestrator_pool.shutdown(wait=False, cancel_futures=True)
        self.activity_pool.shutdown(wait=False, cancel_futures=True)


def _has_continue_as_new(actions: list[Any]) -> bool:
    return _continue_action(actions) is not None


def _continue_input(actions: list[Any]) -> Any:
    action = _continue_action(actions)
    return action.get("input") if action else None


def _continue_action(actions: list[Any]) -> dict[str, Any] | None:
    for item in actions:
        if isinstance(item, list):
            found = _continue_action(item)
            if found:
                return found
        elif isinstance(item, dict) and item.get("actionType") == 4:
            return item
    return None
