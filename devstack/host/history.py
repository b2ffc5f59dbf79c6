"""Durable Task history events (the JSON shapes the Durable extension hands the Python SDK) and the status payload
the Durable HTTP API returns."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any


class EventType(IntEnum):
    """DurableTask.Core.History.EventType (the Python SDK's HistoryEventType, with .NET's names)."""

    ExecutionStarted = 0
    ExecutionCompleted = 1
    ExecutionFailed = 2
    ExecutionTerminated = 3
    TaskScheduled = 4
    TaskCompleted = 5
    TaskFailed = 6
    SubOrchestrationInstanceCreated = 7
    SubOrchestrationInstanceCompleted = 8
    SubOrchestrationInstanceFailed = 9
    TimerCreated = 10
    TimerFired = 11
    OrchestratorStarted = 12
    OrchestratorCompleted = 13
    EventSent = 14
    EventRaised = 15
    ContinueAsNew = 16
    GenericEvent = 17
    HistoryState = 18
    ExecutionSuspended = 19
    ExecutionResumed = 20


class OrchestrationStatus(IntEnum):
    """DurableTask.Core.OrchestrationStatus; its names are the runtimeStatus values of the status API."""

    Running = 0
    Completed = 1
    ContinuedAsNew = 2
    Failed = 3
    Canceled = 4
    Terminated = 5
    Pending = 6
    Suspended = 7


TERMINAL = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
RUNNING = frozenset({"Pending", "Running", "ContinuedAsNew", "Suspended"})


def iso(moment: float) -> str:
    """A timestamp as the extension writes them (UTC, fractional seconds, Z)."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(moment: float) -> str:
    """createdTime / lastUpdatedTime of the status API: DateTime.ToString("s") + "Z"."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """A timestamp from the SDK or a query string (ISO 8601; no zone means UTC)."""
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in value:  # .NET writes 7 fractional digits, Python's fromisoformat takes at most 6
        head, _, tail = value.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        zone = tail[len(digits) :]
        value = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def event(kind: EventType, timestamp: float, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False, "Timestamp": iso(timestamp), **fields}


def parse_jtoken(text: str | None) -> Any:
    """What the extension's ParseToJToken makes of a stored value: JSON when it parses, else the raw string."""
    if text is None:
        return None
    stripped = text.strip()
    if not stripped:
        return ""
    try:
        return json.loads(stripped)
    except ValueError:
        return text


def status_history(events: list[dict[str, Any]], show_output: bool) -> list[dict[str, Any]]:
    """The history as GetStatusAsync(showHistory: true) shows it: event names, TaskScheduled folded into the
    TaskCompleted/TaskFailed that ends it (FunctionName, ScheduledTime), orchestrator episode markers dropped, and
    results only with showHistoryOutput."""
    items = [dict(e) for e in events]
    scheduled: dict[str, tuple[int, str, str]] = {}
    dropped: set[int] = set()
    for index, item in enumerate(items):
        kind = EventType(item["EventType"])
        item["EventType"] = kind.name
        if kind in (EventType.TaskScheduled, EventType.SubOrchestrationInstanceCreated):
            scheduled[f"{kind.name}_{item.get('EventId')}"] = (index, item.get("Name") or "", item["Timestamp"])
            item.pop("Version", None)
            item.pop("Input", None)
        elif kind in (
            EventType.TaskCompleted,
            EventType.TaskFailed,
            EventType.SubOrchestrationInstanceCompleted,
            EventType.SubOrchestrationInstanceFailed,
        ):
            prefix = (
                "TaskScheduled"
                if kind in (EventType.TaskCompleted, EventType.TaskFailed)
                else ("SubOrchestrationInstanceCreated")
            )
            found = scheduled.get(f"{prefix}_{item.get('TaskScheduledId')}")
            if found:
                item["ScheduledTime"], item["FunctionName"] = found[2], found[1]
                dropped.add(found[0])
            item.pop("TaskScheduledId", None)
            completed = kind in (EventType.TaskCompleted, EventType.SubOrchestrationInstanceCompleted)
            if completed and not show_output:
                item.pop("Result", None)
            elif completed:
                item["Result"] = parse_jtoken(item.get("Result"))
        elif kind == EventType.ExecutionStarted:
            item["FunctionName"] = item.pop("Name", None)
            for key in ("OrchestrationInstance", "ParentInstance", "Version", "Tags", "Input"):
                item.pop(key, None)
        elif kind == EventType.ExecutionCompleted:
            status = item.get("OrchestrationStatus")
            if isinstance(status, int):
                item["OrchestrationStatus"] = OrchestrationStatus(status).name
            if show_output:
                item["Result"] = parse_jtoken(item.get("Result"))
            else:
                item.pop("Result", None)
        elif kind in (EventType.ExecutionTerminated, EventType.EventRaised):
            item.pop("Input", None)
        elif kind == EventType.TimerFired:
            item.pop("TimerId", None)
        elif kind in (EventType.OrchestratorStarted, EventType.OrchestratorCompleted):
            dropped.add(index)
        item.pop("EventId", None)
        item.pop("IsPlayed", None)
    return [item for index, item in enumerate(items) if index not in dropped]
