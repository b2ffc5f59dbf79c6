"""`python -m devstack up` starts the Functions host with the project's app and the user-storage Azurite, and publishes
them in endpoints.json."""

from __future__ import annotations

import contextlib
import json
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

from devstack.stack import AZURITE_PORTS
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


@pytest.mark.slow
def test_up_runs_the_project_app_and_publishes_functions_and_user_storage(tmp_path: Path) -> None:
    # `devstack up --port 0` takes free ports for the emulators and the host, but Azurite's are always its defaults:
    # another stack on the machine (a `make demo`, or the demo and README tests of another test run) may hold them.
    ports = (AZURITE_PORTS.blob, AZURITE_PORTS.queue, AZURITE_PORTS.table)
    wait_for(
        lambda: not any(port_in_use(port) for port in ports),
        interval=0.5,
        what=f"Azurite's ports {ports}, taken by another stack on this machine (`make up`?), to be free",
    )
    state = tmp_path / "stack"
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "up", "--port", "0", "--state-dir", str(state), "--time-scale", "5"],
        cwd=ROOT,
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
        BlobServiceClient.from_connection_string(
            user_storage["connectionString"], connection_verify=user_storage["caBundle"]
        ).create_container("inputs").upload_blob("in.jsonl", b"{}\n")
        token = identity_token_from(endpoints, "https://storage.azure.com")
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
    assert (state / "user-storage").is_dir()
    assert (state / "azurite").is_dir()
    assert health.status_code == 200
    assert keyed.json()["state"] == "Running"
    assert process.returncode == 0, output
    assert not endpoints_file.exists()
    assert not (state / "functions.json").exists()
