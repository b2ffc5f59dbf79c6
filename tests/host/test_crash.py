"""Crash safety: `kill -9` the host at any moment, start it again, and every orchestration carries on by replay."""

from __future__ import annotations

import functools
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from devstack.host.history import EventType
from tests.conftest import wait_for
from tests.host.conftest import RunningHost

STEPS = 8


def finished(host: RunningHost, instance_id: str) -> bool:
    """Whether the host has committed the instance's end."""
    return any(e["EventType"] == EventType.ExecutionCompleted for e in host.committed_history(instance_id))


def history_size(host: RunningHost, instances: list[str]) -> int:
    return sum(len(host.committed_history(i)) for i in instances)


def steps_of_this_host(host: RunningHost, phase: str) -> int:
    """How many activity runs the host now running has started (or ended): its own progress since it started."""
    return sum(1 for r in host.records("steps") if r["phase"] == phase and r["pid"] == host.process.pid)


def moved_on(host: RunningHost, point: str, instances: list[str], committed: int) -> bool:
    """Whether the host reached `point` (see KILL_POINTS) since it started, or has nothing left to do; `committed`:
    the size of the history when it started."""
    if all(finished(host, i) for i in instances):
        return True
    if point == "an episode committed":
        return history_size(host, instances) > committed
    return steps_of_this_host(host, "start" if point == "an activity started" else "end") > 0


# Where the kills land, each after progress observed in the host then running (never after a real-time pause):
# mid-activity, just after an episode was committed, just after an activity returned (its result maybe not yet
# committed), and mid-activity again. A random jitter of up to 0.1 s (less than an activity's 0.12 s) spreads them.
KILL_POINTS = ("an activity started", "an episode committed", "an activity ended", "an activity started")


@pytest.mark.slow
@pytest.mark.soak
def test_kill_9_mid_orchestration_repeatedly_and_every_activity_completes_once(
    launcher: Callable[..., RunningHost], tmp_path: Path
) -> None:
    state = tmp_path / "crash"
    epoch = repr(time.time())  # one emulated timeline across the restarts
    seed = time.time_ns()
    jitter = random.Random(seed)
    host = launcher(state, epoch=epoch)
    instances = [host.start("steps", {"steps": STEPS, "seconds": 0.12}, f"crash-{n}") for n in range(2)]

    kills_while_running = 0
    committed = 0  # history events committed when the host then running started
    for point in KILL_POINTS:
        wait_for(functools.partial(moved_on, host, point, instances, committed), what=f"{point} in {host.process.pid}")
        time.sleep(jitter.uniform(0, 0.1))
        host.kill()
        kills_while_running += not all(finished(host, i) for i in instances)
        committed = history_size(host, instances)
        host = launcher(state, epoch=epoch)

    finals = [host.wait(i) for i in instances]

    assert kills_while_running >= 3, f"the orchestrations ended before the kills (jitter seed {seed})"
    for instance_id, final in zip(instances, finals, strict=True):
        assert final["runtimeStatus"] == "Completed", final
        assert final["output"] == [i * i for i in range(STEPS)]
        history = host.committed_history(instance_id)
        scheduled = [e["EventId"] for e in history if e["EventType"] == EventType.TaskScheduled]
        completed = Counter(e["TaskScheduledId"] for e in history if e["EventType"] == EventType.TaskCompleted)
        fired = Counter(e["TimerId"] for e in history if e["EventType"] == EventType.TimerFired)
        assert sorted(scheduled) == sorted(set(scheduled))
        assert set(completed) == set(scheduled)
        assert set(completed.values()) == {1}, completed
        assert list(fired.values()) == [1]
        assert sum(1 for e in history if e["EventType"] == EventType.ExecutionCompleted) == 1
    # Activities run at least once (again when the host died while one ran), and each finished run is distinct.
    ends = Counter(r["i"] for r in host.records("steps") if r["phase"] == "end")
    assert set(ends) == set(range(STEPS))
    assert "the host failed" not in host.log_text()


def test_a_restart_resumes_a_pending_durable_timer_on_the_same_timeline(
    launcher: Callable[..., RunningHost], tmp_path: Path
) -> None:
    state = tmp_path / "timer"
    host = launcher(state)
    epoch = host.info["clock"]["DEVSTACK_EPOCH"]
    instance_id = host.start("waiting", {"hours": 2}, "sleeper")  # two emulated hours: about two real seconds
    wait_for(
        lambda: any(e["EventType"] == EventType.TimerCreated for e in host.committed_history(instance_id)),
        what="the durable timer to be committed",
    )

    host.kill()
    pending = not any(e["EventType"] == EventType.TimerFired for e in host.committed_history(instance_id))
    host = launcher(state)  # no DEVSTACK_EPOCH: the task hub keeps its own epoch
    status = host.wait(instance_id)

    assert pending, "the timer fired before the kill"
    assert status["runtimeStatus"] == "Completed"
    assert host.info["clock"]["DEVSTACK_EPOCH"] == epoch
    resumed, started = (datetime.fromisoformat(status["output"][k]) for k in ("resumed", "started"))
    assert resumed - started >= timedelta(hours=2)
