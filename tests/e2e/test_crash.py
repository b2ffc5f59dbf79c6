"""The host killed with SIGKILL mid-poll, again and again: every run finishes, one batch per run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import RunningAzurite, RunningEmulator
from tests.devstack.conftest import batch_lines
from tests.e2e.conftest import RESOURCE, App, start_host


def test_runs_survive_repeated_kill_9_with_exactly_one_batch_each(
    tmp_path: Path, emulator: RunningEmulator, azurite: RunningAzurite
) -> None:
    table = f"crash{os.urandom(3).hex()}"
    state = tmp_path / "host"
    emulator.set_speeds(RESOURCE, requestsPerSecond=2)  # about 30 emulated seconds of work per batch
    host = start_host(state, emulator, azurite, table)
    try:
        app = App(host, emulator)
        app.import_jobs()
        runs = [app.start("gpt-4o-batch::batch", {"inputFileId": app.upload(batch_lines(60))})["id"] for _ in range(3)]
        for _ in range(4):
            time.sleep(0.7)
            host.kill()
            host = start_host(state, emulator, azurite, table)
            app = App(host, emulator)

        finished = [app.wait(run_id, timeout=120) for run_id in runs]
    finally:
        host.stop()

    assert [run["status"] for run in finished] == ["Success"] * 3
    for run in finished:
        assert run["outputs"]["request_counts_completed"] == 60
        assert len(app.batches_of(run["id"])) == 1
    assert len(emulator.batches(RESOURCE)) == 3
