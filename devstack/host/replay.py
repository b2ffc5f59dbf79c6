"""What the Durable extension does with an out-of-process orchestrator's actions, replayed against the history.

Each episode the Python SDK returns *all* actions of the execution so far. The extension's
OutOfProcOrchestrationShim invokes them in order against a DurableTask context, awaiting each one before the next
(schema V2/V3; V1 awaits "any" per action set), and the Durable Task Framework replays the history underneath:
every TaskScheduled / TimerCreated / SubOrchestrationInstanceCreated event in the history must match the action
that was given that sequence number, completions complete what they belong to, and whatever was given a sequence
number without a matching event is new work. Retries are the framework's RetryInterceptor: attempt, and on failure
a durable timer (`firstRetryInterval * backoff^attempt`, at most `maxRetryInterval`, none once `retryTimeout` has
passed since the first attempt), so every attempt and every retry timer takes its own sequence number, in the same
order the Python SDK counts them.

This module simulates that exactly, with plain callbacks instead of .NET tasks.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from devstack.host.history import EventType, parse_time

CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY, CALL_SUB, CALL_SUB_WITH_RETRY = 0, 1, 2, 3
CONTINUE_AS_NEW, CREATE_TIMER, WAIT_FOR_EVENT, CALL_ENTITY, CALL_HTTP = 4, 5, 6, 7, 8
SIGNAL_ENTITY, SCHEDULED_SIGNAL_ENTITY, WHEN_ANY, WHEN_ALL = 9, 10, 11, 12
UNSUPPORTED = {
    CALL_ENTITY: "durable entities (call_entity)",
    SIGNAL_ENTITY: "durable entities (signal_entity)",
    SCHEDULED_SIGNAL_ENTITY: "durable entities (signal_entity)",
    CALL_HTTP: "durable HTTP (call_http)",
}
DEFAULT_MAX_RETRY_INTERVAL = timedelta(days=6)  # the Durable extension's RetryOptions default


class ReplayError(Exception):
    """The orchestration cannot go on (non-deterministic history, an unsupported API); it fails with this message."""


@dataclass
class NewTask:
    """Work an episode scheduled: an activity, a durable timer or a sub-orchestration, with its sequence number."""

    kind: str
    task_id: int
    name: str | None = None
    input: str | None = None
    fire_at: float | None = None
    instance_id: str | None = None


@dataclass
class ReplayResult:
    new_tasks: list[NewTask] = field(default_factory=list)
    continue_as_new: bool = False
    continue_input: Any = None


class _Task:
    """A .NET Task reduced to what the shim needs: done, faulted, continuations run inline."""

    __slots__ = ("callbacks", "done", "failed")

    def __init__(self) -> None:
        self.done = False
        self.failed = False
        self.callbacks: list[Callable[[_Task], None]] = []

    def finish(self, failed: bool = False) -> None:
        if self.done:
            return
        self.done, self.failed = True, failed
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback(self)

    def then(self, callback: Callable[[_Task], None]) -> None:
        if self.done:
            callback(self)
        else:
            self.callbacks.append(callback)


def _completed() -> _Task:
    task = _Task()
    task.finish()
    return task


FIRE_AND_FORGET = _completed()  # Task.CompletedTask, what fire-and-forget APIs give the shim


def _input_text(value: Any) -> str | None:
    """An action's input as the shim passes it on: the SDK already serialized it to a JSON string."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


