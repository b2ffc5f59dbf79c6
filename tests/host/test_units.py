"""The host's pure parts: NCRONTAB schedules, route templates and the extension's action replay."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devstack.host import ncrontab
from devstack.host.appenv import wire_devstack
from devstack.host.history import EventType, event, iso, parse_time, status_history
from devstack.host.replay import ReplayError, RetryPolicy, ShimReplay
from devstack.host.routing import RouteError, Router, RouteTemplate

T0 = datetime(2025, 3, 3, 10, 0, 0, tzinfo=UTC).timestamp()  # a Monday


# NCRONTAB -------------------------------------------------------------------------------------------------------------
def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", "2025-03-03T10:02:30", "2025-03-03T10:05:00"),
        ("0 */30 * * * *", "2025-03-03T10:30:00", "2025-03-03T11:00:00"),
        ("30 15 9 * * *", "2025-03-03T10:00:00", "2025-03-04T09:15:30"),
        ("0 0 9 * * MON-FRI", "2025-03-07T10:00:00", "2025-03-10T09:00:00"),
        ("0 0 0 1 JAN,jul *", "2025-03-03T00:00:00", "2025-07-01T00:00:00"),
        ("0 0 0 13 * 5", "2025-01-01T00:00:00", "2025-06-13T00:00:00"),  # day AND day-of-week, as NCrontab
        ("*/20 * * * * *", "2025-03-03T10:00:45", "2025-03-03T10:01:00"),
        ("5/20 * * * * *", "2025-03-03T10:00:06", "2025-03-03T10:00:25"),
    ],
)
def test_ncrontab_next_occurrence(expression: str, after: str, expected: str) -> None:
    assert ncrontab.parse(expression).next_after(at(after)) == at(expected)


def test_a_timespan_schedule_is_an_interval() -> None:
    schedule = ncrontab.parse("00:10:00")

    assert schedule.next_after(at("2025-03-03T10:02:30")) == at("2025-03-03T10:12:30")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("*/5 * * * *", "six fields"),
        ("0 60 * * * *", "outside 0-59"),
        ("0 0 0 * * 7", "outside 0-6"),
        ("0 0 0 30 FEB *", "never fires"),
        ("0 5-1 * * * *", "backwards"),
        ("0 */0 * * * *", "bad step"),
        ("0 x * * * *", "not a number"),
    ],
)
def test_ncrontab_refuses_what_the_host_refuses(expression: str, message: str) -> None:
    with pytest.raises(ncrontab.ScheduleError, match=message):
        ncrontab.parse(expression)


# Routes ---------------------------------------------------------------------------------------------------------------
def matches(router: Router, path: str) -> list[tuple[str, dict[str, str]]]:
    return [(route.target, values) for route, values in router.match([p for p in path.split("/") if p])]


def test_routes_are_tried_most_specific_first() -> None:
    router = Router()
    for template in ("jobs/{*rest}", "jobs/{id}", "jobs/{id:int}", "jobs/import", "{a}/{b}"):
        router.add(template, None, template)

    assert [t for t, _ in matches(router, "jobs/import")] == ["jobs/import", "jobs/{id}", "jobs/{*rest}", "{a}/{b}"]
    assert [t for t, _ in matches(router, "jobs/7")][:2] == ["jobs/{id:int}", "jobs/{id}"]


@pytest.mark.parametrize(
    ("template", "path", "values"),
    [
        ("hello/{name?}", "hello", {}),
        ("hello/{name?}", "hello/x", {"name": "x"}),
        ("hello/{name=world}", "hello", {"name": "world"}),
        ("files/{name}.{ext}", "files/report.final.pdf", {"name": "report.final", "ext": "pdf"}),
        ("Jobs/{id}", "jobs/A::b", {"id": "A::b"}),
        ("x/{g:guid}", "x/3f2504e0-4f89-11d3-9a0c-0305e82c3301", {"g": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}),
        ("x/{n:range(1,5)}", "x/5", {"n": "5"}),
        ("x/{s:regex(^[a-z]{{2}}$)}", "x/ab", {"s": "ab"}),
        ("x/{s:alpha:minlength(2)}", "x/ab", {"s": "ab"}),
        ("x/{*rest}", "x", {}),
    ],
)
def test_route_templates_match(template: str, path: str, values: dict[str, str]) -> None:
    assert RouteTemplate(template).match([p for p in path.split("/") if p]) == values


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("hello/{name}", "hello"),
        ("hello", "hello/extra"),
        ("x/{n:int}", "x/1.5"),
        ("x/{n:range(1,5)}", "x/6"),
        ("x/{s:regex(^[a-z]{{2}}$)}", "x/abc"),
        ("x/{b:bool}", "x/yes"),
    ],
)
def test_route_templates_do_not_match(template: str, path: str) -> None:
    assert RouteTemplate(template).match([p for p in path.split("/") if p]) is None


@pytest.mark.parametrize("template", ["x/{id:nonsense}", "x/{a}/{a}", "x/{*rest}/y", "x/{unclosed", "x/{a:range(1)}"])
def test_bad_route_templates_are_refused(template: str) -> None:
    with pytest.raises(RouteError):
        RouteTemplate(template)


# The extension's replay of the SDK's actions --------------------------------------------------------------------------
def activity(name: str, input_: Any = '"x"') -> dict[str, Any]:
    return {"actionType": 0, "functionName": name, "input": input_}


def started(at_time: float = T0) -> list[dict[str, Any]]:
    return [event(EventType.OrchestratorStarted, at_time), event(EventType.ExecutionStarted, at_time, Name="o")]


def replay(actions: list[Any], history: list[dict[str, Any]], activities: tuple[str, ...] = ("a", "b", "c")) -> Any:
    return ShimReplay("i", set(activities), {"o"}).run([actions], 2, history)


def test_actions_are_awaited_one_after_another() -> None:
    first = replay([activity("a"), activity("b")], started())
    done = [
        *started(),
        event(EventType.TaskScheduled, T0, 0, Name="a"),
        event(EventType.OrchestratorStarted, T0 + 1),
        event(EventType.TaskCompleted, T0 + 1, TaskScheduledId=0, Result='"A"'),
    ]
    second = replay([activity("a"), activity("b")], done)

    assert [(t.kind, t.task_id, t.name) for t in first.new_tasks] == [("activity", 0, "a")]
    assert [(t.kind, t.task_id, t.name) for t in second.new_tasks] == [("activity", 1, "b")]


def test_when_all_and_when_any_schedule_every_child() -> None:
    actions = [
        {"actionType": 12, "compoundActions": [activity("a"), activity("b")]},
        {
            "actionType": 11,
            "compoundActions": [
                {"actionType": 6, "externalEventName": "go", "reason": "ExternalEvent"},
                {"actionType": 5, "fireAt": iso(T0 + 60), "isCanceled": False},
            ],
        },
    ]
    history = [
        *started(),
        event(EventType.TaskScheduled, T0, 0, Name="a"),
        event(EventType.TaskScheduled, T0, 1, Name="b"),
        event(EventType.OrchestratorStarted, T0 + 1),
        event(EventType.TaskFailed, T0 + 1, TaskScheduledId=1, Reason="x"),
        event(EventType.TaskCompleted, T0 + 1, TaskScheduledId=0, Result="1"),
    ]

    result = replay(actions, history)

    assert [(t.kind, t.task_id, t.fire_at) for t in result.new_tasks] == [("timer", 2, T0 + 60)]


def test_retries_wait_on_durable_timers_and_take_sequence_numbers() -> None:
    retry = {
        "actionType": 1,
        "functionName": "a",
        "input": "null",
        "retryOptions": {"firstRetryIntervalInMilliseconds": 1000, "maxNumberOfAttempts": 2},
    }
    history = [
        *started(),
        event(EventType.TaskScheduled, T0, 0, Name="a"),
        event(EventType.OrchestratorStarted, T0 + 5),
        event(EventType.TaskFailed, T0 + 5, TaskScheduledId=0, Reason="x"),
    ]
    after_failure = replay([retry], history)
    history += [
        event(EventType.TimerCreated, T0 + 5, 1, FireAt=iso(T0 + 6)),
        event(EventType.OrchestratorStarted, T0 + 6),
        event(EventType.TimerFired, T0 + 6, TimerId=1),
    ]
    after_timer = replay([retry], history)

    assert [(t.kind, t.task_id, t.fire_at) for t in after_failure.new_tasks] == [("timer", 1, T0 + 6)]
    assert [(t.kind, t.task_id, t.name) for t in after_timer.new_tasks] == [("activity", 2, "a")]


def test_retry_delays_follow_backoff_maximum_and_timeout() -> None:
    policy = RetryPolicy.from_json(
        {
            "firstRetryIntervalInMilliseconds": 1000,
            "maxNumberOfAttempts": 9,
            "backoffCoefficient": 2,
            "maxRetryIntervalInMilliseconds": 5000,
            "retryTimeoutInMilliseconds": 60000,
        }
    )

    delays = [policy.delay(n, T0, T0).total_seconds() for n in range(5)]

    assert delays == [1, 2, 4, 5, 5]
    assert policy.delay(0, T0, T0 + 61) == timedelta(0)


def test_a_cancelled_timer_releases_the_when_any_it_lost() -> None:
    actions = [
        {
            "actionType": 11,
            "compoundActions": [
                {"actionType": 5, "fireAt": iso(T0 + 3600), "isCanceled": True},
            ],
        },
        activity("a"),
    ]
    history = [*started(), event(EventType.TimerCreated, T0, 0, FireAt=iso(T0 + 3600))]

    assert [(t.kind, t.task_id) for t in replay(actions, history).new_tasks] == [("activity", 1)]


def test_events_raised_before_the_wait_are_buffered() -> None:
    actions = [{"actionType": 6, "externalEventName": "go", "reason": "ExternalEvent"}, activity("a")]
    history = [
        event(EventType.OrchestratorStarted, T0),
        event(EventType.EventRaised, T0, Name="go", Input='"now"'),
        event(EventType.ExecutionStarted, T0, Name="o"),
    ]

    assert [t.name for t in replay(actions, history).new_tasks] == ["a"]


def test_a_history_the_code_no_longer_produces_is_non_deterministic() -> None:
    history = [*started(), event(EventType.TaskScheduled, T0, 0, Name="b")]

    with pytest.raises(ReplayError, match="Non-Deterministic workflow detected"):
        replay([activity("a")], history)


def test_an_unknown_activity_or_an_unsupported_api_fails_the_orchestration() -> None:
    with pytest.raises(ReplayError, match="The function 'nope' doesn't exist"):
        replay([activity("nope")], started())
    with pytest.raises(ReplayError, match="durable entities"):
        replay([{"actionType": 7, "instanceId": "@e@k", "operation": "add"}], started())


def test_continue_as_new_is_reported_with_its_input() -> None:
    result = replay(
        [activity("a"), {"actionType": 4, "input": '{"n": 1}'}],
        [
            *started(),
            event(EventType.TaskScheduled, T0, 0, Name="a"),
            event(EventType.OrchestratorStarted, T0),
            event(EventType.TaskCompleted, T0, TaskScheduledId=0, Result="1"),
        ],
    )

    assert result.continue_as_new
    assert result.continue_input == '{"n": 1}'


def test_status_history_folds_scheduling_into_completion() -> None:
    history = [
        *started(),
        event(EventType.TaskScheduled, T0, 0, Name="a", Input="1"),
        event(EventType.OrchestratorCompleted, T0),
        event(EventType.OrchestratorStarted, T0 + 1),
        event(EventType.TaskCompleted, T0 + 1, TaskScheduledId=0, Result='{"ok": true}'),
        event(EventType.ExecutionCompleted, T0 + 1, OrchestrationStatus=1, Result='"done"'),
    ]

    shown = status_history(history, show_output=True)

    assert [e["EventType"] for e in shown] == ["ExecutionStarted", "TaskCompleted", "ExecutionCompleted"]
    assert shown[1]["FunctionName"] == "a"
    assert shown[1]["Result"] == {"ok": True}
    assert parse_time(shown[1]["ScheduledTime"]) == T0
    assert shown[2] == {
        "EventType": "ExecutionCompleted",
        "Timestamp": iso(T0 + 1),
        "OrchestrationStatus": "Completed",
        "Result": "done",
    }


def test_dotnet_timestamps_with_seven_fractional_digits_parse() -> None:
    assert parse_time("2025-03-03T10:00:00.1234567Z") == pytest.approx(T0 + 0.123456)
    assert parse_time("2025-03-03T10:00:00") == T0


# appenv.wire_devstack ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (None, "https://127.0.0.1:10003/devstoreaccount1"),
        ("", "https://127.0.0.1:10003/devstoreaccount1"),
        ("https://mine.example", "https://mine.example,https://127.0.0.1:10003/devstoreaccount1"),
        ("https://127.0.0.1:10003/devstoreaccount1/", "https://127.0.0.1:10003/devstoreaccount1/"),
    ],
)
def test_the_stacks_user_storage_is_added_to_the_blob_endpoints_the_app_may_read(
    configured: str | None, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INPUT_BLOB_ENDPOINTS", "")  # so that monkeypatch restores it whatever wire_devstack does
    if configured is None:
        monkeypatch.delenv("INPUT_BLOB_ENDPOINTS")
    else:
        monkeypatch.setenv("INPUT_BLOB_ENDPOINTS", configured)
    endpoints = {"userStorage": {"blobEndpoint": "https://127.0.0.1:10003/devstoreaccount1"}}

    wire_devstack(endpoints, tmp_path / "ca.pem")

    assert os.environ["INPUT_BLOB_ENDPOINTS"] == expected


def test_without_a_user_storage_the_blob_endpoints_are_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INPUT_BLOB_ENDPOINTS", "")  # so that monkeypatch restores it whatever wire_devstack does
    monkeypatch.delenv("INPUT_BLOB_ENDPOINTS")

    wire_devstack({}, tmp_path / "ca.pem")

    assert "INPUT_BLOB_ENDPOINTS" not in os.environ
