"""The local processes a benchmark stands on: Azurite (in memory) and the Azure emulators, on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError
from azure.data.tables import TableServiceClient

from devstack import azurite

ROOT = Path(__file__).resolve().parent.parent


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within 60 s; see {log}")
        time.sleep(0.2)


def start_azurite(state_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    ports = azurite.AzuritePorts.free()
    log = state_dir / "azurite.log"
    with log.open("wb") as output:
        process = subprocess.Popen(azurite.command(ports), cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    connection = azurite.connection_string(ports)
    service = TableServiceClient.from_connection_string(connection)

    def ready() -> bool:
        try:
            list(service.list_tables())
        except AzureError:
            return False
        return True

    wait_until(ready, process, "Azurite", log)
    return process, connection


def start_emulators(state_dir: Path, config: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    endpoints = state_dir / "endpoints.json"
    log = state_dir / "emulators.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_")}
    command = [sys.executable, "-m", "devstack", "emulators", "--port", "0", "--state-dir", str(state_dir)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--config", str(config)], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    wait_until(endpoints.exists, process, "the emulators", log)
    return process, json.loads(endpoints.read_text())


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
