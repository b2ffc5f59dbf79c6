"""Drives an orchestrator through the real azure-functions-durable replay engine, playing the Functions host.

Each episode sends the orchestrator the context JSON the host sends (history events, input, instanceId,
isReplaying, upperSchemaVersion) and reads back the OrchestratorState it returns. The harness then records what
the host would: TaskScheduled / TimerCreated events for new actions (ids in scheduling order, as DTFx assigns
them), and — when the test says so — TaskCompleted, TaskFailed, TimerFired or EventRaised in the next episode.
Activity retries follow DTFx's CallActivityWithRetry: a failure, a retry timer, then the task again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.functions import functions_by_name

EXECUTION_STARTED, TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED = 0, 4, 5, 6
TIMER_CREATED, TIMER_FIRED, ORCHESTRATOR_STARTED, ORCHESTRATOR_COMPLETED, EVENT_RAISED = 10, 11, 12, 13, 15
CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY, CONTINUE_AS_NEW, CREATE_TIMER, WAIT_FOR_EVENT = 0, 1, 4, 5, 6


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class Pending:
    """A scheduled activity or timer the host has not yet answered."""

    id: int
    kind: str  # "activity" | "timer"
    name: str | None = None
    input: Any = None
    fire_at: datetime | None = None
    retry: dict[str, Any] | None = None
    attempts: int = 1
    cancelled: bool = False
    retry_timer_for: Pending | None = None


@dataclass
class Replay:
    orchestrator: str
    input: Any
    instance_id: str = "gpt-4o-batch::batch::0123456789abcdef"
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 26, 9, 0, tzinfo=UTC))
    history: list[dict[str, Any]] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    executions: int = 1
    _actions_seen: int = 0
    _next_id: int = 0
    _new_events: list[dict[str, Any]] = field(default_factory=list)
    continued_with: Any = None

    def __post_init__(self) -> None:
        self._new_events = [
            self._event(EXECUTION_STARTED, Name=self.orchestrator, Version="", Input=json.dumps(self.input))
        ]

    # The host's side of one episode -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """One episode: old history (played) + OrchestratorStarted + the new events; returns the state."""
        for event in self.history:
            event["IsPlayed"] = True
        self.history.append(self._event(ORCHESTRATOR_STARTED))
        self.history.extend(self._new_events)
        self._new_events = []
        self.continued_with = None
        context = {
            "history": self.history,
            "input": json.dumps(self.input),
            "instanceId": self.instance_id,
            "isReplaying": len(self.history) > 2 + 1,
            "parentInstanceId": None,
            "upperSchemaVersion": 2,
        }
        handler = functions_by_name()[self.orchestrator].get_user_function()
        self.state = json.loads(handler(json.dumps(context)))
        actions = self._atomic(self.state.get("actions") or [])
        for action in actions[self._actions_seen :]:
            self._schedule(action)
        self._actions_seen = len(actions)
        self.history.append(self._event(ORCHESTRATOR_COMPLETED))
        return self.state

    def _atomic(self, actions: list[Any]) -> list[dict[str, Any]]:
        flat: list[dict[str, Any]] = []
        for action in actions:
            if isinstance(action, list):
                flat.extend(self._atomic(action))
            elif "compoundActions" in action:
                flat.extend(self._atomic(action["compoundActions"]))
            else:
                flat.append(action)
        return flat

    def _schedule(self, action: dict[str, Any]) -> None:
        kind = action["actionType"]
        if kind in (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY):
            task = Pending(
                self._take_id(),
                "activity",
                action["functionName"],
                json.loads(action["input"]),
                retry=action.get("retryOptions"),
            )
            self.history.append(self._event(TASK_SCHEDULED, EventId=task.id, Name=task.name, Input=action["input"]))
            self.pending.append(task)
        elif kind == CREATE_TIMER:
            fire_at = datetime.fromisoformat(action["fireAt"].replace("Z", "+00:00"))
            timer = Pending(self._take_id(), "timer", fire_at=fire_at, cancelled=bool(action.get("isCanceled")))
            self.history.append(self._event(TIMER_CREATED, EventId=timer.id, FireAt=_stamp(fire_at)))
            self.pending.append(timer)
        elif kind == CONTINUE_AS_NEW:
            self.continued_with = json.loads(action["input"])
        elif kind != WAIT_FOR_EVENT:  # waiting for an event records nothing until the event comes
            raise AssertionError(f"unexpected action {action}")

    def _execution_started(self) -> dict[str, Any]:
        return self._event(EXECUTION_STARTED, Name=self.orchestrator, Version="", Input=json.dumps(self.input))

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _event(self, event_type: int, **fields: Any) -> dict[str, Any]:
        event = {
            "EventType": event_type,
            "EventId": fields.pop("EventId", -1),
            "IsPlayed": False,
            "Timestamp": _stamp(self.now),
        }
        event.update(fields)
        return event

    # What the test makes happen -----------------------------------------------------------------------------------
    def activity(self, name: str | None = None) -> Pending:
        """The activity the orchestrator waits for (optionally: the one named `name`)."""
        matches = [p for p in self.pending if p.kind == "activity" and (name is None or p.name == name)]
        assert matches, f"no pending activity {name or ''}; pending: {self.pending}"
        return matches[0]

    def timer(self) -> Pending:
        """The timer the orchestrator waits on: the newest one (older ones were abandoned when a cancel won)."""
        timers = [p for p in self.pending if p.kind == "timer" and not p.cancelled]
        assert timers, f"no pending timer; pending: {self.pending}"
        return max(timers, key=lambda t: t.id)

    def complete(self, name: str, result: Any) -> dict[str, Any]:
        task = self.activity(name)
        self.pending.remove(task)
        self._new_events.append(self._event(TASK_COMPLETED, TaskScheduledId=task.id, Result=json.dumps(result)))
        return self.run()

    def fail(self, name: str, message: str) -> dict[str, Any]:
        """The activity raised; with retry options the host schedules a retry timer, as DTFx does."""
        task = self.activity(name)
        self.pending.remove(task)
        self._new_events.append(
            self._event(
                TASK_FAILED, TaskScheduledId=task.id, Reason=f"Exception: {message}", Details=f"Exception: {message}"
            )
        )
        state = self.run()
        if task.retry is not None:
            interval = timedelta(milliseconds=task.retry["firstRetryIntervalInMilliseconds"])
            timer = Pending(self._take_id(), "timer", fire_at=self.now + interval, retry_timer_for=task)
            self.history.insert(-1, self._event(TIMER_CREATED, EventId=timer.id, FireAt=_stamp(timer.fire_at)))
            self.pending.append(timer)
        return state

    def fire_timer(self) -> dict[str, Any]:
        timer = self.timer()
        self.pending.remove(timer)
        assert timer.fire_at is not None
        self.now = max(self.now, timer.fire_at)
        self._new_events.append(self._event(TIMER_FIRED, TimerId=timer.id, FireAt=_stamp(timer.fire_at)))
        state = self.run()
        retried = timer.retry_timer_for
        if retried is not None and retried.retry and retried.attempts < retried.retry["maxNumberOfAttempts"]:
            again = Pending(
                self._take_id(),
                "activity",
                retried.name,
                retried.input,
                retry=retried.retry,
                attempts=retried.attempts + 1,
            )
            self.history.insert(
                -1, self._event(TASK_SCHEDULED, EventId=again.id, Name=again.name, Input=json.dumps(again.input))
            )
            self.pending.append(again)
        return state

    def raise_event(self, name: str, value: Any = None) -> dict[str, Any]:
        self._new_events.append(self._event(EVENT_RAISED, Name=name, Input=json.dumps(value)))
        return self.run()

    def continue_as_new(self) -> dict[str, Any]:
        """Starts the next execution with the input the orchestrator continued with, as the host does."""
        self.input = self.continued_with
        self.history, self.pending, self._actions_seen, self._next_id = [], [], 0, 0
        self.executions += 1
        self._new_events = [
            self._event(EXECUTION_STARTED, Name=self.orchestrator, Version="", Input=json.dumps(self.input))
        ]
        return self.run()

    @property
    def activity_pending(self) -> bool:
        return any(p.kind == "activity" for p in self.pending)

    @property
    def continued(self) -> bool:
        """This episode ended by continuing as new (`continue_as_new()` starts the next)."""
        return self.continued_with is not None

    @property
    def done(self) -> bool:
        return bool(self.state.get("isDone"))

    @property
    def custom_status(self) -> Any:
        return self.state.get("customStatus")

    @property
    def output(self) -> Any:
        return self.state.get("output")
