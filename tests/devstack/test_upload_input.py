"""`python -m devstack upload-input`: a batch input file on the emulated resource, its id printed and, on request,
kept in the local Key Vault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.conftest import ROOT, RunningEmulator, identity_token

SAMPLE = ROOT / "devstack" / "samples" / "requests.jsonl"


def upload_input(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", "upload-input", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_upload_input_prints_the_id_of_a_processed_batch_file_and_stores_it_as_a_secret(
    emulator: RunningEmulator,
) -> None:
    endpoints_file = str(emulator.state_dir / "endpoints.json")

    result = upload_input(str(SAMPLE), "--secret", "readme-input", "--endpoints-file", endpoints_file)

    assert result.returncode == 0, result.stderr
    file_id = result.stdout.strip()
    assert result.stdout == f"{file_id}\n"  # one line, so that $(...) takes it as it is
    resource = emulator.resource()
    stored = requests.get(
        f"{resource['endpoint']}/openai/files/{file_id}",
        params={"api-version": "2024-10-21"},
        headers={"api-key": resource["apiKey"]},
        timeout=10,
    ).json()
    assert (stored["purpose"], stored["status"], stored["filename"]) == ("batch", "processed", "requests.jsonl")
    vault = emulator.endpoints["keyVault"]
    secret = requests.get(
        f"{vault['url']}/secrets/readme-input",
        params={"api-version": "7.5"},
        headers={"Authorization": f"Bearer {identity_token(emulator, 'https://vault.azure.net')}"},
        verify=vault["caBundle"],
        timeout=10,
    ).json()
    assert secret["value"] == file_id


def test_upload_input_goes_to_the_named_resource(emulator: RunningEmulator) -> None:
    endpoints_file = str(emulator.state_dir / "endpoints.json")
    other = emulator.resource_names[-1]

    result = upload_input(str(SAMPLE), "--resource", other, "--endpoints-file", endpoints_file)

    assert result.returncode == 0, result.stderr
    resource = emulator.resource(other)
    files = requests.get(
        f"{resource['endpoint']}/openai/files",
        params={"api-version": "2024-10-21"},
        headers={"api-key": resource["apiKey"]},
        timeout=10,
    ).json()["data"]
    assert result.stdout.strip() in [f["id"] for f in files]


def test_upload_input_without_a_running_stack_says_to_start_it(tmp_path: Path) -> None:
    result = upload_input(str(SAMPLE), "--endpoints-file", str(tmp_path / "endpoints.json"))

    assert result.returncode == 1
    assert result.stdout == ""
    assert "start the local stack first (make up)" in result.stderr


def test_upload_input_names_a_resource_the_stack_lacks(emulator: RunningEmulator) -> None:
    endpoints_file = str(emulator.state_dir / "endpoints.json")

    result = upload_input(str(SAMPLE), "--resource", "nowhere", "--endpoints-file", endpoints_file)

    assert result.returncode == 1
    assert "no Azure OpenAI resource 'nowhere'" in result.stderr
