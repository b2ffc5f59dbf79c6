"""Crash safety: `kill -9` the host at any moment, start it again, and every orchestration carries on by replay."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.host.conftest import RunningHost


def committed_history(host: RunningHost, instance_id: str) -> list[dict[str, object]]:
    """The instance's history as the host stored it (read-only, straight from SQLite)."""
    with sqlite3.connect(f"file:{host.info['store']}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,))
        return [json.loads(row[0]) for row in rows]


@pytest.mark.slow
def test_kill_9_mid_orchestration_repeatedly_and_every_activity_completes_once(
    launcher: Callable[..., RunningHost], tmp_path: Path
) -> None:
    state = tmp_path / "crash"
    epoch = repr(time.time())  # one emulated timeline across the restarts
    host = launcher(state, epoch=epoch)
    instances = [host.start("steps", {"steps": 8, "seconds": 0.12}, f"crash-{n}") for n in range(2)]

    kills_while_running = 0
    for pause in (0.35, 0.3, 0.45, 0.25):
        time.sleep(pause)
        if any(host.status(i)["runtimeStatus"] == "Running" for i in instances):
            kills_while_running += 1
        host.kill()
        host = launcher(state, epoch=epoch)

    finals = [host.wait(i, timeout=30) for i in instances]

    assert kills_while_running >= 2
    for instance_id, final in zip(instances, finals, strict=True):
        assert final["runtimeStatus"] == "Completed", final
        assert final["output"] == [i * i for i in range(8)]
        history = committed_history(host, instance_id)
        scheduled = [e["EventId"] for e in history if e["EventType"] == 4]
        completed = Counter(e["TaskScheduledId"] for e in history if e["EventType"] == 5)
        fired = Counter(e["TimerId"] for e in history if e["EventType"] == 11)
        assert sorted(scheduled) == sorted(set(scheduled))
        assert set(completed) == set(scheduled)
        assert set(completed.values()) == {1}, completed
        assert list(fired.values()) == [1]
        assert sum(1 for e in history if e["EventType"] == 1) == 1
    # Activities run at least once (again when the host died while one ran), and each finished run is distinct.
    ends = Counter(r["i"] for r in host.records("steps") if r["phase"] == "end")
    assert set(ends) == set(range(8))
    assert "the host failed" not in host.log_text()


def test_a_restart_resumes_a_pending_durable_timer_on_the_same_timeline(
    launcher: Callable[..., RunningHost], tmp_path: Path
) -> None:
    state = tmp_path / "timer"
    host = launcher(state)
    epoch = host.info["clock"]["DEVSTACK_EPOCH"]
    instance_id = host.start("waiting", {"hours": 1}, "sleeper")
    host.wait(instance_id, ("Running",))

    host.kill()
    host = launcher(state)  # no DEVSTACK_EPOCH: the task hub keeps its own epoch
    status = host.wait(instance_id, timeout=15)

    assert status["runtimeStatus"] == "Completed"
    assert host.info["clock"]["DEVSTACK_EPOCH"] == epoch
