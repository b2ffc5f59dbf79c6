"""The host killed with SIGKILL mid-poll, again and again: every run finishes, one batch per run."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from tests.conftest import RunningAzurite, RunningEmulator, wait_for
from tests.devstack.conftest import batch_lines
from tests.e2e.conftest import RESOURCE, App, start_host
from tests.host.conftest import RunningHost

# Where the kills land, each after progress observed since the previous kill, so made by the host then running (never
# after a real-time pause): while every run's submission waits for its answer (the emulator creates the batches, but
# the answers are lost), right after the restarted host committed its first episode, while status checks wait for
# their answers, and while they wait again after the restart. The emulator holds those answers a real second, so
# that the kills land inside the calls.
KILL_POINTS = ("every batch submitted", "an episode committed", "a status check sent", "a status check sent")


def unfinished(host: RunningHost, runs: list[str]) -> list[str]:
    """The runs whose orchestration the host has not committed as ended."""
    sql = f"SELECT instance_id, status FROM instances WHERE instance_id IN ({', '.join('?' * len(runs))})"  # noqa: S608
    rows = host.query(sql, *runs)
    ended = {instance for instance, status in rows if status in ("Completed", "Failed", "Terminated")}
    return [run for run in runs if run not in ended]


def history_size(host: RunningHost) -> int:
    return int(host.query("SELECT COUNT(*) FROM history")[0][0])


def batch_calls(emulator: RunningEmulator, route: str) -> int:
    """Calls the emulator has received in full (a creation counts once its body has been read)."""
    calls = emulator.requests_log(service="openai", resource=RESOURCE, route=route)
    return sum(1 for call in calls if route != "batches.create" or call["body"] is not None)


def submissions_answered(emulator: RunningEmulator) -> bool:
    """Whether the emulator has handled every batch creation it received (a dead host's too)."""
    return all(e["status"] is not None for e in emulator.requests_log(resource=RESOURCE, route="batches.create"))


def progress(host: RunningHost, emulator: RunningEmulator) -> dict[str, int]:
    """What has happened so far (read once the host is dead), to tell what the next host does."""
    return {
        "created": batch_calls(emulator, "batches.create"),
        "checked": batch_calls(emulator, "batches.get"),
        "history": history_size(host),
    }


def moved_on(
    host: RunningHost, emulator: RunningEmulator, runs: list[str], point: str, at_start: dict[str, int]
) -> bool:
    """Whether the host reached `point` (see KILL_POINTS) since the previous host died, or has nothing left to do."""
    if not unfinished(host, runs):
        return True
    if point == "every batch submitted":
        return batch_calls(emulator, "batches.create") >= at_start["created"] + len(runs)
    if point == "a status check sent":
        return batch_calls(emulator, "batches.get") > at_start["checked"]
    return history_size(host) > at_start["history"]


@pytest.mark.soak
def test_runs_survive_repeated_kill_9_with_exactly_one_batch_each(
    tmp_path: Path, emulator: RunningEmulator, azurite: RunningAzurite
) -> None:
    table = f"crash{os.urandom(3).hex()}"
    state = tmp_path / "host"
    emulator.set_speeds(RESOURCE, requestsPerSecond=2)  # about 30 emulated seconds of work per batch
    emulator.add_fault(service="openai", resource=RESOURCE, route="batches.create", latencyMs=1000, times=3)
    emulator.add_fault(service="openai", resource=RESOURCE, route="batches.get", latencyMs=1000)
    at_start = {"created": 0, "checked": 0, "history": 0}  # the emulator was reset for this test; a new task hub
    host = start_host(state, emulator, azurite, table)
    kills_mid_run = 0
    try:
        app = App(host, emulator)
        app.import_jobs()
        runs = [app.start("gpt-4o-batch::batch", {"inputFileId": app.upload(batch_lines(60))})["id"] for _ in range(3)]
        for point in KILL_POINTS:
            wait_for(functools.partial(moved_on, host, emulator, runs, point, at_start), what=point)
            host.kill()
            kills_mid_run += bool(unfinished(host, runs))
            wait_for(lambda: submissions_answered(emulator), what="the batch the dead host asked for")
            at_start = progress(host, emulator)
            host = start_host(state, emulator, azurite, table)
            app = App(host, emulator)

        finished = [app.wait(run_id, timeout=90) for run_id in runs]
    finally:
        host.stop()

    assert kills_mid_run >= 3, "the runs ended before the host was killed"
    assert [run["status"] for run in finished] == ["Success"] * 3
    for run in finished:
        assert run["outputs"]["request_counts_completed"] == 60
        assert len(app.batches_of(run["id"])) == 1
    assert len(emulator.batches(RESOURCE)) == 3
