"""Timer triggers on emulated time: schedules, past_due after downtime, never overlapping, manual runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import wait_for, wait_for_clock
from tests.host.conftest import MASTER_KEY, RunningHost

HOURLY = {"TICK_SCHEDULE": "0 0 * * * *"}  # at 3600x, about once a real second
HOUR = 3600.0


def starts(host: RunningHost) -> list[dict[str, object]]:
    return [r for r in host.records("ticks") if r["phase"] == "start"]


@pytest.mark.slow
def test_a_missed_occurrence_runs_at_start_with_past_due(launcher: Callable[..., RunningHost], tmp_path: Path) -> None:
    state = tmp_path / "timers"
    epoch = repr(time.time())
    host = launcher(state, settings=HOURLY, epoch=epoch)
    wait_for(lambda: starts(host), what="the first tick")
    on_time = starts(host)[0]
    # The host dies only once the schedule monitor has stored a finished run (and so the occurrence after it).
    wait_for(lambda: (host.timer_status("tick") or {}).get("last"), what="the schedule monitor to record a run")

    host.kill()
    stored = host.timer_status("tick")
    assert stored is not None
    assert stored["next"] is not None
    # The occurrence the host would have run next and the one after it pass while it is down: both are missed.
    wait_for_clock(host.clock().now, stored["next"] + HOUR, what="two occurrences to pass while the host is down")
    count = len(starts(host))
    host = launcher(state, settings=HOURLY, epoch=epoch)
    wait_for(lambda: len(starts(host)) > count, what="the tick after the restart")
    late = starts(host)[count]

    assert on_time["pastDue"] is False
    assert late["pastDue"] is True
    assert late["status"]["Last"] != "0001-01-01T00:00:00"  # the schedule monitor remembered the last run
    wait_for(lambda: len(starts(host)) > count + 1, what="the next tick on schedule")
    assert starts(host)[count + 1]["pastDue"] is False


def test_a_run_longer_than_the_interval_never_overlaps_the_next(launcher: Callable[..., RunningHost]) -> None:
    host = launcher(settings={"TICK_SCHEDULE": "0 */5 * * * *", "TICK_SECONDS": "0.3"})  # every 83 ms, 300 ms runs

    wait_for(lambda: sum(r["phase"] == "end" for r in host.records("ticks")) >= 3, what="three ticks")

    records = host.records("ticks")
    running = 0
    for record in records:
        running += 1 if record["phase"] == "start" else -1
        assert running in (0, 1)


def test_a_timer_function_can_be_run_by_hand_through_the_admin_api(host: RunningHost) -> None:
    before = len(starts(host))

    refused = host.session.post(f"{host.base}/admin/functions/tick", json={"input": ""}, timeout=10)
    accepted = host.session.post(
        f"{host.base}/admin/functions/tick", params={"code": MASTER_KEY}, json={"input": ""}, timeout=10
    )
    wait_for(lambda: len(starts(host)) > before, what="the manual tick")

    assert refused.status_code == 401
    assert accepted.status_code == 202
    assert starts(host)[-1]["pastDue"] is False
