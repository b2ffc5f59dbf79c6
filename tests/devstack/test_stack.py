"""`python -m devstack up`: Azurite and the emulators start together, answer, and stop together."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import requests
from azure.data.tables import TableServiceClient

from tests.conftest import ROOT, wait_for


def test_up_starts_azurite_and_emulators_and_publishes_storage(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "up", "--port", "0", "--state-dir", str(state_dir), "--time-scale", "5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    endpoints_file = state_dir / "endpoints.json"
    try:
        wait_for(
            lambda: endpoints_file.exists() and "storage" in json.loads(endpoints_file.read_text()),
            timeout=90,
            what="devstack up",
        )
        endpoints = json.loads(endpoints_file.read_text())

        tables = TableServiceClient.from_connection_string(endpoints["storage"]["connectionString"])
        tables.create_table_if_not_exists("stacktest")
        health = requests.get(f"{endpoints['emulator']['control']}/health", timeout=5)
        clock = requests.get(f"{endpoints['emulator']['control']}/clock", timeout=5).json()

        assert "stacktest" in [t.name for t in tables.list_tables()]
        assert health.status_code == 200
        assert clock["scale"] == 5.0
        assert (state_dir / "azurite").is_dir()
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert not endpoints_file.exists()