@dataclass
class RetryPolicy:
    first: timedelta
    attempts: int
    backoff: float = 1.0
    max_interval: timedelta = DEFAULT_MAX_RETRY_INTERVAL
    timeout: timedelta | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetryPolicy:
        try:
            first = timedelta(milliseconds=float(data["firstRetryIntervalInMilliseconds"]))
            attempts = int(data["maxNumberOfAttempts"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ReplayError(f"Invalid retryOptions {data!r}: {exc}") from exc
        policy = cls(first, attempts)
        if data.get("backoffCoefficient") is not None:
            policy.backoff = float(data["backoffCoefficient"])
        if data.get("maxRetryIntervalInMilliseconds") is not None:
            policy.max_interval = timedelta(milliseconds=float(data["maxRetryIntervalInMilliseconds"]))
        if data.get("retryTimeoutInMilliseconds") is not None:
            policy.timeout = timedelta(milliseconds=float(data["retryTimeoutInMilliseconds"]))
        return policy

    def delay(self, attempt: int, first_attempt: float, now: float) -> timedelta:
        """RetryInterceptor.ComputeNextDelay: zero (give up) once the retry timeout has passed."""
        if self.timeout is not None and now >= first_attempt + self.timeout.total_seconds():
            return timedelta(0)
        try:
            delay = self.first * (self.backoff**attempt)
        except OverflowError:
            return self.max_interval
        return min(delay, self.max_interval)


def function_missing(name: str, kind: str, known: Iterable[str]) -> str:
    """The extension's ThrowIfFunctionDoesNotExist message."""
    listing = ", ".join(f"'{n}'" for n in sorted(known)) or "(none)"
    return (
        f"The function '{name}' doesn't exist, is disabled, or is not an {kind} function. Additional info: "
        f"The following are the known {kind} functions: {listing}."
    )


class ShimReplay:
    def __init__(self, instance_id: str, activities: Collection[str], orchestrators: Collection[str]) -> None:
        self.instance_id = instance_id
        self.activities = activities
        self.orchestrators = orchestrators
        self.next_id = 0
        self.unmatched: dict[int, NewTask] = {}
        self.open: dict[int, _Task] = {}
        self.waiters: dict[str, list[_Task]] = defaultdict(list)
        self.buffered: dict[str, int] = defaultdict(int)
        self.now = 0.0
        self.result = ReplayResult()

    # DurableTask context operations -------------------------------------------------------------------------------
    def _allocate(self, task: NewTask) -> _Task:
        self.unmatched[task.task_id] = task
        pending = _Task()
        self.open[task.task_id] = pending
        return pending

    def _next(self) -> int:
        task_id = self.next_id
        self.next_id += 1
        return task_id

    def schedule_activity(self, name: str, input_: str | None) -> _Task:
        if name not in self.activities:
            raise ReplayError(function_missing(name, "activity", self.activities))
        return self._allocate(NewTask("activity", self._next(), name=name, input=input_))

    def create_timer(self, fire_at: float, cancelled: bool = False) -> _Task:
        pending = self._allocate(NewTask("timer", self._next(), fire_at=fire_at))
        if cancelled:  # the timer is still created; the awaited task is cancelled at once
            cancelled_task = _Task()
            cancelled_task.finish(failed=True)
            return cancelled_task
        return pending

    def sub_orchestration(self, name: str, instance_id: str | None, input_: str | None) -> _Task:
        if name not in self.orchestrators:
            raise ReplayError(function_missing(name, "orchestrator", self.orchestrators))
        task_id = self._next()
        child = instance_id or f"{self.instance_id}:{task_id}"
        return self._allocate(NewTask("suborchestration", task_id, name=name, input=input_, instance_id=child))

    def wait_for_event(self, name: str) -> _Task:
        waiter = _Task()
        if self.buffered[name] > 0:
            self.buffered[name] -= 1
            waiter.finish()
        else:
            self.waiters[name].append(waiter)
        return waiter

    def with_retry(self, policy: RetryPolicy, attempt_once: Callable[[], _Task]) -> _Task:
        """DTFx RetryInterceptor: attempt; on failure wait on a durable timer and attempt again."""
        outcome = _Task()
        first_attempt = self.now
        attempts = max(1, policy.attempts)
        state = {"count": 0}

        def attempt() -> None:
            attempt_once().then(after_attempt)

        def after_attempt(task: _Task) -> None:
            if not task.failed:
                outcome.finish()
                return
            delay = policy.delay(state["count"], first_attempt, self.now)
            if delay <= timedelta(0):
                outcome.finish(failed=True)
                return
            self.create_timer(self.now + delay.total_seconds()).then(after_timer)

        def after_timer(_: _Task) -> None:
            state["count"] += 1
            if state["count"] >= attempts:
                outcome.finish(failed=True)
            else:
                attempt()

        attempt()
        return outcome

    # the shim -----------------------------------------------------------------------------------------------------
    def invoke(self, action: dict[str, Any]) -> _Task:
        kind = action.get("actionType")
        if kind in UNSUPPORTED:
            raise ReplayError(f"The local Functions host does not support {UNSUPPORTED[kind]}.")
        if kind == CALL_ACTIVITY:
            return self.schedule_activity(str(action["functionName"]), _input_text(action.get("input")))
        if kind == CALL_ACTIVITY_WITH_RETRY:
            policy = RetryPolicy.from_json(action.get("retryOptions") or {})
            name, input_ = str(action["functionName"]), _input_text(action.get("input"))
            return self.with_retry(policy, lambda: self.schedule_activity(name, input_))
        if kind == CALL_SUB:
            return self.sub_orchestration(
                str(action["functionName"]), action.get("instanceId"), _input_text(action.get("input"))
            )
        if kind == CALL_SUB_WITH_RETRY:
            policy = RetryPolicy.from_json(action.get("retryOptions") or {})
            name, child, input_ = str(action["functionName"]), action.get("instanceId"), action.get("input")
            return self.with_retry(policy, lambda: self.sub_orchestration(name, child, _input_text(input_)))
        if kind == CONTINUE_AS_NEW:
            self.result.continue_as_new = True
            self.result.continue_input = action.get("input")
            return FIRE_AND_FORGET
        if kind == CREATE_TIMER:
            return self.create_timer(parse_time(str(action["fireAt"])), bool(action.get("isCanceled")))
        if kind == WAIT_FOR_EVENT:
            return self.wait_for_event(str(action["externalEventName"]))
        if kind in (WHEN_ALL, WHEN_ANY):
            children = [self.invoke(child) for child in action.get("compoundActions") or []]
            return _when_all(children) if kind == WHEN_ALL else _when_any(children)
        raise ReplayError(f"Received an unexpected action type from the out-of-proc function: '{kind}'.")

    def _start(self, actions: list[Any], schema: int) -> None:
        if schema >= 1:
            if len(actions) != 1:
                raise ReplayError(
                    f"With OOProc schema {schema}, expected actions array to be of length 1 in outer layer "
                    f"but got size: {len(actions)}"
                )
            self._sequential(list(actions[0]), 0)
        else:
            self._action_sets([list(s) for s in actions], 0)

    def _sequential(self, actions: list[dict[str, Any]], index: int) -> None:
        """ProcessAsyncActionsV2: `foreach action: try { await invoke(action) } catch { }`."""
        while index < len(actions):
            task = self.invoke(actions[index])
            index += 1
            if not task.done:
                task.then(functools.partial(self._resume_sequential, actions, index))
                return

    def _resume_sequential(self, actions: list[dict[str, Any]], index: int, _: _Task) -> None:
        self._sequential(actions, index)

    def _action_sets(self, sets: list[list[dict[str, Any]]], index: int) -> None:
        """ProcessAsyncActionsV1: invoke a set, await any of its tasks, then the next set."""
        while index < len(sets):
            tasks = [task for task in (self.invoke(action) for action in sets[index]) if task is not FIRE_AND_FORGET]
            index += 1
            if tasks:
                any_task = _when_any(tasks)
                if not any_task.done:
                    any_task.then(functools.partial(self._resume_sets, sets, index))
                    return

    def _resume_sets(self, sets: list[list[dict[str, Any]]], index: int, _: _Task) -> None:
        self._action_sets(sets, index)

    # history --------------------------------------------------------------------------------------------------------
    def _match(self, event: dict[str, Any], kind: str) -> None:
        task_id = int(event.get("EventId", -1))
        expected = self.unmatched.pop(task_id, None)
        name = event.get("Name")
        if expected is None or expected.kind != kind or (kind != "timer" and expected.name != name):
            what = EventType(event["EventType"]).name
            raise ReplayError(
                f"Non-Deterministic workflow detected: {what} {task_id} {name or ''} does not match what the "
                f"orchestrator function now schedules as task {task_id}"
                + (f" ({expected.kind} {expected.name or ''})" if expected else " (nothing)")
                + ". Was the orchestrator code changed while the instance was running?"
            )

    def _complete(self, task_id: Any, failed: bool) -> None:
        task = self.open.pop(int(task_id), None) if task_id is not None else None
        if task is not None:  # a second completion of the same task is ignored, as DTFx does
            task.finish(failed)

    def run(self, actions: list[Any], schema: int, history: list[dict[str, Any]]) -> ReplayResult:
        for item in history:
            kind = item["EventType"]
            if kind == EventType.OrchestratorStarted:
                self.now = max(self.now, parse_time(item["Timestamp"]))
            elif kind == EventType.ExecutionStarted:
                self._start(actions, schema)
            elif kind == EventType.TaskScheduled:
                self._match(item, "activity")
            elif kind == EventType.TimerCreated:
                self._match(item, "timer")
            elif kind == EventType.SubOrchestrationInstanceCreated:
                self._match(item, "suborchestration")
            elif kind in (EventType.TaskCompleted, EventType.TaskFailed):
                self._complete(item.get("TaskScheduledId"), kind == EventType.TaskFailed)
            elif kind == EventType.TimerFired:
                self._complete(item.get("TimerId"), False)
            elif kind in (EventType.SubOrchestrationInstanceCompleted, EventType.SubOrchestrationInstanceFailed):
                self._complete(item.get("TaskScheduledId"), kind == EventType.SubOrchestrationInstanceFailed)
            elif kind == EventType.EventRaised:
                name = str(item.get("Name"))
                if self.waiters[name]:
                    self.waiters[name].pop().finish()  # the extension hands an event to the latest waiter
                else:
                    self.buffered[name] += 1
        self.result.new_tasks = [self.unmatched[task_id] for task_id in sorted(self.unmatched)]
        return self.result


def _when_all(children: list[_Task]) -> _Task:
    combined = _Task()
    remaining = [len(children)]
    failed = [False]
    if not children:
        combined.finish()
        return combined

    def one_done(task: _Task) -> None:
        remaining[0] -= 1
        failed[0] = failed[0] or task.failed
        if remaining[0] == 0:
            combined.finish(failed[0])

    for child in children:
        child.then(one_done)
    return combined


def _when_any(children: list[_Task]) -> _Task:
    combined = _Task()
    if not children:
        combined.finish()
        return combined
    for child in children:
        child.then(lambda _: combined.finish())
    return combined
