"""`python -m devstack up` starts the Functions host with the project's app and the user-storage Azurite, and publishes
them in endpoints.json."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from devstack.stack import AZURITE_PORTS, USER_STORAGE_PORT
from tests.conftest import ROOT, wait_for


def identity_token_from(endpoints: dict[str, Any], resource: str) -> str:
    identity = endpoints["identity"]
    response = requests.get(
        identity["endpoint"],
        params={"resource": resource, "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": identity["header"]},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def port_in_use(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port_pair() -> int | None:
    """A port free right now whose next one is free too (the emulators take port and port + 1), below the ephemeral
    range, where outgoing connections would take it before the emulators listen on it."""
    port = random.randrange(20_000, 32_000, 2)
    for candidate in (port, port + 1):
        with contextlib.closing(socket.socket()) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                return None
    return port


def sample_settings_at(port: int) -> dict[str, str]:
    """The sample's settings that name the emulators (8480, Key Vault 8481), naming `port` and `port + 1` instead:
    the environment `up` is started in, which wins over local.settings.json as in Core Tools."""
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    return {
        name: value.replace("127.0.0.1:8481", f"127.0.0.1:{port + 1}").replace("127.0.0.1:8480", f"127.0.0.1:{port}")
        for name, value in sample.items()
        if "127.0.0.1:848" in value
    }


@pytest.mark.slow
def test_up_runs_the_project_app_and_publishes_functions_and_user_storage(tmp_path: Path) -> None:
    # The emulators and the host take free ports, but Azurite's and the user storage's are always their defaults:
    # another stack on the machine (a `make demo`, or the demo and README tests of another test run) may hold them.
    ports = (AZURITE_PORTS.blob, AZURITE_PORTS.queue, AZURITE_PORTS.table, USER_STORAGE_PORT)
    wait_for(
        lambda: not any(port_in_use(port) for port in ports),
        interval=0.5,
        what=f"Azurite's ports {ports}, taken by another stack on this machine (`make up`?), to be free",
    )
    emulators = wait_for(free_port_pair, what="two free ports in a row for the emulators and their Key Vault")
    state = tmp_path / "stack"
    options = ["--port", str(emulators), "--functions-port", "0", "--state-dir", str(state), "--time-scale", "5"]
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "up", *options],
        cwd=ROOT,
        env=os.environ | sample_settings_at(emulators),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    endpoints_file = state / "endpoints.json"

    def app_is_up() -> bool:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"devstack up exited with {process.returncode}:\n{output}")
        return endpoints_file.exists() and "functions" in json.loads(endpoints_file.read_text())

    try:
        wait_for(app_is_up, timeout=90, what="devstack up with the Functions host")
        endpoints = json.loads(endpoints_file.read_text())
        functions = endpoints["functions"]
        health = requests.get(f"{functions['baseUrl']}/api/health", timeout=10)
        keyed = requests.get(
            f"{functions['baseUrl']}/admin/host/status", params={"code": functions["masterKey"]}, timeout=10
        )
        tables = TableServiceClient.from_connection_string(endpoints["storage"]["connectionString"])
        tables.create_table_if_not_exists("stacktest")
        table_names = [t.name for t in tables.list_tables()]
        clock = requests.get(f"{endpoints['emulator']['control']}/clock", timeout=5).json()
        user_storage = endpoints["userStorage"]
        inputs = BlobServiceClient.from_connection_string(
            user_storage["connectionString"], connection_verify=user_storage["caBundle"]
        ).create_container("inputs")
        inputs.upload_blob("in.jsonl", b"{}\n")
        inputs.upload_blob("requests.jsonl", (ROOT / "devstack" / "samples" / "requests.jsonl").read_bytes())
        token = identity_token_from(endpoints, "https://storage.azure.com")
        app = {"x-functions-key": functions["key"]}
        imported = requests.post(f"{functions['baseUrl']}/api/jobs/import", headers=app, timeout=30)
        # As devstack/README.md shows it: a blobUrl into the stack's user storage, with no setting made by hand.
        built = requests.post(
            f"{functions['baseUrl']}/api/jobs/gpt-4o-batch::batch/inputs",
            json={"blobUrl": f"{user_storage['blobEndpoint']}/inputs/requests.jsonl"},
            headers=app,
            timeout=180,
        )
        read_with_identity = requests.get(
            f"{user_storage['blobEndpoint']}/inputs/in.jsonl",
            headers={"Authorization": f"Bearer {token}", "x-ms-version": "2023-11-03"},
            verify=user_storage["caBundle"],
            timeout=10,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()

    assert set(functions) >= {"baseUrl", "key", "masterKey", "systemKey", "taskHub", "durableTaskWebhook"}
    assert "stacktest" in table_names  # Azurite answers on the published connection string
    assert clock["scale"] == 5.0  # the emulators run on the stack's clock
    assert user_storage["blobEndpoint"].startswith("https://127.0.0.1:")
    assert user_storage["caBundle"] == endpoints["keyVault"]["caBundle"]
    assert (read_with_identity.status_code, read_with_identity.content) == (200, b"{}\n")
    assert imported.status_code == 200, imported.text
    assert built.status_code == 201, built.text
    assert (built.json()["requests"], built.json()["status"]) == (5, "processed")
    assert (state / "user-storage").is_dir()
    assert (state / "azurite").is_dir()
    assert health.status_code == 200
    assert keyed.json()["state"] == "Running"
    assert process.returncode == 0, output
    assert not endpoints_file.exists()
    assert not (state / "functions.json").exists()
