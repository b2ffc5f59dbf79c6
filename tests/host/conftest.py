"""Fixtures that run `python -m devstack host` with the host's own test app (tests/host_app), over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.clock import VirtualClock
from tests.conftest import PATIENCE, ROOT, wait_for

HOST_APP = ROOT / "tests" / "host_app"
FUNCTION_KEY = "test-function-key"
MASTER_KEY = "test-master-key"
TERMINAL = ("Completed", "Failed", "Terminated", "Canceled")
# One real second is an emulated hour: a one-hour durable timer fires in about a second.
TIME_SCALE = 3600.0


class RunningHost:
    """A host process started by a test and what its functions.json says."""

    def __init__(self, process: subprocess.Popen[bytes], state_dir: Path, record_dir: Path, log: Path) -> None:
        self.process = process
        self.state_dir = state_dir
        self.record_dir = record_dir
        self.log = log
        self.info: dict[str, Any] = json.loads((state_dir / "functions.json").read_text())
        self.base = str(self.info["baseUrl"])
        self.session = requests.Session()

    @property
    def webhook(self) -> str:
        return str(self.info["durableTaskWebhook"])

    @property
    def system_key(self) -> str:
        return str(self.info["systemKey"])

    def log_text(self) -> str:
        return self.log.read_text()

    def clock(self) -> VirtualClock:
        """The host's virtual clock, from the epoch and scale it published: reads what the host reads as "now"
        (devstack/clock.py), also while the host is down."""
        published = self.info["clock"]
        return VirtualClock(epoch=float(published["DEVSTACK_EPOCH"]), scale=float(published["DEVSTACK_TIME_SCALE"]))

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of the host's task hub store (SQLite, read-only): what the host has committed so far."""
        with contextlib.closing(sqlite3.connect(f"file:{self.info['store']}?mode=ro", uri=True)) as db:
            return list(db.execute(sql, args))

    def committed_history(self, instance_id: str) -> list[dict[str, Any]]:
        """The instance's history as the host stored it."""
        rows = self.query("SELECT event FROM history WHERE instance_id = ? ORDER BY seq", instance_id)
        return [json.loads(row[0]) for row in rows]

    def timer_status(self, function: str) -> dict[str, float | None] | None:
        """What the schedule monitor has stored for a timer function: its last and next occurrence."""
        rows = self.query("SELECT last, next FROM timer_status WHERE function = ?", function)
        return {"last": rows[0][0], "next": rows[0][1]} if rows else None

    def api(self, method: str, path: str, *, key: str | None = FUNCTION_KEY, **kwargs: Any) -> requests.Response:
        params = dict(kwargs.pop("params", {}))
        if key is not None:
            params.setdefault("code", key)
        return self.session.request(method, f"{self.base}/api/{path}", params=params, timeout=30, **kwargs)

    def durable(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The Durable Functions HTTP API (webhooks, system key)."""
        params = {"code": self.system_key, **kwargs.pop("params", {})}
        return self.session.request(method, f"{self.webhook}/{path}", params=params, timeout=30, **kwargs)

    def start(self, orchestrator: str, body: Any = None, instance_id: str | None = None) -> str:
        params = {"id": instance_id} if instance_id else {}
        response = self.api("POST", f"start/{orchestrator}", json=body, params=params)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def status(self, instance_id: str, **params: str) -> dict[str, Any]:
        response = self.durable("GET", f"instances/{instance_id}", params=params)
        assert response.status_code in (200, 202), (response.status_code, response.text)
        return dict(response.json())

    def wait(
        self, instance_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = PATIENCE, **params: str
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            response = self.durable("GET", f"instances/{instance_id}", params=params)
            if response.status_code == 404:
                return None
            status = dict(response.json())
            return status if status["runtimeStatus"] in statuses else None

        return wait_for(reached, timeout=timeout, interval=0.05, what=f"{instance_id} to reach {statuses}")

    def records(self, kind: str) -> list[dict[str, Any]]:
        path = self.record_dir / f"{kind}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def kill(self) -> None:
        """kill -9: no chance to finish anything."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def write_settings(path: Path, record_dir: Path, **values: str) -> Path:
    settings = {
        "IsEncrypted": False,
        "Values": {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "HOST_APP_RECORD_DIR": str(record_dir),
            "HOST_APP_HUB": "hostapptests",
            "HOST_APP_GREETING": "from local.settings.json",
            "TICK_SCHEDULE": "0 0 0 1 1 *",  # once a year: the shared host's timer stays quiet
            **values,
        },
    }
    path.write_text(json.dumps(settings))
    return path


def launch(
    state_dir: Path,
    *,
    app: Path = HOST_APP,
    record_dir: Path | None = None,
    settings: dict[str, str] | None = None,
    args: list[str] | None = None,
    epoch: str | None = None,
    time_scale: float = TIME_SCALE,
) -> RunningHost:
    """Starts a host on a free port and waits until it has published functions.json. `app` may be any Functions app
    (the project root for the real one); `settings` are its app settings, `args` more host options."""
    state_dir.mkdir(parents=True, exist_ok=True)
    record_dir = record_dir or state_dir / "records"
    record_dir.mkdir(parents=True, exist_ok=True)
    settings_file = write_settings(state_dir / "local.settings.json", record_dir, **(settings or {}))
    info = state_dir / "functions.json"
    info.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_")}
    if epoch is not None:
        env["DEVSTACK_EPOCH"] = epoch
    command = [
        sys.executable,
        "-m",
        "devstack",
        "host",
        "--app",
        str(app),
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--settings",
        str(settings_file),
        "--function-key",
        FUNCTION_KEY,
        "--master-key",
        MASTER_KEY,
        "--time-scale",
        str(time_scale),
        *(args or []),
    ]
    log = state_dir / "host.log"
    with log.open("ab") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the host exited with {process.returncode}:\n{log.read_text()}")
        if not info.exists():
            return False
        return bool(json.loads(info.read_text()).get("pid") == process.pid)

    wait_for(ready, what="the host's functions.json")
    return RunningHost(process, state_dir, record_dir, log)


@pytest.fixture(scope="session")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    """The host shared by most tests: the test app, emulated time 3600x, two activities at a time."""
    running = launch(
        tmp_path_factory.mktemp("host"),
        settings={"AzureWebJobs.disabled_by_setting.Disabled": "true"},
        args=["--activity-concurrency", "2"],
    )
    yield running
    running.stop()
    assert "the host failed" not in running.log_text(), running.log_text()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Callable[..., RunningHost]]:
    """Starts hosts of a test's own (stopped at its end)."""
    started: list[RunningHost] = []

    def start(state_dir: Path | None = None, **kwargs: Any) -> RunningHost:
        running = launch(state_dir or tmp_path / "state", **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"
