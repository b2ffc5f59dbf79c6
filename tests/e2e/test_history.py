"""A day-long batch on a stack whose clock runs an hour a second: the run's history stays bounded, read through the
Durable Functions HTTP API (showHistory) all along, and it costs few status calls."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RunningAzurite, RunningEmulator, start_emulator, stop_emulator, wait_for
from tests.devstack.conftest import batch_lines
from tests.e2e.conftest import RESOURCE, App, start_host
from tests.host.conftest import RunningHost

HOUR_A_SECOND = 3600.0
MAX_EPISODE_EVENTS = 64
ANSWERS = {"TaskCompleted", "TaskFailed", "TimerFired", "EventRaised"}


@pytest.fixture(scope="module")
def hourly(tmp_path_factory: pytest.TempPathFactory, azurite: RunningAzurite) -> Iterator[App]:
    emulator = start_emulator(tmp_path_factory.mktemp("hourly-emulator"), time_scale=HOUR_A_SECOND)
    host: RunningHost | None = None
    try:
        host = start_host(tmp_path_factory.mktemp("hourly-host"), emulator, azurite, f"hourly{os.urandom(3).hex()}")
        app = App(host, emulator)
        app.import_jobs()
        yield app
    finally:
        if host is not None:
            host.stop()
        stop_emulator(emulator)


def replayed_events(status: dict[str, Any]) -> int:
    """How many events the current execution's replay reads, at most, from what showHistory shows: showHistory folds
    each TaskScheduled into the TaskCompleted or TaskFailed that answers it and leaves out the episode markers, of
    which there are two for the start and at most two for every answer (each may come in an episode of its own)."""
    events = status["historyEvents"]
    answers = sum(1 for e in events if e["EventType"] in ANSWERS)
    folded = sum(1 for e in events if e["EventType"] in ("TaskCompleted", "TaskFailed"))
    return len(events) + folded + 2 + 2 * answers


def test_a_day_long_batch_replays_at_most_64_events_an_episode_and_is_polled_sparingly(hourly: App) -> None:
    emulator: RunningEmulator = hourly.emulator
    # 100 requests over 23 hours, after five minutes of validation, then ten of finalizing: inside the 24 h window.
    emulator.set_speeds(RESOURCE, validationSeconds=300, requestsPerSecond=100 / (23 * 3600), finalizingSeconds=600)
    run_id = hourly.start("gpt-4o-batch::batch", {"inputFileId": hourly.upload(batch_lines(100))})["id"]
    most, executions, seen = 0, set(), 0

    def ended() -> dict[str, Any] | None:
        nonlocal most, seen
        status = hourly.host.status(run_id, showHistory="true")
        if status.get("historyEvents"):
            most = max(most, replayed_events(status))
            started = [e for e in status["historyEvents"] if e["EventType"] == "ExecutionStarted"]
            executions.update(e["Timestamp"] for e in started)
            seen += 1
        return status if status["runtimeStatus"] in ("Completed", "Failed", "Terminated") else None

    final = wait_for(ended, timeout=180, interval=0.05, what="the day-long run to end")

    run = hourly.run(run_id)
    assert (final["runtimeStatus"], run["status"]) == ("Completed", "Success")
    assert run["outputs"]["request_counts_completed"] == 100
    assert seen > 50  # history was read all along
    assert len(executions) > 3  # the run continued as new, episode after episode
    assert most <= MAX_EPISODE_EVENTS
    batch = hourly.batches_of(run_id)[0]
    checks = [r for r in emulator.requests_log(service="openai", route="batches.get") if batch["id"] in r["path"]]
    assert len(checks) <= 70  # a fixed 60 s poller would make about 1,400
