"""The local processes a benchmark stands on: Azurite (in memory, or on disk), the Azure emulators, a user's storage
account (the user-storage Azurite) and the local Functions host with this app, on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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


def start_azurite(state_dir: Path, location: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Azurite in memory, or keeping its data under `location` (for data larger than memory should hold)."""
    ports = azurite.AzuritePorts.free()
    log = state_dir / "azurite.log"
    with log.open("wb") as output:
        process = subprocess.Popen(azurite.command(ports, location), cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
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


def start_emulators(
    state_dir: Path, config: Path, time_scale: float | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """The emulators on a clock of their own (a new epoch), `time_scale` times faster than real time if given."""
    endpoints = state_dir / "endpoints.json"
    log = state_dir / "emulators.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_")}
    command = [sys.executable, "-m", "devstack", "emulators", "--port", "0", "--state-dir", str(state_dir)]
    if time_scale is not None:
        command += ["--time-scale", repr(time_scale)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--config", str(config)], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    wait_until(endpoints.exists, process, "the emulators", log)
    return process, json.loads(endpoints.read_text())


@dataclass(frozen=True)
class UserStorage:
    """A user's storage account as `python -m devstack up` publishes it under "userStorage": blob over HTTPS with the
    emulators' CA, taking the identity emulator's bearer tokens (how the app reads) and the account key (how a user
    puts blobs there)."""

    blob_endpoint: str
    connection_string: str
    ca_bundle: str

    def blob_url(self, container: str, name: str) -> str:
        return f"{self.blob_endpoint}/{container}/{name}"


def start_user_storage(
    state_dir: Path, endpoints: dict[str, Any], location: Path | None = None
) -> tuple[subprocess.Popen[bytes], UserStorage]:
    """The user-storage Azurite with the emulators' TLS certificate (from their `endpoints`), in memory or keeping
    its blobs under `location`."""
    tls = endpoints["tls"]
    port = azurite.free_port()
    log = state_dir / "user-storage.log"
    command = azurite.user_storage_command(port, Path(tls["certificate"]), Path(tls["privateKey"]), location)
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    wait_until(lambda: azurite.user_storage_answers(port, Path(tls["caBundle"])), process, "User storage", log)
    storage = UserStorage(
        azurite.user_storage_endpoint(port), azurite.user_storage_connection_string(port), str(tls["caBundle"])
    )
    return process, storage


def start_host(
    state_dir: Path, settings: dict[str, str], endpoints_file: Path, function_key: str, *extra: str
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """The local Functions host with this project's app, `settings` its app settings, on the emulators' clock
    (their identity and CA from `endpoints_file`); and what it published in functions.json."""
    info = state_dir / "functions.json"
    log = state_dir / "functions.log"
    settings_file = state_dir / "local.settings.json"
    values = {"FUNCTIONS_WORKER_RUNTIME": "python", **settings}
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    clock = json.loads(endpoints_file.read_text())["emulator"]["clock"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_")} | clock
    command = [sys.executable, "-m", "devstack", "host", "--app", str(ROOT), "--port", "0"]
    command += [
        "--state-dir",
        str(state_dir),
        "--settings",
        str(settings_file),
        "--endpoints-file",
        str(endpoints_file),
    ]
    command += ["--function-key", function_key, "--time-scale", clock["DEVSTACK_TIME_SCALE"], *extra]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    def ready() -> bool:
        return info.exists() and json.loads(info.read_text()).get("pid") == process.pid

    wait_until(ready, process, "the Functions host", log)
    return process, json.loads(info.read_text())


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
